"""History and DeleteMessages through the API (Python client, real gRPC), on the embedded
store and a real Redis: folds keep what they fold, HISTORY reads page and mark, GetStats
reports history, DeleteMessages validates, refuses read-only references, honours
if_last_seq, leaves the summary as it was, and Watch reports what it deleted."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace

import pytest
from memoryd_client import (
    AbortedError,
    AsyncMemoryClient,
    InvalidArgumentError,
    MemoryClient,
    PermissionDeniedError,
    pb,
)

from memoryd.config.model import FlushingStrategy, MemoryResource, Persistence, Project
from memoryd.store.url import open_store
from memoryd.validation import MAX_DELETE_SEQS
from tests.support import RunningServer, running_server

CHAT = MemoryResource(id="chat", model="gpt-4o", max_tokens=400,
                      flushing_strategy=FlushingStrategy(summary_tokens=120, summarize_oldest_percent=50))


@asynccontextmanager
async def serving(request: pytest.FixtureRequest, backend: str, *resources: MemoryResource,
                  ) -> AsyncIterator[RunningServer]:
    store = open_store(request.getfixturevalue("redis_standalone").url) if backend == "redis" else None
    project = Project(id=f"p{uuid.uuid4().hex[:10]}", resources={r.id: r for r in resources or (CHAT,)}, agents={})
    async with running_server(project, store=store) as srv:
        yield srv


async def converse(srv: RunningServer, c: AsyncMemoryClient, turns: int, key: str = "k",
                   memory_id: str = "chat") -> dict[int, str]:
    """Append ``turns`` messages, letting the background folds they schedule run."""
    acked: dict[int, str] = {}
    for i in range(turns):
        content = f"turn {i}: the parcel A-{4800 + i} left the depot at {i % 24}:00"
        resp = await c.append(memory_id, [{"role": "user" if i % 2 else "assistant", "content": content}], key=key)
        acked[resp.results[0].seq] = content
        await srv.server.manager.flushes_idle()
    return acked


BACKENDS = pytest.mark.parametrize("backend", ["embedded", "redis"])


@BACKENDS
async def test_history_keeps_every_acknowledged_message_in_order(request: pytest.FixtureRequest,
                                                                 backend: str) -> None:
    async with serving(request, backend) as srv, srv.client() as c:
        acked = await converse(srv, c, 40)
        raw = {m.seq for m in await c.read_all("chat", key="k", view="raw")}
        stats = await c.stats("chat", key="k")
        history = await c.read_all("chat", key="k", view="history", chunk_size=7)  # paged by the daemon
        assert stats.flush_count > 0 and stats.history_messages > 0, "folds must have run"
        assert [m.seq for m in history] == sorted(acked)
        assert [m.content for m in history] == [acked[s] for s in sorted(acked)]
        assert [m.folded for m in history] == [s not in raw for s in sorted(acked)]
        assert stats.history_messages == sum(m.folded for m in history) == len(acked) - len(raw)
        assert stats.history_dropped == 0 and stats.summary_through_seq > 0
        context = await c.read_all("chat", key="k")
        summary = next(m for m in context if m.kind == pb.MESSAGE_KIND_SUMMARY)
        assert f"through message #{stats.summary_through_seq})" in summary.content
        page = await c.read_all("chat", key="k", view="history", after_seq=3, limit=5)
        assert [m.seq for m in page] == sorted(acked)[3:8]
        assert not any(m.folded for m in await c.read_all("chat", key="k", view="raw"))


@BACKENDS
async def test_history_drop_and_the_cap(request: pytest.FixtureRequest, backend: str) -> None:
    dropping = replace(CHAT, id="dropping", persistence=Persistence(history="drop"))
    capped = replace(CHAT, id="capped", persistence=Persistence(max_history_messages=5))
    async with serving(request, backend, dropping, capped) as srv, srv.client() as c:
        await converse(srv, c, 30, memory_id="dropping")
        acked = await converse(srv, c, 30, memory_id="capped")
        stats = await c.stats("dropping", key="k")
        assert stats.flush_count > 0 and stats.history_messages == 0
        assert not any(m.folded for m in await c.read_all("dropping", key="k", view="history"))
        stats = await c.stats("capped", key="k")
        folded = [m.seq for m in await c.read_all("capped", key="k", view="history") if m.folded]
        raw = {m.seq for m in await c.read_all("capped", key="k", view="raw")}
        assert stats.history_messages == len(folded) == 5
        assert stats.history_dropped == len(acked) - len(raw) - 5 > 0
        assert folded == sorted(s for s in acked if s not in raw)[-5:]  # the oldest were dropped


@BACKENDS
async def test_delete_messages_end_to_end(request: pytest.FixtureRequest, backend: str) -> None:
    async with serving(request, backend) as srv, srv.client() as c:
        acked = await converse(srv, c, 30)
        raw = [m.seq for m in await c.read_all("chat", key="k", view="raw")]
        folded = sorted(set(acked) - set(raw))
        stats = await c.stats("chat", key="k")
        summary = next(m for m in await c.read_all("chat", key="k") if m.kind == pb.MESSAGE_KIND_SUMMARY)
        mentioned = next(s for s in folded if f"#{s}:" in summary.content)  # a message the summary names
        gone = [mentioned, raw[0], raw[-2], 10_000]
        resp = await c.delete("chat", gone, key="k")
        assert list(resp.deleted_seqs) == sorted(gone[:3])  # 10_000 was never stored: not reported
        after = resp.stats
        assert after.message_count == stats.message_count - 2 and after.history_messages == stats.history_messages - 1
        assert after.last_seq == stats.last_seq  # seqs are never reused
        assert after == await c.stats("chat", key="k")
        history = await c.read_all("chat", key="k", view="history")
        assert [m.seq for m in history] == sorted(set(acked) - set(gone))
        raw_after = await c.read_all("chat", key="k", view="raw")
        assert after.token_count == sum(m.token_count for m in raw_after) + after.summary_tokens
        # The summary is not rewritten: what it says of a deleted message stays until a later
        # fold replaces the summary (docs/api.md, DeleteMessages).
        still = next(m for m in await c.read_all("chat", key="k") if m.kind == pb.MESSAGE_KIND_SUMMARY)
        assert still.content == summary.content and f"#{mentioned}:" in still.content

        # if_last_seq: the OpenAI Agents SDK's pop_item
        last = after.last_seq
        with pytest.raises(AbortedError, match="if_last_seq"):
            await c.delete("chat", [last], key="k", if_last_seq=last - 1)
        assert (await c.stats("chat", key="k")) == after  # refused: nothing changed
        popped = await c.delete("chat", [last], key="k", if_last_seq=last)
        assert list(popped.deleted_seqs) == [last]
        with MemoryClient(srv.address) as sync_client:  # the blocking client, off the loop
            again = await asyncio.to_thread(sync_client.delete, "chat", [last], key="k", if_last_seq=last)
        assert list(again.deleted_seqs) == [] and again.stats.message_count == popped.stats.message_count
        # docs/api.md's pop_item recipe, twice in a row: if_last_seq is the instance's last_seq
        # (a delete does not lower it), the message deleted is the newest live one.
        for _ in range(2):
            last_seq = (await c.stats("chat", key="k")).last_seq
            newest = (await c.read_all("chat", key="k"))[-1]
            done = await c.delete("chat", [newest.seq], key="k", if_last_seq=last_seq)
            assert list(done.deleted_seqs) == [newest.seq] and newest.seq < last_seq


@BACKENDS
async def test_delete_messages_refuses_bad_input_and_read_only_references(request: pytest.FixtureRequest,
                                                                          backend: str) -> None:
    read_only = replace(CHAT, id="ro", direct_access="read-only")
    async with serving(request, backend, CHAT, read_only) as srv, srv.client() as c:
        await c.append("chat", [{"role": "user", "content": "hello"}], key="k")
        with pytest.raises(InvalidArgumentError, match=": seqs: at least one"):
            await c.delete("chat", [], key="k")
        with pytest.raises(InvalidArgumentError, match=r": seqs\[1\]: "):
            await c.delete("chat", [1, 0], key="k")
        with pytest.raises(InvalidArgumentError, match=r": seqs: .*limit"):
            await c.delete("chat", list(range(1, MAX_DELETE_SEQS + 2)), key="k")
        with pytest.raises(PermissionDeniedError, match="read-only"):
            await c.delete("ro", [1], key="k")
        with pytest.raises(InvalidArgumentError, match="chunk_size"):
            await c.read_all("chat", key="k", view="history", chunk_size=10**6)
        assert [m.content for m in await c.read_all("chat", key="k", view="history")] == ["hello"]
        assert list((await c.delete("chat", [1, 1, 2**64 - 1], key="k")).deleted_seqs) == [1]


async def test_watch_reports_deleted_messages() -> None:
    res = replace(CHAT, max_tokens=100_000)
    async with serving(pytest.FixtureRequest, "embedded", res) as srv, srv.client() as c:  # type: ignore[arg-type]
        await c.append("chat", [{"role": "user", "content": f"x{i}"} for i in range(5)], key="w")
        events: list[pb.WatchResponse] = []
        done = asyncio.Event()

        async def watch() -> None:
            async for event in c.watch("chat", key="w"):
                events.append(event)
                if event.HasField("deleted"):
                    done.set()
                    return

        task = asyncio.create_task(watch())
        await c.append("chat", [{"role": "user", "content": "marker"}], key="w")
        await c.delete("chat", [2, 4, 99], key="w")
        await asyncio.wait_for(done.wait(), 10)
        await task
    deleted = [e.deleted for e in events if e.HasField("deleted")]
    assert [list(d.seqs) for d in deleted] == [[2, 4]]
