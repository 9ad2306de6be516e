"""The instance lock and its fence: racing flushers, expired holders, automatic extension."""

from __future__ import annotations

import asyncio
import threading

import pytest

from memoryd.errors import FenceRejected, LockContention
from memoryd.keys import InstanceAddr
from memoryd.models import FlushPlan, NewMessage, Summary
from memoryd.store.base import MemoryStore
from memoryd.store.redis import RedisStore
from memoryd.store.redis.lock import InstanceLock, backoff_s
from memoryd.store.url import open_store
from tests.store.conftest import TEST_BREAKER, backend_url


def msg(i: int) -> NewMessage:
    return NewMessage(role="user", content=f"m{i}", content_type="text", priority=None, effective_priority=5,
                      token_count=10)


async def flush_oldest(store: MemoryStore, addr: InstanceAddr, fence: int, n: int) -> tuple[int, ...]:
    """What the manager does under the lock: read, plan (the n oldest), apply."""
    state = await store.state(addr)
    seqs = tuple(m.seq for m in state.messages[:n])
    plan = FlushPlan("hybrid_summary", seqs, Summary(f"folded {seqs}", 3, seqs[-1], 0), 0, 0)
    return (await store.apply_flush(addr, plan, fence=fence)).removed_seqs


async def test_two_racing_flushers_exactly_one_applies(store: MemoryStore, addr: InstanceAddr) -> None:
    await store.append(addr, [msg(i) for i in range(10)])
    holding, release = asyncio.Event(), asyncio.Event()
    results: dict[str, object] = {}

    async def flusher(name: str) -> None:
        try:
            async with store.lock(addr, ttl_ms=10_000, acquire_timeout_s=0.3) as lease:
                holding.set()
                await release.wait()  # hold the lock until the other flusher has given up
                results[name] = await flush_oldest(store, addr, lease.fence, 4)
        except LockContention as exc:
            results[name] = exc
            release.set()

    first = asyncio.create_task(flusher("first"))
    await holding.wait()
    await flusher("second")
    await first
    assert isinstance(results["second"], LockContention)
    assert results["first"] == (1, 2, 3, 4)
    state = await store.state(addr)
    assert [m.seq for m in state.messages] == list(range(5, 11))
    assert state.meta.flush_count == 1 and state.meta.message_count == 6


async def test_many_flushers_in_turn_never_remove_a_message_twice(store: MemoryStore, addr: InstanceAddr) -> None:
    await store.append(addr, [msg(i) for i in range(24)])

    async def flusher() -> tuple[int, ...]:
        async with store.lock(addr, ttl_ms=10_000, acquire_timeout_s=20) as lease:
            return await flush_oldest(store, addr, lease.fence, 3)

    removed = await asyncio.gather(*(flusher() for _ in range(8)))
    flat = [s for r in removed for s in r]
    assert sorted(flat) == list(range(1, 25)) and len(set(flat)) == 24
    assert (await store.meta(addr)).flush_count == 8


async def test_expired_holder_is_refused_by_the_fence(request: pytest.FixtureRequest, redis_store: MemoryStore,
                                                      addr: InstanceAddr) -> None:
    """A flusher paused past its lock TTL (its whole event loop blocked, like a GC pause or a
    SIGSTOP, so even the extension task cannot run) must not apply its stale plan."""
    assert isinstance(redis_store, RedisStore)
    url = backend_url(request, redis_store.settings.mode)
    await redis_store.append(addr, [msg(i) for i in range(6)])
    locked, resume = threading.Event(), threading.Event()
    outcome: dict[str, object] = {}

    def paused_flusher() -> None:
        async def run() -> None:
            other = open_store(url, breaker=TEST_BREAKER)
            await other.start()
            try:
                lock = other.lock(addr, ttl_ms=300, acquire_timeout_s=5)
                async with lock as lease:
                    state = await other.state(addr)
                    stale = FlushPlan("hybrid_summary", tuple(m.seq for m in state.messages), Summary("stale", 1, 6, 0),
                                      0, 0)
                    locked.set()
                    resume.wait(30)  # blocks this loop: no extension, the lock expires
                    try:
                        outcome["applied"] = await other.apply_flush(addr, stale, fence=lease.fence)
                    except FenceRejected as exc:
                        outcome["rejected"] = exc
                assert isinstance(lock, InstanceLock)
                outcome["lost"] = lock.lost
            finally:
                await other.close()

        asyncio.run(run())

    thread = threading.Thread(target=paused_flusher)
    thread.start()
    try:
        assert await asyncio.to_thread(locked.wait, 30)
        # acquires only once the paused holder's lock has expired (polled with backoff)
        async with redis_store.lock(addr, ttl_ms=10_000, acquire_timeout_s=15) as lease:
            assert await flush_oldest(redis_store, addr, lease.fence, 2) == (1, 2)
    finally:
        resume.set()
        await asyncio.to_thread(thread.join, 30)
    assert "rejected" in outcome and "applied" not in outcome
    assert outcome["lost"] is True
    state = await redis_store.state(addr)
    assert [m.seq for m in state.messages] == [3, 4, 5, 6]
    assert state.summary is not None and state.summary.content == "folded (1, 2)"


async def test_lock_is_extended_while_held(redis_store: MemoryStore, addr: InstanceAddr) -> None:
    """Held three TTLs long: the extension task keeps it, a second acquirer times out."""
    await redis_store.append(addr, [msg(0)])
    async with redis_store.lock(addr, ttl_ms=200, acquire_timeout_s=5) as lease:
        with pytest.raises(LockContention):
            async with redis_store.lock(addr, ttl_ms=200, acquire_timeout_s=0.6):
                pytest.fail("acquired a held lock")
        assert await flush_oldest(redis_store, addr, lease.fence, 1) == (1,)


def test_backoff_is_jittered_and_capped() -> None:
    delays = [backoff_s(a) for a in range(1, 40)]
    assert all(0 < d <= 0.25 for d in delays)
    assert len({round(d, 6) for d in delays}) > 30
