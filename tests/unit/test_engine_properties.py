"""Property tests of the engine over random conversations, priorities and settings."""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from memoryd import tokens
from memoryd.config.model import FlushingStrategy, MemoryResource, PriorityBlock, TokenAllocation
from memoryd.engine import (
    Budget,
    budget_problems,
    compute_budget,
    context_view,
    effective_priority,
    needs_flush,
    plan_flush,
    select_evictions,
)
from memoryd.engine.evict import select_kept
from memoryd.errors import InvalidArgument
from memoryd.models import InstanceMeta, InstanceState, Kind, StoredMessage, Summary
from tests.engine_apply import apply_plan, recount

COUNT_MSG = tokens.counter_for_model("gpt-4o").count_message
COUNT = functools.partial(COUNT_MSG, "system")
CONTENT_TYPES = ("text", "tool_result", "user_preference", "code")
ROLES = ("system", "user", "assistant", "tool")
WORDS = ("alpha", "beta", "Grüße", "привет", "你好", "🙂", "42", "x", "\n", "tool:", "ok.")

PROFILE = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def resources(draw: st.DrawFn) -> MemoryResource:
    allocation = None
    if draw(st.booleans()):
        parts = [draw(st.integers(0, 10)) for _ in range(3)]
        parts[1] += 0 if sum(parts) else 1
        total = sum(parts)
        allocation = TokenAllocation(parts[0] / total, parts[1] / total, parts[2] / total)
    priorities = draw(st.lists(st.integers(0, 6), max_size=3, unique=True))
    blocks = tuple(
        PriorityBlock(
            priority=p,
            content_types=tuple(draw(st.lists(st.sampled_from(CONTENT_TYPES), min_size=1, max_size=2, unique=True))),
            max_tokens=draw(st.none() | st.integers(64, 600)),
        )
        for p in priorities
    )
    res = MemoryResource(
        id="prop",
        max_tokens=draw(st.integers(200, 1500)),
        message_limit=draw(st.none() | st.integers(1, 40)),
        default_priority=draw(st.integers(1, 9)),
        token_allocation=allocation,
        priority_blocks=blocks,
        flushing_strategy=FlushingStrategy(
            type=draw(st.sampled_from(["hybrid_summary", "fifo"])),
            summarize_threshold=draw(st.floats(0.3, 1.0)),
            summary_tokens=draw(st.integers(64, 300)),
            summarize_oldest_percent=draw(st.floats(0.0, 100.0)),
        ),
    )
    assume(not budget_problems(res, None))  # what `memoryd validate` accepts
    return res


@st.composite
def conversations(draw: st.DrawFn, res: MemoryResource, budget: Budget) -> InstanceState:
    """A state an append path could have produced: the pinned tier stays within its cap."""
    n = draw(st.integers(0, 60))
    messages: list[StoredMessage] = []
    pinned = 0
    seq = draw(st.integers(0, 5))
    for _ in range(n):
        seq += draw(st.integers(1, 3))  # flushed/cleared gaps
        role = draw(st.sampled_from(ROLES))
        ctype = draw(st.sampled_from(CONTENT_TYPES))
        explicit = draw(st.none() | st.integers(0, 9))
        prio = effective_priority(res, role, ctype, explicit)
        size = draw(st.integers(1, 120))
        if prio == 0:
            if pinned + size > budget.pinned_cap:
                continue  # the append would have been refused with RESOURCE_EXHAUSTED
            pinned += size
        content = " ".join(draw(st.lists(st.sampled_from(WORDS), min_size=1, max_size=25)))
        messages.append(
            StoredMessage(
                seq=seq, id=f"id{seq}", role=role, content=content, content_type=ctype, priority=explicit,
                effective_priority=prio, token_count=size, created_at_ms=seq,
            )
        )
    summary = None
    if draw(st.booleans()):
        text = "Summary of earlier conversation:\n" + " ".join(draw(st.lists(st.sampled_from(WORDS), max_size=40)))
        summary = Summary(content=text, token_count=COUNT(text), through_seq=draw(st.integers(0, 5)), updated_at_ms=1)
    return InstanceState(meta=recount(InstanceMeta(), messages, summary), summary=summary, messages=tuple(messages))


@st.composite
def cases(draw: st.DrawFn) -> tuple[MemoryResource, Budget, InstanceState]:
    res = draw(resources())
    budget = compute_budget(res, None)
    return res, budget, draw(conversations(res, budget))


def check_eviction_order(
    candidates: Sequence[StoredMessage], removed: set[int], block_caps: dict[int, int]
) -> None:
    """Within a priority only the oldest go; a more important message goes before a less
    important one only when its own block was over its cap."""
    kept = [m for m in candidates if m.seq not in removed]
    gone = [m for m in candidates if m.seq in removed]
    for e in gone:
        same_level = [m for m in candidates if m.effective_priority == e.effective_priority]
        for k in kept:
            if k.effective_priority == e.effective_priority:
                assert e.seq < k.seq
            elif k.effective_priority > e.effective_priority:
                cap = block_caps.get(e.effective_priority)
                assert cap is not None
                assert sum(m.token_count for m in same_level if m.seq >= e.seq) > cap


