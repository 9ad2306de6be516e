"""Watch: live changes of one instance, exactly once, in order, resumable."""

from __future__ import annotations

import asyncio
import gc
import tracemalloc
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, cast

import pytest
from memoryd_client import AsyncMemoryClient, ResourceExhaustedError, UnavailableError, pb

from memoryd.config.model import CircuitBreaker
from memoryd.keys import InstanceAddr
from memoryd.manager import MemoryManager
from memoryd.models import IncomingMessage, InstanceMeta, RefSpec
from memoryd.server import Server
from memoryd.settings import Settings
from memoryd.store.base import MemoryStore
from memoryd.store.embedded import EmbeddedStore
from memoryd.store.url import open_store
from memoryd.watching import WATCH_EVENT_CHARS, Appended, Cleared
from tests.support import RunningServer, free_port, running_server, storage_project

MEM = "default"


async def collect(c: AsyncMemoryClient, key: str, want: int, after_seq: int = 0) -> list[pb.Message]:
    got: list[pb.Message] = []
    async for event in c.watch(MEM, key=key, after_seq=after_seq):
        got.extend(event.appended.messages)
        if len(got) >= want:
            break
    return got


async def test_watcher_sees_every_append_once_in_order_across_reconnect(server: RunningServer) -> None:
    async with server.client() as writer, server.client() as watcher:
        first_half = asyncio.create_task(collect(watcher, "w", 100))

        async def write(start: int, stop: int) -> None:
            for i in range(start, stop):
                await writer.append(MEM, [{"role": "user", "content": f"m{i} ✓"}], key="w")

        await write(0, 100)
        seen = await first_half
        await write(100, 250)  # written while nobody watches
        resumed = asyncio.create_task(collect(watcher, "w", 200, after_seq=seen[-1].seq))
        await write(250, 300)
        seen += await resumed
    assert [m.content for m in seen] == [f"m{i} ✓" for i in range(300)]
    assert [m.seq for m in seen] == list(range(1, 301))


async def test_watch_reports_flushes_and_clears() -> None:
    async with running_server(storage_project()) as srv, srv.client() as c:
        await c.append(MEM, [{"role": "user", "content": f"x{i}"} for i in range(10)], key="fc")
        events: list[pb.WatchResponse] = []
        saw_flush = asyncio.Event()

        async def watch() -> None:
            async for event in c.watch(MEM, key="fc"):
                events.append(event)
                if event.HasField("flushed"):
                    saw_flush.set()
                if event.HasField("cleared"):
                    return

        task = asyncio.create_task(watch())
        await c.append(MEM, [{"role": "user", "content": "marker"}], key="fc")
        await c.flush(MEM, key="fc")
        await asyncio.wait_for(saw_flush.wait(), 10)
        await c.clear(MEM, key="fc")
        await asyncio.wait_for(task, 10)
    kinds = [e.WhichOneof("event") for e in events]
    assert kinds[0] == "appended" and kinds[-1] == "cleared" and "flushed" in kinds
    flushed = next(e.flushed for e in events if e.HasField("flushed"))
    assert flushed.removed_seqs and flushed.summary.kind == pb.MESSAGE_KIND_SUMMARY


async def test_slow_watcher_lags_without_losing_anything(server: RunningServer) -> None:
    """Policy: a watcher reads the store at its own pace; the daemon never buffers for it."""
    async with server.client() as c:
        stream = c.watch(MEM, key="slow").__aiter__()
        await c.append(MEM, [{"role": "user", "content": "first"}], key="slow")
        first = await stream.__anext__()
        for start in range(0, 5000, 500):  # the watcher is not reading meanwhile
            await c.append(MEM, [{"role": "user", "content": f"s{i}"} for i in range(start, start + 500)], key="slow")
        got = list(first.appended.messages)
        while len(got) < 5001:
            got.extend((await stream.__anext__()).appended.messages)
        await stream.aclose()
    assert [m.content for m in got] == ["first"] + [f"s{i}" for i in range(5000)]


