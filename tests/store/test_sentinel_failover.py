"""A Sentinel failover (the master killed) is survived with the documented guarantees:
calls fail fast (never hang) while no master is known, the store follows the promoted
replica by itself, everything replicated before the crash is there, counters still match
content, and the sequence continues (no seq reused)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from memoryd.config.model import CircuitBreaker
from memoryd.errors import StoreUnavailable
from memoryd.models import NewMessage
from memoryd.store.url import open_store
from tests.redis_servers import start_sentinel, temporary
from tests.store.conftest import new_addr

BREAKER = CircuitBreaker(timeout_s=1.0, max_failures=5, reset_timeout_s=0.2)
HANG_MARGIN_S = 1.5


def msg(content: str) -> NewMessage:
    return NewMessage(role="user", content=content, content_type="text", priority=None, effective_priority=5,
                      token_count=2)


async def test_master_killed_replica_promoted_store_follows(tmp_path: Path) -> None:
    with temporary(start_sentinel, tmp_path) as group:
        store = open_store(group.url, breaker=BREAKER)
        await store.start()
        addr = new_addr()
        acked: list[str] = []
        for i in range(50):
            await store.append(addr, [msg(f"before-{i}")], idempotency_key=f"before-{i}")
            acked.append(f"before-{i}")
        await asyncio.to_thread(group.wait_replica_synced)
        old_master = group.master.port
        group.master.stop()  # SIGKILL

        failures = 0
        deadline = time.monotonic() + 30
        i = 0
        while len(acked) < 60:  # keep writing through the failover
            assert time.monotonic() < deadline, "no new master within 30 s"
            content = f"after-{i}"
            try:
                async with asyncio.timeout(BREAKER.timeout_s + HANG_MARGIN_S):  # never hangs
                    await store.append(addr, [msg(content)], idempotency_key=content)
                acked.append(content)
                i += 1
            except StoreUnavailable:
                failures += 1
                await asyncio.sleep(0.02)  # a client's retry pacing
        assert failures > 0
        assert await asyncio.to_thread(group.current_master_port) == group.replica.port != old_master

        stored = await store.read(addr)
        contents = [m.content for m in stored]
        assert contents == acked  # nothing lost, nothing twice, order kept
        assert [m.seq for m in stored] == list(range(1, len(stored) + 1))
        meta = await store.meta(addr)
        assert meta.message_count == len(stored) and meta.recent_tokens == 2 * len(stored)
        assert meta.last_seq == len(stored)
        async with store.lock(addr, ttl_ms=5_000, acquire_timeout_s=5) as lease:  # lock + fence on the new master
            assert lease.fence > 0
        await store.close()