def reference_evictions(
    messages: Sequence[Any], room: int, block_caps: Mapping[int, int], message_limit: int | None
) -> set[int]:
    """The eviction rule exactly as docs/tokens-and-budget.md states it, one item at a time:
    the oracle for memoryd's evict module, which computes the same selection from the kept side.

    Items are messages, or units (a tool-call group: ``seq`` its newest member's, its
    tokens, its lowest priority, ``size`` its members, counted by ``message_limit``),
    oldest first; the seqs returned are the items'."""
    levels: dict[int, list[Any]] = {}
    for m in messages:
        levels.setdefault(m.effective_priority, []).append(m)
    evicted: set[int] = set()
    size = lambda m: getattr(m, "size", 1)  # noqa: E731
    tokens, count = sum(m.token_count for m in messages), sum(map(size, messages))
    for priority, cap in block_caps.items():  # 1. each block's oldest go until the block fits its cap
        level = levels.get(priority, [])
        while level and sum(m.token_count for m in level) > cap:
            m = level.pop(0)
            evicted.add(m.seq)
            tokens, count = tokens - m.token_count, count - size(m)
    limit = count if message_limit is None else message_limit
    for priority in sorted(levels, reverse=True):  # 2. highest number first, oldest first
        for m in levels[priority]:
            if tokens <= room and count <= limit:
                return evicted
            evicted.add(m.seq)
            tokens, count = tokens - m.token_count, count - size(m)
    return evicted


@st.composite
def eviction_inputs(draw: st.DrawFn) -> tuple[list[StoredMessage], int, dict[int, int], int | None]:
    """Non-pinned messages over few or many priorities (zero-token ones included), with
    block caps, rooms and message limits from nothing to more than everything."""
    priorities = draw(st.sampled_from([[5], [1, 9], list(range(1, 10))]))
    messages = [
        StoredMessage(seq=seq, id=f"id{seq}", role="user", content="x", content_type="text", priority=None,
                      effective_priority=draw(st.sampled_from(priorities)), token_count=draw(st.integers(0, 40)),
                      created_at_ms=seq)
        for seq in range(1, draw(st.integers(0, 40)) + 1)
    ]
    caps = draw(st.dictionaries(st.integers(1, 9), st.integers(0, 200), max_size=3))
    return messages, draw(st.integers(0, 900)), caps, draw(st.none() | st.integers(0, 45))


@settings(max_examples=400, deadline=None)
@given(eviction_inputs())
def test_eviction_selects_exactly_what_the_rule_drops_one_by_one(
    case: tuple[list[StoredMessage], int, dict[int, int], int | None]
) -> None:
    messages, room, caps, limit = case
    expected = reference_evictions(messages, room, caps, limit)
    event("evicts some" if expected and len(expected) < len(messages) else "evicts none or all")
    assert select_evictions(messages, room=room, block_caps=caps, message_limit=limit) == expected
    kept = select_kept(messages, room=room, block_caps=caps, message_limit=limit)
    assert list(kept) == [m for m in messages if m.seq not in expected]  # oldest first, as given


@PROFILE
@given(cases(), st.none() | st.integers(0, 1600))
def test_view_within_budget_with_every_pinned_message(
    case: tuple[MemoryResource, Budget, InstanceState], max_tokens: int | None
) -> None:
    _res, budget, state = case
    limit = budget.total if not max_tokens else min(budget.total, max_tokens)
    pinned = [m for m in state.messages if m.pinned]
    candidates = [m for m in state.messages if not m.pinned]
    newest_tokens = candidates[-1].token_count if candidates else 0
    if sum(m.token_count for m in pinned) > limit:
        with pytest.raises(InvalidArgument) as exc:  # never a view missing a pinned message
            context_view(state, budget, max_tokens, count=COUNT_MSG)
        assert exc.value.field == "max_tokens"
        return
    refused: InvalidArgument | None = None
    try:
        view = context_view(state, budget, max_tokens, count=COUNT_MSG)
    except InvalidArgument as exc:  # nor one missing the newest turn (promise 3)
        refused = exc
    if refused is not None:
        assert refused.field == "max_tokens" and sum(m.token_count for m in pinned) + newest_tokens > limit
        return
    event("view omits messages" if view.omitted else "view keeps all")
    assert view.token_count == sum(m.token_count for m in view.messages)
    assert view.token_count <= limit == view.budget
    assert list(view.messages[: len(pinned)]) == pinned  # every pinned message, first, in order
    rest = view.messages[len(pinned) :]
    if rest and rest[0].kind is Kind.SUMMARY:
        assert rest[0].token_count <= budget.summary_cap
        rest = rest[1:]
    assert all(m.kind is Kind.MESSAGE and not m.pinned for m in rest)
    assert [m.seq for m in rest] == sorted(m.seq for m in rest)
    assert sum(m.token_count for m in rest) <= budget.recent_cap
    if budget.message_limit is not None:
        assert len(rest) <= budget.message_limit
    for priority, cap in budget.block_caps.items():
        assert sum(m.token_count for m in rest if m.effective_priority == priority) <= cap
    kept = {m.seq for m in rest}
    if candidates:  # the newest always stays (promise 3); the others follow the rule in what it leaves
        assert rest[-1].seq == candidates[-1].seq
        caps = dict(budget.block_caps)
        if candidates[-1].effective_priority in caps:
            caps[candidates[-1].effective_priority] -= rest[-1].token_count
        check_eviction_order(candidates[:-1], {m.seq for m in candidates} - kept, caps)
    assert view.omitted == len(candidates) - len(rest)