async def test_each_flush_reports_exactly_the_delivered_messages_it_removed(server: RunningServer) -> None:
    """Two flushes, with appends between and a watcher that started mid-instance: every
    removed seq the watcher had delivered is reported once, by the flush that removed it."""
    async with server.client() as c:
        await c.append(MEM, [{"role": "user", "content": f"a{i}"} for i in range(5)], key="ff")
        flushes = asyncio.Queue[pb.Flushed]()
        delivered: set[int] = set()
        seen_up_to = asyncio.Queue[int]()

        async def watch() -> None:
            async for event in c.watch(MEM, key="ff", after_seq=3):
                if event.HasField("flushed"):
                    await flushes.put(event.flushed)
                for m in event.appended.messages:
                    delivered.add(m.seq)
                    await seen_up_to.put(m.seq)

        async def until_seen(seq: int) -> None:
            while await seen_up_to.get() < seq:
                pass

        task = asyncio.create_task(watch())
        await c.append(MEM, [{"role": "user", "content": f"b{i}"} for i in range(10)], key="ff")
        await asyncio.wait_for(until_seen(15), 10)
        first = await c.flush(MEM, key="ff")
        reported = list((await asyncio.wait_for(flushes.get(), 10)).removed_seqs)
        await c.append(MEM, [{"role": "user", "content": f"c{i}"} for i in range(10)], key="ff")
        await asyncio.wait_for(until_seen(25), 10)
        second = await c.flush(MEM, key="ff")
        reported += list((await asyncio.wait_for(flushes.get(), 10)).removed_seqs)
        task.cancel()
        stored = {m.seq for m in await c.read_all(MEM, key="ff", view="raw")}
    removed = set(first.removed_seqs) | set(second.removed_seqs)
    assert delivered == set(range(4, 26))
    assert first.removed_seqs and second.removed_seqs
    assert sorted(reported) == sorted(removed & delivered)  # each once, only what it delivered
    assert delivered - removed <= stored


# -- limits (issue 15, item 7) ------------------------------------------------------------


@pytest.fixture(params=["embedded", "redis"])
async def capped(request: pytest.FixtureRequest) -> AsyncIterator[RunningServer]:
    """A never-flushing server serving at most two watchers, on each store."""
    store = None
    if request.param == "redis":
        store = open_store(request.getfixturevalue("redis_standalone").url)
    project = storage_project(project_id=f"t{uuid.uuid4().hex[:12]}")
    async with running_server(project, store=store, max_watchers=2) as srv:
        yield srv


@pytest.fixture(params=["embedded", "redis"])
async def unhurried(request: pytest.FixtureRequest) -> AsyncIterator[RunningServer]:
    """A never-flushing server whose Redis calls may take 30 s: for a test measuring memory
    under tracemalloc (everything runs slower), where a store timeout would be noise."""
    store = None
    if request.param == "redis":
        store = open_store(request.getfixturevalue("redis_standalone").url, breaker=CircuitBreaker(timeout_s=30))
    async with running_server(storage_project(project_id=f"t{uuid.uuid4().hex[:12]}"), store=store) as srv:
        yield srv


async def first_event(c: AsyncMemoryClient, key: str) -> AsyncIterator[pb.WatchResponse]:
    """A watch stream that has delivered its first event (so the daemon holds it)."""
    stream = c.watch(MEM, key=key).__aiter__()
    await stream.__anext__()
    return stream


async def until_released(srv: RunningServer, count: int) -> None:
    """Wait until the daemon has let go of closed streams (their handlers end asynchronously)."""
    while srv.server.manager.watchers > count:  # noqa: ASYNC110 - a condition polled, not a guessed delay
        await asyncio.sleep(0.01)


async def test_watcher_cap_refuses_one_more_and_a_freed_slot_is_reusable(capped: RunningServer) -> None:
    async with capped.client() as c:
        await c.append(MEM, [{"role": "user", "content": "hello"}], key="cap")
        one, two = await first_event(c, "cap"), await first_event(c, "cap")
        with pytest.raises(ResourceExhaustedError, match="max-watchers"):
            await first_event(c, "cap")
        await one.aclose()  # type: ignore[attr-defined]
        await asyncio.wait_for(until_released(capped, 1), 10)
        three = await first_event(c, "cap")
        await c.append(MEM, [{"role": "user", "content": "after"}], key="cap")
        assert [m.content for m in (await three.__anext__()).appended.messages] == ["after"]
        assert [m.content for m in (await two.__anext__()).appended.messages] == ["after"]
        for stream in (two, three):
            await stream.aclose()  # type: ignore[attr-defined]


@pytest.mark.parametrize("backend", ["embedded", "redis"])
async def test_shutdown_ends_a_watch_with_unavailable(backend: str, request: pytest.FixtureRequest) -> None:
    """A Watch ended by the daemon's shutdown is not a normal end: the client must resume elsewhere."""
    store = open_store(request.getfixturevalue("redis_standalone").url) if backend == "redis" else EmbeddedStore()
    settings = Settings(listen=f"127.0.0.1:{free_port()}", shutdown_grace=5.0)
    project = storage_project(project_id=f"t{uuid.uuid4().hex[:12]}")
    server = Server(settings, MemoryManager(project, store, settings))
    await server.start()
    try:
        async with AsyncMemoryClient(settings.listen) as c:
            await c.append(MEM, [{"role": "user", "content": "hello"}], key="down")
            stream = await first_event(c, "down")
            stopping = asyncio.create_task(server.stop())
            with pytest.raises(UnavailableError, match="resume with after_seq"):
                await stream.__anext__()
            await stopping
    finally:
        if not server.shutdown_event.is_set():
            await server.stop()


