"""apply_flush's fold-count check (PlanFlush/ApplyFlush), on every backend: a plan made at
fold count n applies only while the instance is still at n, atomically with the write."""

from __future__ import annotations

from dataclasses import replace

import pytest

from memoryd.errors import FoldedMeanwhile
from memoryd.keys import InstanceAddr
from memoryd.models import FlushPlan, Summary
from memoryd.store.base import MemoryStore
from tests.store.test_conformance import msg


def planned(remove: tuple[int, ...], text: str, at: int) -> FlushPlan:
    return FlushPlan("hybrid_summary", remove, Summary(text, 3, max(remove), 0), 0, 0, flush_count=at)


async def test_the_second_of_two_plans_made_at_the_same_fold_changes_nothing(
    store: MemoryStore, addr: InstanceAddr
) -> None:
    await store.append(addr, [msg(f"m{i}") for i in range(6)])
    at = (await store.meta(addr)).flush_count
    first, second = planned((1, 2), "first", at), planned((1, 2, 3), "second", at)
    async with store.lock(addr, ttl_ms=10_000, acquire_timeout_s=5) as lease:
        out = await store.apply_flush(addr, first, fence=lease.fence)
    assert out.removed_seqs == (1, 2) and out.meta.flush_count == at + 1
    async with store.lock(addr, ttl_ms=10_000, acquire_timeout_s=5) as lease:
        with pytest.raises(FoldedMeanwhile):
            await store.apply_flush(addr, second, fence=lease.fence)
    state = await store.state(addr)
    assert [m.seq for m in state.messages] == [3, 4, 5, 6]
    assert state.summary is not None and state.summary.content == "first"
    assert state.meta.flush_count == at + 1 and state.meta.summary_tokens == 3
    # A plan made at the current count applies; no count (rule-based folds) is not checked.
    async with store.lock(addr, ttl_ms=10_000, acquire_timeout_s=5) as lease:
        out = await store.apply_flush(addr, replace(second, flush_count=at + 1), fence=lease.fence)
    assert out.removed_seqs == (3,)
    async with store.lock(addr, ttl_ms=10_000, acquire_timeout_s=5) as lease:
        out = await store.apply_flush(addr, replace(second, remove_seqs=(4,), flush_count=None), fence=lease.fence)
    assert out.removed_seqs == (4,) and out.meta.flush_count == at + 3
