"""Watch: live changes of one instance, exactly once, in order, resumable."""

from __future__ import annotations

import asyncio

from memoryd_client import AsyncMemoryClient, pb

from tests.support import RunningServer, running_server, storage_project

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