async def test_an_appended_event_carries_a_bounded_amount_of_content(server: RunningServer) -> None:
    """What a watcher holds for a client that stops reading is one event: its size is bounded."""
    async with server.client() as c:
        for start in range(0, 300, 100):
            batch = [{"role": "user", "content": f"{i:04d}" + "x" * 996} for i in range(start, start + 100)]
            await c.append(MEM, batch, key="big")
        await c.append(MEM, [{"role": "user", "content": "huge" + "y" * (WATCH_EVENT_CHARS * 2)}], key="big")
        sizes: list[tuple[int, int]] = []
        got: list[str] = []
        async for event in c.watch(MEM, key="big"):
            msgs = event.appended.messages
            sizes.append((len(msgs), sum(len(m.content) for m in msgs)))
            got.extend(m.content[:4] for m in msgs)
            if len(got) == 301:
                break
    assert got == [f"{i:04d}" for i in range(300)] + ["huge"]
    assert all(chars <= WATCH_EVENT_CHARS or n == 1 for n, chars in sizes), sizes
    assert sizes[-1] == (1, 4 + WATCH_EVENT_CHARS * 2)  # one message larger than the bound still goes


async def test_watchers_that_stop_reading_hold_bounded_memory(unhurried: RunningServer) -> None:
    """10 watchers read one event and then nothing while 10,000 x 430 B are appended to what
    they watch: the daemon holds at most about one event for each (measured with tracemalloc,
    Python allocations: with the client in this process, the difference between the watchers
    stalled and the watchers gone)."""
    watchers, per_watcher_bound = 10, 96 * 1024
    async with unhurried.client() as writer, unhurried.client() as reader:
        await writer.append(MEM, [{"role": "user", "content": "first"}], key="mem")
        tracemalloc.start()
        try:
            streams = [await first_event(reader, "mem") for _ in range(watchers)]
            content = "The customer reports that the parcel with order number 12345 has not arrived yet; " * 5
            for _ in range(20):
                await writer.append(MEM, [{"role": "user", "content": content}] * 500, key="mem")
            gc.collect()
            stalled = tracemalloc.get_traced_memory()[0]
            for stream in streams:
                await stream.aclose()  # type: ignore[attr-defined]
            del streams
            await asyncio.wait_for(until_released(unhurried, 0), 10)
            gc.collect()
            released = tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()
    assert (stalled - released) / watchers < per_watcher_bound, (stalled - released) / watchers


# -- the instance's identity (issue 15, item 2) --------------------------------------------


async def test_a_clear_then_new_appends_reach_the_watcher_as_cleared_and_every_new_message(
    server: RunningServer,
) -> None:
    """Clear, then 150 appends before the watcher looks again (on Redis a Clear wakes no
    watcher): the seqs are back past the watcher's cursor, yet it must report the Clear
    and deliver all 150, not only those above its old cursor."""
    async with server.client() as c:
        await c.append(MEM, [{"role": "user", "content": f"old{i}"} for i in range(100)], key="cl")
        events: list[pb.WatchResponse] = []
        delivered = 0
        caught_up, done = asyncio.Event(), asyncio.Event()

        async def watch() -> None:
            nonlocal delivered
            async for event in c.watch(MEM, key="cl"):
                events.append(event)
                delivered += len(event.appended.messages)
                if delivered == 100:
                    caught_up.set()
                if delivered == 250:
                    done.set()
                    return

        task = asyncio.create_task(watch())
        await asyncio.wait_for(caught_up.wait(), 10)
        await c.clear(MEM, key="cl")
        for start in range(0, 150, 50):
            await c.append(MEM, [{"role": "user", "content": f"new{i}"} for i in range(start, start + 50)], key="cl")
        await asyncio.wait_for(done.wait(), 10)
        await task
    kinds = [e.WhichOneof("event") for e in events]
    assert kinds.count("cleared") == 1
    after = [m for e in events[kinds.index("cleared") + 1:] for m in e.appended.messages]
    assert [(m.seq, m.content) for m in after] == [(i + 1, f"new{i}") for i in range(150)]