@PROFILE
@given(cases())
def test_flush_plan_invariants(case: tuple[MemoryResource, Budget, InstanceState]) -> None:
    res, budget, state = case
    plan = plan_flush(state, res, budget, COUNT, now_ms=99)
    event(f"{plan.strategy}: {'removes' if plan.remove_seqs else 'no-op'}")
    assert plan == plan_flush(state, res, budget, COUNT, now_ms=99)  # deterministic

    by_seq = {m.seq: m for m in state.messages}
    removed = set(plan.remove_seqs)
    assert list(plan.remove_seqs) == sorted(removed)
    assert removed <= set(by_seq)
    assert not any(by_seq[s].pinned for s in removed)
    assert plan.tokens_before == state.meta.token_count  # a summary may grow to its cap (promise 6)

    after = apply_plan(state, plan)
    assert after.meta.token_count == plan.tokens_after
    assert apply_plan(after, plan) == after  # idempotent
    assert [m for m in after.messages if m.pinned] == [m for m in state.messages if m.pinned]

    recent = [m for m in state.messages if not m.pinned]
    assert not recent or recent[-1].seq not in removed  # the newest stays (promise 3)
    if plan.summary is not None:
        assert plan.strategy == "hybrid_summary"
        assert plan.summary.token_count == (COUNT(plan.summary.content) if plan.summary.content else 0)
        assert plan.summary.token_count <= budget.summary_cap
        pct = res.flushing_strategy.summarize_oldest_percent
        n = min(len(recent) - 1, max(1, math.ceil(len(recent) * pct / 100 - 1e-9)))
        folded = recent[:n]  # the oldest, at least one, never the newest
        assert {m.seq for m in folded} <= removed
        earlier = state.summary.through_seq if state.summary else 0
        assert plan.summary.through_seq == max(max(removed), earlier)
        assert plan.summary.content  # everything removed was folded into it (promise 4)
    elif res.flushing_strategy.type == "fifo" and len(recent) > 1 and not removed >= {m.seq for m in recent[:-1]}:
        assert after.meta.token_count < budget.flush_at

    if after.meta.pinned_tokens + (recent[-1].token_count if recent else 0) <= budget.total:
        view = context_view(after, budget, count=COUNT_MSG)
        assert view.token_count <= budget.total


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(resources(), st.data())
def test_append_and_flush_cycles_stay_within_budget(res: MemoryResource, data: st.DataObject) -> None:
    """What the daemon does: append, flush when due, read; every read within budget."""
    budget = compute_budget(res, None)
    state = InstanceState(meta=InstanceMeta(), summary=None, messages=())
    pinned_seen: list[StoredMessage] = []
    for seq in range(1, data.draw(st.integers(1, 150), label="appends") + 1):
        role = data.draw(st.sampled_from(ROLES))
        ctype = data.draw(st.sampled_from(CONTENT_TYPES))
        prio = effective_priority(res, role, ctype, None)
        size = data.draw(st.integers(1, 80))
        if prio == 0 and state.meta.pinned_tokens + size > budget.pinned_cap:
            continue  # refused: RESOURCE_EXHAUSTED, nothing stored
        m = StoredMessage(seq=seq, id=str(seq), role=role, content=f"{role} says {seq} " * (size // 4 + 1),
                          content_type=ctype, priority=None, effective_priority=prio, token_count=size,
                          created_at_ms=seq)
        pinned_seen += [m] if m.pinned else []
        messages = (*state.messages, m)
        state = InstanceState(meta=recount(state.meta, messages, state.summary), summary=state.summary,
                              messages=messages)
        if needs_flush(state.meta, res, budget):
            plan = plan_flush(state, res, budget, COUNT, now_ms=seq)
            state = apply_plan(state, plan, now_ms=seq)
            assert state.meta.summary_tokens <= budget.summary_cap
        view = context_view(state, budget, count=COUNT_MSG)
        assert view.token_count <= budget.total
        assert [x for x in view.messages if x.pinned and x.kind is Kind.MESSAGE] == pinned_seen
