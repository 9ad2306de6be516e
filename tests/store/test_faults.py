"""Redis crashes under load and comes back: calls fail fast with StoreUnavailable, none
hangs, the store recovers by itself, and every acknowledged message survives (AOF)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from memoryd.config.model import CircuitBreaker
from memoryd.errors import MemorydError, StoreUnavailable
from memoryd.models import AppendedRef, NewMessage
from memoryd.store.redis import RedisStore
from memoryd.store.url import open_store
from tests.redis_servers import RedisProcess, start_standalone, temporary
from tests.store.conftest import new_addr

BREAKER = CircuitBreaker(timeout_s=0.5, max_failures=5, reset_timeout_s=0.3)
HANG_MARGIN_S = 1.5  # a call taking longer than the breaker timeout plus this is a hang
WRITERS = 8


def msg(content: str) -> NewMessage:
    return NewMessage(role="user", content=content, content_type="text", priority=None, effective_priority=5,
                      token_count=3)


async def until(predicate: Callable[[], bool], what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached within {timeout_s}s")
        await asyncio.sleep(0.01)  # polling interval


async def test_crash_under_load_fails_fast_recovers_and_loses_nothing_acknowledged(tmp_path: Path) -> None:
    with temporary(lambda d: start_standalone(d, appendonly=True), tmp_path) as server:
        store = open_store(server.url, breaker=BREAKER)
        assert isinstance(store, RedisStore)
        await store.start()
        addr = new_addr()
        acked: dict[str, AppendedRef] = {}
        unavailable = 0
        states: set[str] = set()
        stop = asyncio.Event()

        async def writer(w: int) -> None:
            nonlocal unavailable
            i = 0
            while not stop.is_set():
                content = f"w{w}-{i}"
                i += 1
                try:
                    async with asyncio.timeout(BREAKER.timeout_s + HANG_MARGIN_S):  # a hang fails the test
                        out = await store.append(addr, [msg(content)], idempotency_key=content, ttl_ms=600_000)
                    acked[content] = out.refs[0]
                except StoreUnavailable:
                    unavailable += 1
                    states.add(store.breaker_state)
                    await asyncio.sleep(0.005)  # a client's retry pacing

        writers = [asyncio.create_task(writer(w)) for w in range(WRITERS)]
        try:
            await until(lambda: len(acked) >= 200, "acknowledged appends before the crash")
            server.stop()  # SIGKILL under load
            crashed_at = len(acked)
            await until(lambda: unavailable >= 50 and store.breaker_state != "closed", "fast failures, breaker open")
            assert len(acked) <= crashed_at + WRITERS  # only calls already answered before the kill
            server.start()  # same port and directory: the AOF is replayed
            recovered_from = len(acked)
            await until(lambda: len(acked) >= recovered_from + 200, "appends acknowledged again")
        finally:
            stop.set()
            await asyncio.gather(*writers)  # a hung call would raise TimeoutError here
        assert "open" in states or "half-open" in states
        assert store.breaker_state == "closed"

        stored = {m.content: m for m in await store.read(addr)}
        assert len(stored) == len(await store.read(addr))  # nothing stored twice
        missing = [c for c in acked if c not in stored]
        assert not missing, f"{len(missing)} acknowledged messages lost"
        assert all(stored[c].seq == ref.seq and stored[c].id == ref.id for c, ref in acked.items())
        meta = await store.meta(addr)
        assert meta.message_count == len(stored) and meta.recent_tokens == 3 * len(stored)
        await store.close()


async def test_a_store_started_before_redis_serves_once_redis_answers(tmp_path: Path) -> None:
    """Regression (issue 15, item 4): a sidecar may start before Redis. Starting does not fail;
    calls fail fast with StoreUnavailable while Redis is unreachable; the store keeps trying and
    serves by itself once Redis answers, with the breaker closed."""
    with temporary(start_standalone, tmp_path) as server:
        server.stop()
        store = open_store(server.url, breaker=BREAKER)
        await store.start()
        try:
            addr = new_addr()
            for _ in range(2 * BREAKER.max_failures):
                with pytest.raises(StoreUnavailable):
                    await store.ping()
                with pytest.raises(StoreUnavailable):
                    await store.append(addr, [msg("too early")])
            assert store.breaker_state == "open"  # what the breaker-state metric reports meanwhile
            server.start()  # the same port
            deadline = time.monotonic() + 30
            while True:
                try:
                    await store.ping()
                    break
                except StoreUnavailable:
                    assert time.monotonic() < deadline, "the store never reached Redis"
                    await asyncio.sleep(0.02)  # polling interval
            out = await store.append(addr, [msg("in time")])
            assert out.refs[0].seq == 1 and store.breaker_state == "closed"
            assert [m.content for m in await store.read(addr)] == ["in time"]
        finally:
            await store.close()


async def test_an_error_answered_by_redis_at_start_is_raised(redis_standalone: RedisProcess) -> None:
    """Redis up but refusing what the store needs (an ACL without scripting) is configuration,
    not a late Redis: start() raises (memoryd serve exits 1) instead of retrying forever."""
    user = f"noscript-{uuid.uuid4().hex[:8]}"
    with redis_standalone.client() as raw:
        raw.execute_command("ACL", "SETUSER", user, "on", ">pw", "~*", "+@all", "-@scripting")
    try:
        store = open_store(f"redis://{user}:pw@127.0.0.1:{redis_standalone.port}/0", breaker=BREAKER)
        with pytest.raises(MemorydError) as info:
            await store.start()
        assert not isinstance(info.value, StoreUnavailable) and "NoPermissionError" in info.value.message
    finally:
        with redis_standalone.client() as raw:
            raw.execute_command("ACL", "DELUSER", user)


async def test_a_store_closed_before_redis_came_up_stops_trying(tmp_path: Path) -> None:
    with temporary(start_standalone, tmp_path) as server:
        server.stop()
        store = open_store(server.url, breaker=BREAKER)
        await store.start()
        tasks = {t.get_name() for t in asyncio.all_tasks()}
        assert "memoryd-redis-connect" in tasks
        await store.close()
        assert "memoryd-redis-connect" not in {t.get_name() for t in asyncio.all_tasks()}


class ReplyDroppingProxy:
    """A TCP proxy to Redis that can lose one reply: it forwards the command, then closes the
    connection instead of forwarding what Redis answered (a network cut at the worst moment)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.drop_next_reply = False
        self.dropped = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.port)

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, replies: bool) -> None:
            try:
                while data := await src.read(65536):
                    if replies and self.drop_next_reply:
                        self.drop_next_reply = False
                        self.dropped += 1
                        break  # Redis has executed the command; its answer never arrives
                    dst.write(data)
                    await dst.drain()
            except ConnectionError:
                pass
            finally:
                for w in (writer, up_writer):
                    w.close()

        await asyncio.gather(pump(reader, up_writer, False), pump(up_reader, writer, True))


async def test_lost_reply_of_an_append_is_retried_without_duplicating(redis_standalone: RedisProcess) -> None:
    """The store retries an append after a connection error; without a caller key it uses its
    own, so the retry replays the executed script instead of storing the batch twice."""
    proxy = ReplyDroppingProxy(redis_standalone.port)
    port = await proxy.start()
    store = open_store(f"redis://127.0.0.1:{port}/0", breaker=CircuitBreaker(timeout_s=2.0))
    await store.start()
    try:
        addr = new_addr()
        await store.append(addr, [msg("first")])
        for key in (None, "caller-key"):
            proxy.drop_next_reply = True
            out = await store.append(addr, [msg(f"cut reply, key {key}")], idempotency_key=key)
            assert not out.replayed  # our own retry, not a client's replay
        assert proxy.dropped == 2
        assert [m.content for m in await store.read(addr)] == ["first", "cut reply, key None",
                                                              "cut reply, key caller-key"]
        assert (await store.meta(addr)).message_count == 3
    finally:
        await store.close()
        await proxy.close()
