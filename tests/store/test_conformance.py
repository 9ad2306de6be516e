"""The store protocol, one suite for every backend: embedded, standalone, cluster, sentinel.

Running it on the Cluster also proves that no script touches keys of two slots (Redis
refuses such a script with CROSSSLOT).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import replace

import pytest

from memoryd.errors import FenceRejected, IdempotencyConflict, InstanceChanged, LockContention, PinnedTierFull
from memoryd.keys import InstanceAddr
from memoryd.models import FlushPlan, InstanceMeta, NewMessage, StoredMessage, Summary
from memoryd.store.base import MemoryStore
from tests.store.conftest import new_addr

TTL_MS = 600_000


def msg(content: str, *, tokens: int = 10, priority: int | None = None, effective: int = 5,
        role: str = "user", content_type: str = "text", metadata: dict[str, str] | None = None) -> NewMessage:
    return NewMessage(role=role, content=content, content_type=content_type, priority=priority,
                      effective_priority=effective, token_count=tokens, metadata=metadata or {})


def pinned(content: str, tokens: int = 10) -> NewMessage:
    return msg(content, tokens=tokens, priority=0, effective=0, role="system")


def expected_meta(messages: Sequence[StoredMessage]) -> tuple[int, int, int]:
    """(message_count, pinned_tokens, recent_tokens) recomputed from content."""
    return (
        len(messages),
        sum(m.token_count for m in messages if m.pinned),
        sum(m.token_count for m in messages if not m.pinned),
    )


def counters(meta: InstanceMeta) -> tuple[int, int, int]:
    return meta.message_count, meta.pinned_tokens, meta.recent_tokens


def plan(remove: Sequence[int], summary: Summary | None = None) -> FlushPlan:
    return FlushPlan(strategy="hybrid_summary", remove_seqs=tuple(remove), summary=summary,
                     tokens_before=0, tokens_after=0)


async def test_append_then_read_returns_messages_as_stored(store: MemoryStore, addr: InstanceAddr) -> None:
    batch = [
        pinned("You are helpful."),
        msg("héllo ✓ \u0000 end", tokens=7, priority=3, effective=3, metadata={"lang": "fr", "": "empty key"}),
        msg("tool output", role="tool", content_type="tool_result", tokens=4),
    ]
    before_ms = int(time.time() * 1000) - 60_000
    out = await store.append(addr, batch, ttl_ms=TTL_MS)
    assert not out.replayed
    assert [r.seq for r in out.refs] == [1, 2, 3]
    assert len({r.id for r in out.refs}) == 3
    assert [r.token_count for r in out.refs] == [10, 7, 4]
    assert [r.effective_priority for r in out.refs] == [0, 3, 5]
    assert counters(out.meta) == (3, 10, 11) and out.meta.last_seq == 3

    stored = await store.read(addr)
    assert [(m.seq, m.id) for m in stored] == [(r.seq, r.id) for r in out.refs]
    assert [(m.role, m.content, m.content_type, m.priority, m.effective_priority, m.token_count, dict(m.metadata))
            for m in stored] == [(b.role, b.content, b.content_type, b.priority, b.effective_priority,
                                  b.token_count, dict(b.metadata)) for b in batch]
    assert all(m.created_at_ms == out.refs[0].created_at_ms >= before_ms for m in stored)
    assert counters(await store.meta(addr)) == expected_meta(stored)


async def test_read_after_seq_and_limit(store: MemoryStore, addr: InstanceAddr) -> None:
    for i in range(5):
        await store.append(addr, [msg(f"m{i}")])
    assert [m.content for m in await store.read(addr, after_seq=2)] == ["m2", "m3", "m4"]
    assert [m.seq for m in await store.read(addr, after_seq=1, limit=2)] == [2, 3]
    assert [m.seq for m in await store.read(addr, limit=1)] == [1]
    assert await store.read(addr, after_seq=5) == []
    assert await store.read(new_addr()) == []


async def test_unknown_instance_is_empty(store: MemoryStore, addr: InstanceAddr) -> None:
    assert await store.meta(addr) == InstanceMeta()
    state = await store.state(addr)
    assert state.messages == () and state.summary is None and state.meta == InstanceMeta()
    assert await store.clear(addr) == 0


async def test_instances_are_isolated(store: MemoryStore) -> None:
    a, b = new_addr(), new_addr()
    await store.append(a, [msg("for a")])
    await store.append(b, [msg("for b 1"), msg("for b 2")])
    assert [m.content for m in await store.read(a)] == ["for a"]
    assert (await store.meta(b)).message_count == 2


async def test_idempotency_key_replays_and_stores_nothing(store: MemoryStore, addr: InstanceAddr) -> None:
    first = await store.append(addr, [msg("once"), msg("twice?")], idempotency_key="req-1", ttl_ms=TTL_MS)
    again = await store.append(addr, [msg("once"), msg("twice?")], idempotency_key="req-1", ttl_ms=TTL_MS)
    assert again.replayed and not first.replayed
    assert again.refs == first.refs
    assert counters(again.meta) == (2, 0, 20)
    other = await store.append(addr, [msg("new")], idempotency_key="req-2", ttl_ms=TTL_MS)
    assert [r.seq for r in other.refs] == [3]
    assert [m.content for m in await store.read(addr)] == ["once", "twice?", "new"]


async def test_idempotency_key_reused_for_another_batch_is_refused(store: MemoryStore, addr: InstanceAddr) -> None:
    """A retry must carry the same batch: different content under a used key stores nothing."""
    first = await store.append(addr, [msg("once")], idempotency_key="req-1", ttl_ms=TTL_MS)
    for other in ([msg("different")], [msg("once"), msg("more")], [msg("once", role="assistant")],
                  [msg("once", metadata={"k": "v"})]):
        with pytest.raises(IdempotencyConflict, match="idempotency_key"):
            await store.append(addr, other, idempotency_key="req-1", ttl_ms=TTL_MS)
    again = await store.append(addr, [msg("once")], idempotency_key="req-1", ttl_ms=TTL_MS)
    assert again.replayed and again.refs == first.refs
    assert [m.content for m in await store.read(addr)] == ["once"]
    assert counters(await store.meta(addr)) == (1, 0, 10)


async def test_a_flush_planned_on_a_wiped_incarnation_removes_nothing(store: MemoryStore, addr: InstanceAddr) -> None:
    await store.append(addr, [msg("OLD a"), msg("OLD b")])
    old = await store.state(addr)
    assert old.meta.epoch
    await store.clear(addr)
    created = await store.append(addr, [msg("NEW a"), msg("NEW b")])
    assert created.meta.epoch and created.meta.epoch != old.meta.epoch
    async with store.lock(addr, ttl_ms=10_000, acquire_timeout_s=5) as lease:
        stale = replace(plan([1, 2], Summary("S:OLD", 3, 2, 0)), epoch=old.meta.epoch)
        with pytest.raises(InstanceChanged):
            await store.apply_flush(addr, stale, fence=lease.fence)
    state = await store.state(addr)
    assert [m.content for m in state.messages] == ["NEW a", "NEW b"] and state.summary is None


async def test_fifo_drops_are_counted_and_folds_are_not(store: MemoryStore, addr: InstanceAddr) -> None:
    await store.append(addr, [msg(f"m{i}") for i in range(6)])
    async with store.lock(addr, ttl_ms=10_000, acquire_timeout_s=5) as lease:
        await store.apply_flush(addr, replace(plan([1, 2]), strategy="fifo"), fence=lease.fence)
    async with store.lock(addr, ttl_ms=10_000, acquire_timeout_s=5) as lease:
        await store.apply_flush(addr, plan([3], Summary("s", 2, 3, 0)), fence=lease.fence)
    meta = await store.meta(addr)
    assert meta.evicted == 2 and meta.message_count == 3
    assert (await store.state(addr)).meta.evicted == 2


async def test_pinned_cap_refuses_whole_batch(store: MemoryStore, addr: InstanceAddr) -> None:
    await store.append(addr, [pinned("sys", tokens=10)], pinned_cap=15)
    with pytest.raises(PinnedTierFull):
        await store.append(addr, [msg("recent", tokens=3), pinned("too much", tokens=6)], pinned_cap=15)
    meta = await store.meta(addr)
    assert counters(meta) == (1, 10, 0) and meta.last_seq == 1
    assert [m.content for m in await store.read(addr)] == ["sys"]
    # recent messages are not capped; a fitting pinned one is accepted, seqs continue
    out = await store.append(addr, [msg("recent", tokens=100), pinned("fits", tokens=5)], pinned_cap=15)
    assert [r.seq for r in out.refs] == [2, 3]
    assert counters(out.meta) == (3, 15, 100)


async def test_flush_removes_exactly_planned_and_writes_summary(store: MemoryStore, addr: InstanceAddr) -> None:
    await store.append(addr, [pinned("sys", 10)] + [msg(f"m{i}", tokens=i + 1) for i in range(5)], ttl_ms=TTL_MS)
    summary = Summary(content="summary of m0 m1", token_count=6, through_seq=3, updated_at_ms=123)
    async with store.lock(addr, ttl_ms=5_000, acquire_timeout_s=5) as lease:
        out = await store.apply_flush(addr, plan([2, 3, 99], summary), fence=lease.fence, ttl_ms=TTL_MS)
    assert out.removed_seqs == (2, 3)
    state = await store.state(addr)
    assert [m.seq for m in state.messages] == [1, 4, 5, 6]
    assert state.summary == summary
    assert counters(state.meta) == expected_meta(state.messages) == (4, 10, 3 + 4 + 5)
    assert state.meta.summary_tokens == 6 and state.meta.token_count == 10 + 12 + 6
    assert state.meta.flush_count == 1 and state.meta.last_flush_at_ms is not None
    assert out.meta == state.meta


async def test_paged_reads_skip_what_a_flush_removed(store: MemoryStore, addr: InstanceAddr) -> None:
    """RAW reads page by after_seq: a page starts after the given seq even when that seq,
    or those around it, were flushed away, and appends after the flush follow in order."""
    await store.append(addr, [msg(f"m{i}") for i in range(8)])
    async with store.lock(addr, ttl_ms=5_000, acquire_timeout_s=5) as lease:
        await store.apply_flush(addr, plan([1, 3, 4, 7]), fence=lease.fence)
    await store.append(addr, [msg("m8"), msg("m9")])
    assert [m.seq for m in await store.read(addr)] == [2, 5, 6, 8, 9, 10]
    assert [m.seq for m in await store.read(addr, after_seq=3, limit=2)] == [5, 6]
    assert [m.seq for m in await store.read(addr, after_seq=6, limit=2)] == [8, 9]
    assert [m.content for m in await store.read(addr, after_seq=7)] == ["m7", "m8", "m9"]
    assert [m.seq for m in await store.read(addr, after_seq=1, limit=1)] == [2]
    assert await store.read(addr, after_seq=10) == []


async def test_flush_without_summary_keeps_the_current_one(store: MemoryStore, addr: InstanceAddr) -> None:
    await store.append(addr, [msg(f"m{i}") for i in range(4)])
    first = Summary(content="s1", token_count=2, through_seq=1, updated_at_ms=1)
    async with store.lock(addr, ttl_ms=5_000, acquire_timeout_s=5) as lease:
        await store.apply_flush(addr, plan([1], first), fence=lease.fence)
    async with store.lock(addr, ttl_ms=5_000, acquire_timeout_s=5) as lease:
        out = await store.apply_flush(addr, plan([2]), fence=lease.fence)  # fifo: no summary
    assert out.removed_seqs == (2,)
    state = await store.state(addr)
    assert state.summary == first and state.meta.summary_tokens == 2 and state.meta.flush_count == 2


async def test_append_during_flush_is_not_lost(store: MemoryStore, addr: InstanceAddr) -> None:
    await store.append(addr, [msg(f"old{i}") for i in range(4)])
    async with store.lock(addr, ttl_ms=5_000, acquire_timeout_s=5) as lease:
        planned = await store.state(addr)
        late = await store.append(addr, [msg("landed during the flush")])  # appends never take the lock
        out = await store.apply_flush(addr, plan([m.seq for m in planned.messages]), fence=lease.fence)
    assert out.removed_seqs == (1, 2, 3, 4)
    remaining = await store.read(addr)
    assert [(m.seq, m.content) for m in remaining] == [(late.refs[0].seq, "landed during the flush")]
    assert counters(out.meta) == expected_meta(remaining)


async def test_seqs_are_never_reused_after_a_flush(store: MemoryStore, addr: InstanceAddr) -> None:
    await store.append(addr, [msg("a"), msg("b"), msg("c")])
    async with store.lock(addr, ttl_ms=5_000, acquire_timeout_s=5) as lease:
        await store.apply_flush(addr, plan([2, 3]), fence=lease.fence)
    out = await store.append(addr, [msg("d")])
    assert out.refs[0].seq == 4 and out.meta.last_seq == 4


async def test_stale_fence_is_rejected_and_changes_nothing(store: MemoryStore, addr: InstanceAddr) -> None:
    await store.append(addr, [msg("a"), msg("b")])
    async with store.lock(addr, ttl_ms=5_000, acquire_timeout_s=5) as old:
        pass
    async with store.lock(addr, ttl_ms=5_000, acquire_timeout_s=5) as new:
        assert new.fence > old.fence
        before = await store.state(addr)
        with pytest.raises(FenceRejected):
            await store.apply_flush(addr, plan([1], Summary("stale", 1, 1, 1)), fence=old.fence)
        assert await store.state(addr) == before
        out = await store.apply_flush(addr, plan([1]), fence=new.fence)
        assert out.removed_seqs == (1,)


async def test_lock_contention_times_out(store: MemoryStore, addr: InstanceAddr) -> None:
    await store.append(addr, [msg("a")])
    async with store.lock(addr, ttl_ms=5_000, acquire_timeout_s=5):
        with pytest.raises(LockContention):
            async with store.lock(addr, ttl_ms=5_000, acquire_timeout_s=0.05):
                pytest.fail("acquired a held lock")
    async with store.lock(addr, ttl_ms=5_000, acquire_timeout_s=5):
        pass  # released: acquirable again


async def test_clear_deletes_everything_and_restarts_the_sequence(store: MemoryStore, addr: InstanceAddr) -> None:
    await store.append(addr, [msg("a"), pinned("sys")], idempotency_key="k", ttl_ms=TTL_MS)
    async with store.lock(addr, ttl_ms=5_000, acquire_timeout_s=5) as lease:
        await store.apply_flush(addr, plan([1], Summary("s", 1, 1, 1)), fence=lease.fence)
    assert await store.clear(addr) == 1
    assert await store.read(addr) == []
    state = await store.state(addr)
    assert state.meta == InstanceMeta() and state.summary is None
    out = await store.append(addr, [msg("fresh")], idempotency_key="k")
    assert not out.replayed and out.refs[0].seq == 1


async def test_ttl_expiry_deletes_the_instance(store: MemoryStore, addr: InstanceAddr) -> None:
    await store.append(addr, [msg("short-lived"), pinned("sys")], ttl_ms=200)
    await wait_for(lambda: store.meta(addr), lambda meta: meta == InstanceMeta(), "instance expired")
    assert await store.read(addr) == []
    assert (await store.state(addr)).summary is None
    assert (await store.append(addr, [msg("again")])).refs[0].seq == 1


async def test_end_workflow_deletes_exactly_its_instances(store: MemoryStore) -> None:
    wf = f"wf-{time.monotonic_ns()}"
    in_wf = [new_addr(), new_addr()]
    other_wf, no_wf, other_project = new_addr(), new_addr(), new_addr("other-project")
    for a in in_wf:
        await store.append(a, [msg("scoped")], workflow_id=wf, ttl_ms=TTL_MS)
    await store.append(in_wf[0], [msg("scoped again")], workflow_id=wf, ttl_ms=TTL_MS)
    await store.append(other_wf, [msg("other")], workflow_id=wf + "-2", ttl_ms=TTL_MS)
    await store.append(no_wf, [msg("unscoped")], ttl_ms=TTL_MS)
    await store.append(other_project, [msg("same wf id, other project")], workflow_id=wf, ttl_ms=TTL_MS)

    assert await store.end_workflow("proj", wf) == 2
    for a in in_wf:
        assert await store.read(a) == [] and await store.meta(a) == InstanceMeta()
    for a in (other_wf, no_wf, other_project):
        assert len(await store.read(a)) == 1
    assert await store.end_workflow("proj", wf) == 0


async def test_concurrent_appends_get_distinct_contiguous_seqs(store: MemoryStore, addr: InstanceAddr) -> None:
    outs = await asyncio.gather(*(store.append(addr, [msg(f"w{i}-a"), msg(f"w{i}-b")]) for i in range(20)))
    seqs = sorted(r.seq for o in outs for r in o.refs)
    assert seqs == list(range(1, 41))
    for o in outs:  # a batch is contiguous
        assert o.refs[1].seq == o.refs[0].seq + 1
    stored = await store.read(addr)
    assert counters(await store.meta(addr)) == expected_meta(stored) == (40, 0, 400)


async def wait_for(fetch, done, what: str, timeout_s: float = 15.0):  # type: ignore[no-untyped-def]
    """Poll ``fetch`` until ``done(value)``; the polling interval is not synchronisation."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = await fetch()
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached within {timeout_s}s (last: {value!r})")
        await asyncio.sleep(0.02)
