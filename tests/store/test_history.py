"""History and DeleteMessages, on every backend (embedded, standalone, cluster, sentinel, stock):
folds keep what they take out of the live context, the HISTORY read merges both oldest first,
the cap drops the oldest history (counted), deletes reach live messages and history alike,
and history lives and dies with its instance (TTL, Clear, EndWorkflow)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace

import pytest

from memoryd.errors import LastSeqChanged
from memoryd.keys import InstanceAddr
from memoryd.models import FlushOutcome, HistoryPolicy, InstanceMeta, StoredMessage, Summary
from memoryd.store.base import MemoryStore
from tests.store.conftest import new_addr
from tests.store.test_conformance import TTL_MS, counters, expected_meta, msg, pinned, plan, wait_for


async def fold(store: MemoryStore, addr: InstanceAddr, seqs: Sequence[int], *, summary: Summary | None = None,
               strategy: str = "hybrid_summary", history: HistoryPolicy | None = None,
               ttl_ms: int | None = None) -> FlushOutcome:
    async with store.lock(addr, ttl_ms=10_000, acquire_timeout_s=5) as lease:
        p = replace(plan(seqs, summary), strategy=strategy)
        if history is None:
            return await store.apply_flush(addr, p, fence=lease.fence, ttl_ms=ttl_ms)
        return await store.apply_flush(addr, p, fence=lease.fence, ttl_ms=ttl_ms, history=history)


def marks(messages: Sequence[StoredMessage]) -> list[tuple[int, str, bool]]:
    return [(m.seq, m.content, m.folded) for m in messages]


async def test_a_fold_keeps_what_it_takes_out_and_history_reads_both(store: MemoryStore, addr: InstanceAddr) -> None:
    out = await store.append(addr, [pinned("sys"), *[msg(f"m{i}", tokens=i + 1, metadata={"n": str(i)})
                                                      for i in range(2, 7)]], ttl_ms=TTL_MS)
    live_before = {m.seq: m for m in await store.read(addr)}
    folded = await fold(store, addr, [2, 3, 5], summary=Summary("S", 4, 5, 0))
    assert folded.removed_seqs == (2, 3, 5)
    meta = folded.meta
    assert meta.history_messages == 3 and meta.summary_through_seq == 5 and meta.history_dropped == 0
    assert counters(meta) == expected_meta(await store.read(addr))

    history = await store.read_history(addr)
    assert marks(history) == [(1, "sys", False), (2, "m2", True), (3, "m3", True), (4, "m4", False),
                              (5, "m5", True), (6, "m6", False)]
    for m in history:  # every field as stored: a folded message is the same message, marked
        assert m._replace(folded=False) == live_before[m.seq]
    assert all(not m.folded for m in await store.read(addr))  # RAW: live only, never marked
    assert [m.seq for m in (await store.state(addr)).messages] == [1, 4, 6]
    assert [r.seq for r in out.refs] == [1, 2, 3, 4, 5, 6]
    assert await store.meta(addr) == meta


async def test_history_reads_page_by_seq(store: MemoryStore, addr: InstanceAddr) -> None:
    await store.append(addr, [msg(f"m{i}") for i in range(1, 11)])
    await fold(store, addr, [1, 2, 3, 7])
    assert [m.seq for m in await store.read_history(addr, after_seq=2)] == list(range(3, 11))
    assert marks(await store.read_history(addr, after_seq=2, limit=3)) == [(3, "m3", True), (4, "m4", False),
                                                                          (5, "m5", False)]
    assert [m.seq for m in await store.read_history(addr, after_seq=5, limit=2)] == [6, 7]
    pages, cursor = [], 0
    while page := await store.read_history(addr, after_seq=cursor, limit=3):
        pages.append([m.seq for m in page])
        cursor = page[-1].seq
    assert pages == [[1, 2, 3], [4, 5, 6], [7, 8, 9], [10]]
    assert await store.read_history(addr, after_seq=10) == []
    assert await store.read_history(new_addr()) == []


async def test_fifo_evictions_go_to_history_out_of_seq_order(store: MemoryStore, addr: InstanceAddr) -> None:
    await store.append(addr, [msg(f"m{i}") for i in range(1, 7)])
    await fold(store, addr, [5], strategy="fifo")  # fifo drops by priority first: not oldest first
    await fold(store, addr, [2, 6], strategy="fifo")
    await fold(store, addr, [1], summary=Summary("S", 2, 1, 0))
    meta = await store.meta(addr)
    assert meta.evicted == 3 and meta.history_messages == 4  # evicted, and still kept
    assert marks(await store.read_history(addr)) == [(1, "m1", True), (2, "m2", True), (3, "m3", False),
                                                     (4, "m4", False), (5, "m5", True), (6, "m6", True)]


async def test_history_drop_keeps_nothing(store: MemoryStore, addr: InstanceAddr) -> None:
    await store.append(addr, [msg(f"m{i}") for i in range(1, 5)])
    out = await fold(store, addr, [1, 2], summary=Summary("S", 2, 2, 0), history=HistoryPolicy(keep=False))
    assert out.meta.history_messages == 0 and out.meta.summary_through_seq == 2
    assert marks(await store.read_history(addr)) == [(3, "m3", False), (4, "m4", False)]


async def test_the_cap_drops_the_oldest_history_and_counts_it(store: MemoryStore, addr: InstanceAddr) -> None:
    await store.append(addr, [msg(f"m{i}") for i in range(1, 11)])
    cap = HistoryPolicy(max_messages=3)
    assert (await fold(store, addr, [4, 5], history=cap)).meta.history_messages == 2
    out = await fold(store, addr, [1, 2, 8], history=cap)  # 5 in history: the two lowest seqs go
    assert (out.meta.history_messages, out.meta.history_dropped) == (3, 2)
    assert [m.seq for m in await store.read_history(addr) if m.folded] == [4, 5, 8]
    out = await fold(store, addr, [3], history=cap)
    assert (out.meta.history_messages, out.meta.history_dropped) == (3, 3)
    assert [m.seq for m in await store.read_history(addr) if m.folded] == [4, 5, 8]  # 3 was the lowest
    assert out.removed_seqs == (3,) and counters(out.meta) == expected_meta(await store.read(addr))


async def test_delete_reaches_live_messages_and_history(store: MemoryStore, addr: InstanceAddr) -> None:
    await store.append(addr, [pinned("sys", tokens=7), *[msg(f"m{i}", tokens=i) for i in range(2, 8)]])
    await fold(store, addr, [2, 3], summary=Summary("S mentions m2", 3, 3, 0))
    out = await store.delete_messages(addr, [3, 1, 5, 5, 99, 2_000_000])  # duplicates and unknowns ignored
    assert out.deleted_seqs == (1, 3, 5)
    meta = out.meta
    assert meta.history_messages == 1 and meta.delete_count == 1 and meta.last_seq == 7
    live = await store.read(addr)
    assert [m.seq for m in live] == [4, 6, 7] and counters(meta) == expected_meta(live) == (3, 0, 17)
    assert marks(await store.read_history(addr)) == [(2, "m2", True), (4, "m4", False), (6, "m6", False),
                                                     (7, "m7", False)]
    state = await store.state(addr)  # the summary is not rewritten
    assert state.summary is not None and state.summary.content == "S mentions m2" and state.meta == meta
    nothing = await store.delete_messages(addr, [1, 3, 50])
    assert nothing.deleted_seqs == () and nothing.meta == meta  # nothing deleted: nothing moved


async def test_if_last_seq_deletes_only_the_expected_state(store: MemoryStore, addr: InstanceAddr) -> None:
    with pytest.raises(LastSeqChanged):
        await store.delete_messages(addr, [1], if_last_seq=3)
    assert (await store.delete_messages(addr, [1], if_last_seq=0)).deleted_seqs == ()
    await store.append(addr, [msg("a"), msg("b"), msg("c")])
    before = await store.meta(addr)
    with pytest.raises(LastSeqChanged):
        await store.delete_messages(addr, [3], if_last_seq=2)
    assert await store.meta(addr) == before and len(await store.read(addr)) == 3
    popped = await store.delete_messages(addr, [3], if_last_seq=3)  # pop_item: the newest, if still newest
    assert popped.deleted_seqs == (3,) and popped.meta.last_seq == 3  # seqs are never reused
    assert (await store.delete_messages(addr, [2], if_last_seq=3)).deleted_seqs == (2,)
    await store.append(addr, [msg("d")])
    with pytest.raises(LastSeqChanged):
        await store.delete_messages(addr, [1], if_last_seq=3)
    assert [m.content for m in await store.read(addr)] == ["a", "d"]


async def test_clear_removes_history_and_it_never_comes_back(store: MemoryStore, addr: InstanceAddr) -> None:
    await store.append(addr, [msg("OLD a"), msg("OLD b"), msg("OLD c")], ttl_ms=TTL_MS)
    await fold(store, addr, [1, 2], summary=Summary("S", 2, 2, 0))
    assert await store.clear(addr) == 1
    assert await store.read_history(addr) == [] and await store.meta(addr) == InstanceMeta()
    await store.append(addr, [msg("NEW a"), msg("NEW b")], ttl_ms=TTL_MS)  # the same seqs again
    assert marks(await store.read_history(addr)) == [(1, "NEW a", False), (2, "NEW b", False)]
    assert (await store.meta(addr)).history_messages == 0
    assert (await store.delete_messages(addr, [3])).deleted_seqs == ()


async def test_end_workflow_removes_history(store: MemoryStore) -> None:
    wf, addr = f"wf-{time.monotonic_ns()}", new_addr()
    await store.append(addr, [msg("a"), msg("b")], workflow_id=wf, ttl_ms=TTL_MS)
    await fold(store, addr, [1])
    assert await store.end_workflow("proj", wf) == 1
    assert await store.read_history(addr) == []
    await store.append(addr, [msg("again")])
    assert marks(await store.read_history(addr)) == [(1, "again", False)]


async def test_history_expires_with_its_instance(store: MemoryStore, addr: InstanceAddr) -> None:
    await store.append(addr, [msg("a"), msg("b")], ttl_ms=TTL_MS)
    await fold(store, addr, [1, 2], summary=Summary("S", 2, 2, 0), ttl_ms=300)  # the flush sets the TTL
    assert (await store.meta(addr)).history_messages == 2
    await wait_for(lambda: store.meta(addr), lambda meta: meta == InstanceMeta(), "instance expired")
    assert await store.read_history(addr) == []
    await store.append(addr, [msg("c")])
    assert marks(await store.read_history(addr)) == [(1, "c", False)]
