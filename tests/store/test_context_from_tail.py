"""CONTEXT reads from the newest end (issue 19, item 4), through the manager, on the embedded
store and standalone Redis.

The promise: the view a read returns is ``context_view`` of the whole stored state, for any
instance (pinned messages, one or several priorities, block caps, message_limit, summaries,
sizes up to oversized, caller ``max_tokens``). And the read costs the budget: with one
non-pinned priority it never loads the whole instance (counted: store calls and messages
decoded, not time).
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memoryd.config.model import FlushingStrategy, MemoryResource, Persistence, PriorityBlock, Project
from memoryd.engine import context_view
from memoryd.errors import MemorydError
from memoryd.keys import InstanceAddr
from memoryd.manager import MemoryManager
from memoryd.models import FlushPlan, InstanceState, NewMessage, RefSpec, Summary, TailState
from memoryd.settings import Settings
from memoryd.store.base import MemoryStore
from memoryd.targets import Target
from tests.store.conftest import cold, make_store


class CountingStore:
    """The store, counting the calls a read makes and the messages they decode."""

    def __init__(self, inner: MemoryStore) -> None:
        self.inner = inner
        self.calls: Counter[str] = Counter()
        self.decoded = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def state(self, addr: InstanceAddr) -> InstanceState:
        self.calls["state"] += 1
        out = await self.inner.state(addr)
        self.decoded += len(out.messages)
        return out

    async def tail_state(self, addr: InstanceAddr, *, min_tokens: int, min_messages: int) -> TailState | None:
        self.calls["tail_state"] += 1
        out = await self.inner.tail_state(addr, min_tokens=min_tokens, min_messages=min_messages)
        if out is not None:
            self.decoded += len(out.pinned) + len(out.recent)
        return out


@pytest.fixture(params=["embedded", "standalone"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[MemoryStore]:
    s = await make_store(request, request.param)
    try:
        yield s
    finally:
        await s.close()


def manager_for(store: MemoryStore, res: MemoryResource) -> tuple[MemoryManager, CountingStore, Target]:
    counting = CountingStore(store)
    manager = MemoryManager(Project(id="p", resources={res.id: res}, agents={}), counting,  # type: ignore[arg-type]
                            Settings())
    target = manager.resolve(RefSpec(memory_id=res.id, key=f"k-{uuid.uuid4().hex}", agent_id=None, context={}))
    return manager, counting, target


async def whole_view(store: MemoryStore, target: Target, max_tokens: int) -> Any:
    rt = target.runtime
    try:
        return context_view(await store.state(target.addr), rt.budget, max_tokens or None, "system",
                            rt.counter.count_message)
    except MemorydError as exc:
        return (type(exc), exc.message)


resources = st.builds(
    lambda total, limit, blocks, summary: MemoryResource(
        id="r", max_tokens=total, message_limit=limit, priority_blocks=tuple(blocks),
        flushing_strategy=FlushingStrategy(summary_tokens=summary), persistence=Persistence(ttl_s=None)),
    st.integers(400, 1500), st.one_of(st.none(), st.integers(1, 12)),
    st.lists(st.builds(PriorityBlock, priority=st.sampled_from([3, 5]), content_types=st.just(("t",)),
                       max_tokens=st.integers(64, 300)), max_size=2),
    st.integers(64, 150),
)
message = st.tuples(st.sampled_from([0, 5, 5, 5, 5, 3]), st.one_of(st.integers(0, 50), st.integers(0, 50),
                                                                    st.integers(60, 700)))
batches = st.lists(st.lists(message, min_size=1, max_size=25), min_size=1, max_size=4)


def new(prio: int, tokens: int) -> NewMessage:
    return NewMessage("system" if prio == 0 else "user", "w " * max(0, tokens - 4), "text", prio, prio, tokens)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(res=resources, batches=batches, one_level=st.booleans(),
       fold=st.one_of(st.none(), st.tuples(st.integers(1, 150), st.lists(st.integers(1, 60), max_size=20))),
       max_tokens=st.one_of(st.just(0), st.integers(60, 1500)))
async def test_the_view_from_the_newest_end_is_the_whole_view(
    store: MemoryStore, res: MemoryResource, batches: list[list[tuple[int, int]]], one_level: bool,
    fold: tuple[int, list[int]] | None, max_tokens: int,
) -> None:
    manager, counting, target = manager_for(store, res)
    pinned = 0
    for batch in batches:
        msgs = [new(5 if one_level and p == 3 else p, t) for p, t in batch]
        adding = sum(m.token_count for m in msgs if m.pinned)
        if pinned + adding > target.runtime.budget.pinned_cap:
            msgs = [m for m in msgs if not m.pinned]
            if not msgs:
                continue
            adding = 0
        pinned += adding
        await store.append(target.addr, msgs)
    if fold is not None:
        async with store.lock(target.addr, ttl_ms=10_000, acquire_timeout_s=5) as lease:
            summary = Summary("s " * fold[0], fold[0], 1, 1)
            await store.apply_flush(target.addr, FlushPlan("hybrid_summary", tuple(fold[1]), summary, 0, 0),
                                    fence=lease.fence)
    expected = await whole_view(store, target, max_tokens)
    try:
        got: Any = (await manager.read_context(target, max_tokens=max_tokens))[0]
    except MemorydError as exc:
        got = (type(exc), exc.message)
    assert got == expected
    levels = {m.effective_priority for m in (await store.state(target.addr)).messages} - {0}
    if len(levels) <= 1:
        assert counting.calls["state"] == 0, "one priority: the whole instance must not be read"


async def test_a_long_instance_costs_its_budget(store: MemoryStore) -> None:
    """3,000 stored messages behind a 1,000-token budget: one tail read, a few dozen decoded."""
    res = MemoryResource(id="r", max_tokens=1000, flushing_strategy=FlushingStrategy(summary_tokens=100))
    manager, counting, target = manager_for(store, res)
    await store.append(target.addr, [new(0, 30)])
    for i in range(10):
        await store.append(target.addr, [new(5, 10 + (i + j) % 20) for j in range(300)])
    view, meta = await manager.read_context(target, max_tokens=0)
    assert view == await whole_view(store, target, 0)
    assert counting.calls == Counter(tail_state=1)
    assert counting.decoded < 100
    assert view.omitted == 3000 - (len(view.messages) - 1) and meta.message_count == 3001


async def test_several_priorities_read_the_whole_instance(store: MemoryStore) -> None:
    """An older, more important message may be in the view however old: no suffix decides."""
    res = MemoryResource(id="r", max_tokens=1000, flushing_strategy=FlushingStrategy(summary_tokens=100))
    manager, counting, target = manager_for(store, res)
    await store.append(target.addr, [new(3, 20)] + [new(5, 20) for _ in range(200)])
    cold(store, target.addr)  # as another daemon reads it (a cached copy would serve it whole)
    view, _ = await manager.read_context(target, max_tokens=0)
    assert view == await whole_view(store, target, 0)
    assert view.messages[0].seq == 1  # the priority-3 message, the oldest, is kept
    assert counting.calls["state"] == 1