async def test_a_watch_started_past_the_last_seq_reports_no_clear(server: RunningServer) -> None:
    """after_seq beyond the end of an instance that was never cleared: nothing happened to
    report; the watcher gets the messages after its after_seq when they come."""
    async with server.client() as c:
        await c.append(MEM, [{"role": "user", "content": f"m{i}"} for i in range(1, 6)], key="past")
        stream = c.watch(MEM, key="past", after_seq=10).__aiter__()
        first = asyncio.ensure_future(stream.__anext__())
        for i in range(6, 16):
            await c.append(MEM, [{"role": "user", "content": f"m{i}"}], key="past")
        events = [await asyncio.wait_for(first, 10)]
        got = list(events[0].appended.messages)
        while len(got) < 5:
            events.append(await asyncio.wait_for(stream.__anext__(), 10))
            got.extend(events[-1].appended.messages)
        await stream.aclose()  # type: ignore[attr-defined]
    assert [e.WhichOneof("event") for e in events] == ["appended"] * len(events)
    assert [(m.seq, m.content) for m in got] == [(i, f"m{i}") for i in range(11, 16)]


async def test_a_watch_resumed_on_an_instance_wiped_meanwhile_reports_the_clear(server: RunningServer) -> None:
    """after_seq 7 of an instance that no longer exists (cleared while the client was away):
    the watcher gets Cleared at once, and then every message of the new incarnation, not
    only those above 7."""
    async with server.client() as c:
        stream = c.watch(MEM, key="gone", after_seq=7).__aiter__()
        assert (await asyncio.wait_for(stream.__anext__(), 10)).HasField("cleared")
        await c.append(MEM, [{"role": "user", "content": f"n{i}"} for i in range(1, 4)], key="gone")
        got: list[pb.Message] = []
        while len(got) < 3:
            event = await asyncio.wait_for(stream.__anext__(), 10)
            assert event.HasField("appended")
            got.extend(event.appended.messages)
        await stream.aclose()  # type: ignore[attr-defined]
    assert [(m.seq, m.content) for m in got] == [(i, f"n{i}") for i in range(1, 4)]


class _WipesAfterMeta:
    """The real store, except that once ``armed`` it runs that action (another client's
    Clear and appends) right after answering one meta read: the moment between a
    watcher's look at the instance and its read of the messages. Everything else is the
    real store's."""

    def __init__(self, store: MemoryStore) -> None:
        self._store = store
        self.armed: Callable[[], Awaitable[None]] | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def meta(self, addr: InstanceAddr) -> InstanceMeta:
        meta = await self._store.meta(addr)
        if self.armed is not None:
            action, self.armed = self.armed, None
            await action()
        return meta


@pytest.mark.parametrize("backend", ["embedded", "redis"])
async def test_a_clear_between_a_watchers_look_and_its_read_delivers_nothing_before_cleared(
    backend: str, request: pytest.FixtureRequest
) -> None:
    """A Clear and new appends land after the watcher read the instance's meta and before
    it reads the messages: the new incarnation's messages must come after Cleared, never
    before it as if they continued the old one."""
    real = open_store(request.getfixturevalue("redis_standalone").url) if backend == "redis" else EmbeddedStore()
    store = _WipesAfterMeta(real)
    project = storage_project(project_id=f"t{uuid.uuid4().hex[:12]}")
    settings = Settings()
    manager = MemoryManager(project, cast(MemoryStore, store), settings)
    await manager.start()
    try:
        target = manager.resolve(RefSpec(memory_id=MEM, key="race", agent_id=None, context={}))

        async def append(*contents: str) -> None:
            await manager.append(target, [IncomingMessage("user", c, "text", None, {}, True) for c in contents], None)

        await append("old1", "old2", "old3")
        events = manager.watch(target, after_seq=0, chunk=256, stop=asyncio.Event())
        first = await asyncio.wait_for(events.__anext__(), 10)
        assert isinstance(first, Appended) and [m.content for m in first.messages] == ["old1", "old2", "old3"]

        async def wipe() -> None:
            await manager.clear(target)
            await append("new1", "new2", "new3", "new4", "new5")

        store.armed = wipe
        seen: list[str] = []
        while len(seen) < 6:
            event = await asyncio.wait_for(events.__anext__(), 10)
            if isinstance(event, Cleared):
                seen.append("cleared")
            elif isinstance(event, Appended):
                seen.extend(m.content for m in event.messages)
        await events.aclose()
    finally:
        await manager.close()
    assert seen == ["cleared", "new1", "new2", "new3", "new4", "new5"]
