"""Every budget rule on small, hand-checked cases."""

from __future__ import annotations

import functools
from dataclasses import replace

import pytest

from memoryd import tokens
from memoryd.config.model import FlushingStrategy, MemoryResource, PriorityBlock, TokenAllocation
from memoryd.engine import (
    Budget,
    budget_problems,
    check_oversize,
    compute_budget,
    context_view,
    effective_priority,
    message_room,
    needs_flush,
    plan_flush,
    select_evictions,
    summarize,
)
from memoryd.engine.summarize import facts, salient, shorten
from memoryd.engine.view import cut_to
from memoryd.errors import (
    ConfigError,
    FailedPrecondition,
    InvalidArgument,
    PinnedTierFull,
    ResourceExhausted,
    Status,
)
from memoryd.keys import InstanceAddr
from memoryd.models import InstanceMeta, InstanceState, Kind, NewMessage, StoredMessage, Summary
from memoryd.store.embedded import EmbeddedStore
from tests.engine_apply import apply_plan, recount
from tests.promises import MARKER, named, unaccounted

COUNT = functools.partial(tokens.counter_for_model("gpt-4o").count_message, "system")


def msg(seq: int, tokens_: int, priority: int = 5, role: str = "user", content: str | None = None) -> StoredMessage:
    return StoredMessage(
        seq=seq, id=f"m{seq}", role=role, content=content if content is not None else f"message {seq}",
        content_type="text", priority=None, effective_priority=priority, token_count=tokens_,
        created_at_ms=1000 + seq,
    )


def state(*messages: StoredMessage, summary: Summary | None = None) -> InstanceState:
    return InstanceState(meta=recount(InstanceMeta(), messages, summary), summary=summary, messages=messages)


def resource(**kw: object) -> MemoryResource:
    kw.setdefault("max_tokens", 100)
    return MemoryResource(id="r", **kw)  # type: ignore[arg-type]


def budget_of(**kw: object) -> Budget:
    return compute_budget(resource(**kw), None)


def seqs(view_or_msgs: object) -> list[int]:
    return [m.seq for m in getattr(view_or_msgs, "messages", view_or_msgs)]  # type: ignore[attr-defined]


# -- effective priority ---------------------------------------------------------------

BLOCKS = (
    PriorityBlock(priority=1, content_types=("user_preference",)),
    PriorityBlock(priority=8, content_types=("tool_result", "text")),
    PriorityBlock(priority=3, content_types=("tool_result",)),
)


def test_explicit_priority_wins_over_everything() -> None:
    res = resource(priority_blocks=BLOCKS)
    assert effective_priority(res, "system", "user_preference", 7) == 7
    assert effective_priority(res, "user", "tool_result", 0) == 0


def test_content_type_then_role_then_default() -> None:
    res = resource(priority_blocks=BLOCKS, default_priority=6)
    assert effective_priority(res, "user", "user_preference", None) == 1
    assert effective_priority(res, "tool", "tool_result", None) == 3  # listed twice: the lower wins
    assert effective_priority(res, "system", "text", None) == 8  # a block beats the role
    assert effective_priority(res, "system", "other", None) == 0
    assert effective_priority(res, "assistant", "other", None) == 6


def test_empty_content_type_is_text() -> None:
    res = resource(priority_blocks=BLOCKS)
    assert effective_priority(res, "user", "", None) == 8


def test_negative_priority_is_invalid() -> None:
    with pytest.raises(InvalidArgument) as exc:
        effective_priority(resource(), "user", "text", -1)
    assert exc.value.field == "priority"


# -- budget arithmetic ---------------------------------------------------------------


def test_budget_from_max_tokens_without_allocation() -> None:
    b = compute_budget(resource(max_tokens=1000), None)
    # no explicit pinned cap: B - summary cap - MIN_RECENT_TOKENS (promise 2)
    assert (b.total, b.pinned_cap, b.summary_cap, b.recent_cap, b.flush_at) == (1000, 436, 500, 1000, 800)
    assert dict(b.block_caps) == {}
    assert b.message_limit is None


def test_budget_from_context_ratio() -> None:
    res = resource(max_tokens=None, max_context_ratio=0.333, model="gpt-4")
    assert compute_budget(res, tokens.context_window("gpt-4")).total == 2727  # floor(0.333 * 8192)
    with pytest.raises(ConfigError, match="context window"):
        compute_budget(res, None)
    with pytest.raises(ConfigError, match="max_tokens or max_context_ratio"):
        compute_budget(resource(max_tokens=None), 8192)


def test_allocation_shares_floor_and_never_exceed_the_total() -> None:
    alloc = TokenAllocation(system=0.29, short_term=0.42, long_term=0.29)
    b = compute_budget(resource(max_tokens=101, token_allocation=alloc), None)
    assert (b.pinned_cap, b.recent_cap, b.summary_cap) == (29, 42, 29)
    b = compute_budget(resource(max_tokens=100, token_allocation=alloc), None)
    assert (b.pinned_cap, b.recent_cap, b.summary_cap) == (29, 42, 29)  # 0.29*100 is 28.999…


def test_pinned_cap_is_the_lower_of_block_and_ratio() -> None:
    alloc = TokenAllocation(system=0.2, short_term=0.6, long_term=0.2)
    block0 = (PriorityBlock(priority=0, content_types=("policy",), max_tokens=150),)
    assert budget_of(max_tokens=1000, token_allocation=alloc, priority_blocks=block0).pinned_cap == 150
    block0 = (PriorityBlock(priority=0, content_types=("policy",), max_tokens=300),)
    assert budget_of(max_tokens=1000, token_allocation=alloc, priority_blocks=block0).pinned_cap == 200
    assert compute_budget(resource(max_tokens=1000, priority_blocks=block0), None).pinned_cap == 300
    big = (PriorityBlock(priority=0, content_types=("policy",), max_tokens=5000),)
    assert compute_budget(resource(max_tokens=1000, priority_blocks=big), None).pinned_cap == 1000


def test_summary_cap_is_the_lower_of_summary_tokens_and_long_term() -> None:
    alloc = TokenAllocation(system=0.1, short_term=0.6, long_term=0.3)
    small = FlushingStrategy(summary_tokens=200)
    large = FlushingStrategy(summary_tokens=900)
    assert budget_of(max_tokens=1000, token_allocation=alloc, flushing_strategy=small).summary_cap == 200
    assert budget_of(max_tokens=1000, token_allocation=alloc, flushing_strategy=large).summary_cap == 300
    assert compute_budget(resource(max_tokens=100, flushing_strategy=large), None).summary_cap == 100


def test_block_caps_are_bounded_by_the_recent_ratio() -> None:
    alloc = TokenAllocation(system=0.1, short_term=0.5, long_term=0.4)
    blocks = (
        PriorityBlock(priority=3, content_types=("a",), max_tokens=200),
        PriorityBlock(priority=4, content_types=("b",), max_tokens=800),
        PriorityBlock(priority=6, content_types=("c",)),
        PriorityBlock(priority=3, content_types=("d",), max_tokens=120),
    )
    b = compute_budget(resource(max_tokens=1000, token_allocation=alloc, priority_blocks=blocks), None)
    assert dict(b.block_caps) == {3: 120, 4: 500}


def test_flush_threshold_rounds_up() -> None:
    res = resource(max_tokens=999, flushing_strategy=FlushingStrategy(summarize_threshold=0.75))
    assert compute_budget(res, None).flush_at == 750  # ceil(749.25)


async def test_pinned_cap_boundary_for_resource_exhausted() -> None:
    """The cap the budget computes is the one the store enforces (the manager passes
    ``budget.pinned_cap`` with every append): exactly at the cap is allowed, one more is not."""
    block0 = (PriorityBlock(priority=0, content_types=("policy",), max_tokens=40),)
    b = compute_budget(resource(priority_blocks=block0), None)
    assert b.pinned_cap == 40
    store, addr = EmbeddedStore(), InstanceAddr("p", "r", "k")

    def pinned(tokens: int) -> NewMessage:
        return NewMessage("system", "policy", "policy", 0, 0, tokens)

    await store.append(addr, [pinned(30)], pinned_cap=b.pinned_cap)
    await store.append(addr, [pinned(10)], pinned_cap=b.pinned_cap)  # exactly at the cap
    with pytest.raises(PinnedTierFull) as exc:
        await store.append(addr, [pinned(1)], pinned_cap=b.pinned_cap)
    assert exc.value.status is Status.RESOURCE_EXHAUSTED
    assert "40" in exc.value.message


# -- the eviction rule -----------------------------------------------------------------


def test_eviction_takes_highest_priority_number_first_then_oldest() -> None:
    msgs = [msg(1, 10, 2), msg(2, 10, 9), msg(3, 10, 5), msg(4, 10, 9), msg(5, 10, 2)]
    assert select_evictions(msgs, room=50, block_caps={}, message_limit=None) == set()
    assert select_evictions(msgs, room=40, block_caps={}, message_limit=None) == {2}
    assert select_evictions(msgs, room=30, block_caps={}, message_limit=None) == {2, 4}
    assert select_evictions(msgs, room=20, block_caps={}, message_limit=None) == {2, 3, 4}
    assert select_evictions(msgs, room=10, block_caps={}, message_limit=None) == {1, 2, 3, 4}
    assert select_evictions(msgs, room=0, block_caps={}, message_limit=None) == {1, 2, 3, 4, 5}


def test_block_cap_evicts_oldest_of_its_own_priority() -> None:
    msgs = [msg(1, 10, 2), msg(2, 10, 9), msg(3, 10, 2), msg(4, 10, 2)]
    # priority 2 may hold 20 tokens: its oldest goes, although priority 9 is still there
    assert select_evictions(msgs, room=100, block_caps={2: 20}, message_limit=None) == {1}
    assert select_evictions(msgs, room=100, block_caps={2: 5}, message_limit=None) == {1, 3, 4}


def test_message_limit() -> None:
    msgs = [msg(1, 1, 3), msg(2, 1, 4), msg(3, 1, 3), msg(4, 1, 4)]
    assert select_evictions(msgs, room=100, block_caps={}, message_limit=3) == {2}
    assert select_evictions(msgs, room=100, block_caps={}, message_limit=1) == {1, 2, 4}


# -- the context view ------------------------------------------------------------------


def test_view_order_pinned_summary_recent() -> None:
    summ = Summary(content="Summary of earlier conversation", token_count=8, through_seq=3, updated_at_ms=77)
    st = state(msg(1, 10, 0, "system"), msg(4, 10), msg(5, 10, 0, "system"), msg(6, 10), summary=summ)
    v = context_view(st, compute_budget(resource(), None))
    assert seqs(v) == [1, 5, 3, 4, 6]
    s = v.messages[2]
    assert (s.kind, s.role, s.id, s.content_type) == (Kind.SUMMARY, "system", "summary-3", "summary")
    assert (s.created_at_ms, s.content) == (77, summ.content)
    assert (v.token_count, v.pinned_tokens, v.summary_tokens, v.omitted, v.budget) == (48, 20, 8, 0, 100)


def test_view_keeps_newest_within_budget_and_reports_omissions() -> None:
    st = state(msg(1, 20, 0, "system"), *[msg(i, 20) for i in range(2, 8)])
    v = context_view(st, compute_budget(resource(), None))
    assert seqs(v) == [1, 4, 5, 6, 7]
    assert (v.token_count, v.omitted) == (100, 2)


def test_view_applies_smaller_caller_budget() -> None:
    st = state(msg(1, 20, 0, "system"), *[msg(i, 20) for i in range(2, 8)])
    b = compute_budget(resource(), None)
    assert seqs(context_view(st, b, max_tokens=60)) == [1, 6, 7]
    assert seqs(context_view(st, b, max_tokens=500)) == [1, 4, 5, 6, 7]  # never more than B
    assert seqs(context_view(st, b, max_tokens=0)) == [1, 4, 5, 6, 7]  # 0: the resource's budget


def test_view_refuses_a_caller_budget_below_the_pinned_tokens() -> None:
    st = state(msg(1, 30, 0, "system"), msg(2, 30, 0, "system"), msg(3, 5))
    b = compute_budget(resource(), None)
    with pytest.raises(InvalidArgument) as exc:  # pinned + the newest turn (promise 3)
        context_view(st, b, max_tokens=64)
    assert exc.value.field == "max_tokens"
    assert seqs(context_view(st, b, max_tokens=65)) == [1, 2, 3]


def test_view_refuses_pinned_over_a_shrunken_budget() -> None:
    st = state(msg(1, 80, 0, "system"), msg(2, 30, 0, "system"))
    with pytest.raises(FailedPrecondition, match="110 tokens"):
        context_view(st, compute_budget(resource(), None))


def test_view_leaves_out_a_summary_that_does_not_fit() -> None:
    summ = Summary(content="Summary …", token_count=30, through_seq=1, updated_at_ms=0)
    st = state(msg(2, 50, 0, "system"), msg(3, 10), summary=summ)
    b = compute_budget(resource(), None)
    assert seqs(context_view(st, b)) == [2, 1, 3]
    assert seqs(context_view(st, b, max_tokens=70)) == [2, 3]
    small = compute_budget(resource(flushing_strategy=FlushingStrategy(summary_tokens=20)), None)
    assert seqs(context_view(st, small)) == [2, 3]  # over its (reconfigured) cap
    empty = replace(summ, content="", token_count=0)
    assert seqs(context_view(state(msg(3, 10), summary=empty), b)) == [3]


def test_view_recent_tier_bounded_by_short_term_ratio() -> None:
    alloc = TokenAllocation(system=0.3, short_term=0.4, long_term=0.3)
    st = state(*[msg(i, 10) for i in range(1, 8)])
    v = context_view(st, compute_budget(resource(token_allocation=alloc), None))
    assert seqs(v) == [4, 5, 6, 7]  # 40 tokens, although 70 would fit B


def test_view_block_cap_and_ratio_lower_wins() -> None:
    alloc = TokenAllocation(system=0.2, short_term=0.5, long_term=0.3)
    blocks = (PriorityBlock(priority=7, content_types=("tool_result",), max_tokens=25),)
    st = state(msg(1, 10, 7), msg(2, 10, 7), msg(3, 10, 3), msg(4, 10, 7), msg(5, 10, 3))
    b = compute_budget(resource(token_allocation=alloc, priority_blocks=blocks), None)
    assert seqs(context_view(st, b)) == [2, 3, 4, 5]  # block: 20 of priority 7; tier: 50
    wide = (PriorityBlock(priority=7, content_types=("tool_result",), max_tokens=90),)
    tight = TokenAllocation(system=0.6, short_term=0.3, long_term=0.1)
    b = compute_budget(resource(token_allocation=tight, priority_blocks=wide), None)
    assert seqs(context_view(st, b)) == [3, 4, 5]  # the ratio (30) is lower than the block (90)


def test_view_message_limit_counts_only_non_pinned() -> None:
    st = state(msg(1, 1, 0, "system"), msg(2, 1), msg(3, 1), msg(4, 1, 0, "system"), msg(5, 1))
    v = context_view(st, compute_budget(resource(message_limit=2), None))
    assert seqs(v) == [1, 4, 3, 5]


# -- flushing -------------------------------------------------------------------------


def test_needs_flush() -> None:
    b = compute_budget(resource(max_tokens=100, message_limit=10), None)
    res = resource()
    assert not needs_flush(InstanceMeta(recent_tokens=79, message_count=5), res, b)
    assert needs_flush(InstanceMeta(recent_tokens=79, summary_tokens=1, message_count=5), res, b)
    assert needs_flush(InstanceMeta(recent_tokens=5, message_count=11), res, b)
    assert not needs_flush(InstanceMeta(pinned_tokens=100, message_count=11), res, b)  # nothing to flush
    alloc = TokenAllocation(system=0.2, short_term=0.5, long_term=0.3)
    b = compute_budget(resource(token_allocation=alloc), None)
    assert needs_flush(InstanceMeta(recent_tokens=51), res, b)
    assert not needs_flush(InstanceMeta(recent_tokens=50), res, b)


def test_hybrid_folds_the_oldest_percent_into_the_summary() -> None:
    res = resource(max_tokens=1000)
    b = compute_budget(res, None)
    msgs = [msg(1, 10, 0, "system", "You are terse.")] + [
        msg(i, 50, 5, "user" if i % 2 else "assistant", f"turn {i}") for i in range(2, 12)
    ]
    plan = plan_flush(state(*msgs), res, b, COUNT, now_ms=5000)
    assert plan.strategy == "hybrid_summary"
    assert plan.remove_seqs == (2, 3, 4)  # ceil(30% of 10)
    assert plan.summary is not None
    assert plan.summary.content == (
        "Summary of earlier conversation (through message #4):\n"
        "- assistant #2: turn 2\n- user #3: turn 3\n- assistant #4: turn 4"
    )
    assert plan.summary.token_count == COUNT(plan.summary.content)
    assert (plan.summary.through_seq, plan.summary.updated_at_ms) == (4, 5000)
    assert plan.tokens_before == 510
    assert plan.tokens_after == 10 + plan.summary.token_count + 350


def test_hybrid_folds_at_least_one_and_never_pinned() -> None:
    res = resource(max_tokens=1000, flushing_strategy=FlushingStrategy(summarize_oldest_percent=1))
    st = state(msg(1, 10, 0, "system"), msg(2, 60), msg(3, 10, 0, "system"), msg(4, 60))
    plan = plan_flush(st, res, compute_budget(res, None), COUNT, now_ms=0)
    assert plan.remove_seqs == (2,)


def test_hybrid_summary_may_use_its_cap_and_never_folds_the_newest() -> None:
    res = resource(max_tokens=1000)
    st = state(msg(1, 5, 5, "user", "hi"), msg(2, 5, 5, "user", "yo"))
    plan = plan_flush(st, res, compute_budget(res, None), COUNT, now_ms=0)
    assert plan.summary is not None and plan.remove_seqs == (1,)
    # longer than the 5 tokens it folded (the old "never grows the total" rule left a bare header)
    assert plan.summary.content == "Summary of earlier conversation (through message #1):\n- user #1: hi"
    alone = plan_flush(state(msg(2, 5)), res, compute_budget(res, None), COUNT, now_ms=0)
    assert (alone.remove_seqs, alone.summary) == ((), None)


def test_hybrid_also_evicts_what_the_caps_require() -> None:
    blocks = (PriorityBlock(priority=7, content_types=("tool_result",), max_tokens=20),)
    res = resource(max_tokens=1000, priority_blocks=blocks, message_limit=4)
    msgs = [msg(1, 10), msg(2, 10, 7), msg(3, 10, 7), msg(4, 10, 7), msg(5, 10), msg(6, 10), msg(7, 10), msg(8, 10)]
    plan = plan_flush(state(*msgs), res, compute_budget(res, None), COUNT, now_ms=0)
    # fold 1, 2, 3 (ceil 30% of 8); then block 7 keeps 4; limit 4 of (4,5,6,7,8): drop 4 (p7)
    assert plan.remove_seqs == (1, 2, 3, 4)


def test_hybrid_carries_the_earlier_summary() -> None:
    res = resource(max_tokens=1000)
    b = compute_budget(res, None)
    first = plan_flush(state(*[msg(i, 20, content=f"turn {i}") for i in range(1, 5)]), res, b, COUNT, now_ms=1)
    st = apply_plan(state(*[msg(i, 20, content=f"turn {i}") for i in range(1, 9)]), first)
    second = plan_flush(st, res, b, COUNT, now_ms=2)
    assert second.summary is not None
    assert second.summary.content == (
        "Summary of earlier conversation (through message #4):\n"
        "- user #1: turn 1\n- user #2: turn 2\n- user #3: turn 3\n- user #4: turn 4"
    )
    assert second.remove_seqs == (3, 4)
    assert second.summary.through_seq == 4


def test_fifo_evicts_by_priority_then_age_below_the_threshold() -> None:
    res = resource(max_tokens=100, flushing_strategy=FlushingStrategy(type="fifo"))
    msgs = [msg(1, 10, 0, "system"), msg(2, 20, 3), msg(3, 20, 6), msg(4, 20, 3), msg(5, 20, 6)]
    plan = plan_flush(state(*msgs), res, compute_budget(res, None), COUNT, now_ms=0)
    assert plan.strategy == "fifo"
    assert plan.summary is None
    assert plan.remove_seqs == (3,)  # 90 -> 70 (< 80): the oldest of the highest number
    assert (plan.tokens_before, plan.tokens_after) == (90, 70)
    res = replace(res, flushing_strategy=FlushingStrategy(type="fifo", summarize_threshold=0.6))
    plan = plan_flush(state(*msgs), res, compute_budget(res, None), COUNT, now_ms=0)
    assert plan.remove_seqs == (2, 3)  # 90 -> 50 (< 60); the newest (#5) stays, then priority 6 before 3
    assert (plan.tokens_before, plan.tokens_after) == (90, 50)


def test_fifo_message_limit_has_hysteresis() -> None:
    res = resource(max_tokens=1000, message_limit=10, flushing_strategy=FlushingStrategy(type="fifo"))
    plan = plan_flush(state(*[msg(i, 1) for i in range(1, 12)]), res, compute_budget(res, None), COUNT, now_ms=0)
    assert plan.remove_seqs == (1, 2, 3)  # down to 8 = 0.8 x 10


def test_no_recent_messages_no_plan() -> None:
    for kind in ("hybrid_summary", "fifo"):
        res = resource(flushing_strategy=FlushingStrategy(type=kind))  # type: ignore[arg-type]
        plan = plan_flush(state(msg(1, 90, 0, "system")), res, compute_budget(res, None), COUNT, now_ms=0)
        assert (plan.remove_seqs, plan.summary, plan.tokens_after) == ((), None, 90)


def test_apply_plan_recounts_and_is_idempotent() -> None:
    res = resource(max_tokens=200, flushing_strategy=FlushingStrategy(summary_tokens=64))
    st = state(msg(1, 10, 0, "system"), *[msg(i, 30) for i in range(2, 8)])
    plan = plan_flush(st, res, compute_budget(res, None), COUNT, now_ms=42)
    once = apply_plan(st, plan)
    assert seqs(once.messages) == [1, 4, 5, 6, 7]
    assert once.summary == plan.summary
    assert once.meta.token_count == plan.tokens_after
    assert (once.meta.message_count, once.meta.pinned_tokens, once.meta.recent_tokens) == (5, 10, 120)
    assert (once.meta.flush_count, once.meta.last_flush_at_ms, once.meta.last_seq) == (1, 42, 7)
    assert apply_plan(once, plan) == once


# -- the summariser -------------------------------------------------------------------


def test_summary_cut_to_its_cap_compresses_the_oldest_and_names_every_message() -> None:
    span = [msg(i, 0, content=f"message number {i} " + "word " * 30) for i in range(10, 40)]
    text = summarize(None, span, 120, COUNT)
    assert COUNT(text) <= 120
    lines = text.split("\n")
    assert lines[0] == "Summary of earlier conversation (through message #39):"
    assert lines[1].startswith("- (… messages #10–#")  # the oldest merged into one omission line
    assert lines[-1].startswith("- user #39: message number 39")  # the newest folded stays an entry
    assert not unaccounted(set(range(10, 40)), set(), text)
    assert summarize(None, span, 120, COUNT) == text


def test_summary_keeps_the_beginning_of_the_earlier_summary() -> None:
    earlier = "Summary of earlier conversation (through message #9):\n- user #1: the original task " + "x " * 300
    span = [msg(i, 0, content=f"later {i}") for i in range(10, 13)]
    text = summarize(earlier, span, 100, COUNT)
    assert COUNT(text) <= 100
    assert text.split("\n")[1].startswith("- user #1: the original task")
    assert text.endswith("- user #12: later 12")


def test_summary_whitespace_collapsed_to_one_line_per_message() -> None:
    text = summarize(None, [msg(3, 0, content="a\n\n  b\tc  ")], 100, COUNT)
    assert text == "Summary of earlier conversation (through message #3):\n- user #3: a b c"


def test_summary_too_small_cap() -> None:
    assert summarize(None, [msg(1, 0)], 5, COUNT) == ""
    assert summarize(None, [msg(1, 0)], 0, COUNT) == ""
    with pytest.raises(ValueError, match="at least one"):
        summarize(None, [], 100, COUNT)


# -- the context promises: the new rules (docs/tokens-and-budget.md) ----------------------

COUNT_MSG = tokens.counter_for_model("gpt-4o").count_message


def test_facts_are_found_in_text() -> None:
    text = ("Hi, my order ORD-48213 and invoice INV-2026-007 went to 221 Baker Street. Call +44 20 7946 0958 "
            "or mail dana.w@example.com, see https://shop.example.com/o/1; I paid $149.90 on 2026-03-02, "
            "and my colleague Alice Moreau agreed.")
    assert facts(text) == ("ORD-48213", "INV-2026-007", "221 Baker Street", "+44 20 7946 0958",
                           "dana.w@example.com", "https://shop.example.com/o/1", "$149.90", "2026-03-02",
                           "Alice Moreau")
    assert facts("Thanks, that makes sense, I will think about it.") == ()


def test_salient_span_prefers_facts_and_shortening_keeps_them() -> None:
    text = ("Hello there, I hope you are well and having a nice day. My order ORD-48213 never arrived. "
            "Thanks so much for your patience with me today.")
    assert salient(text, 60) == "My order ORD-48213 never arrived."
    short = shorten("I see, and is there anything else you need? It goes to 12 Baker Street and "
                    "the phone is +44 20 7946 0958 today.", 60)
    assert len(short) <= 60 and "12 Baker Street" in short and "+44 20 7946 0958" in short


def test_shrinking_merges_the_oldest_into_an_omission_line_with_their_facts() -> None:
    span = [msg(i, 0, content=f"Filler words here and there. Order ORD-{1000 + i} is late.") for i in range(1, 31)]
    text = summarize(None, span, 120, COUNT)
    lines = text.split("\n")
    assert COUNT(text) <= 120 and lines[1].startswith("- (… messages #1–#")
    entries, ranges = named(text)
    assert ranges[0][0] == 1 and max(entries) == 30 and not unaccounted(set(range(1, 31)), set(), text)
    assert "ORD-1001" in lines[1]  # the oldest facts are kept in the omission line


def test_an_earlier_summary_in_another_format_stands_for_everything_it_covered() -> None:
    earlier = "Summary of earlier conversation (through message #9):\nThe user wants a refund for ORD-7."
    text = summarize(earlier, [msg(10, 0, content="later turn")], 200, COUNT)
    assert text.split("\n")[1] == "- (… messages #1–#9 omitted: The user wants a refund for ORD-7. …)"
    assert text.endswith("- user #10: later turn") and not unaccounted(set(range(1, 11)), set(), text)
    tiny = summarize(earlier + " " + "blah " * 200, [msg(10, 0, content="later turn " * 40)], 64, COUNT)
    assert COUNT(tiny) <= 64 and not unaccounted(set(range(1, 11)), set(), tiny)  # "#1–#10 omitted"


def test_a_huge_fold_names_every_message() -> None:
    span = [msg(i, 0, content=f"turn {i}: parcel P-{i} moved") for i in range(1, 3001)]
    text = summarize(None, span, 200, COUNT)
    assert COUNT(text) <= 200 and not unaccounted(set(range(1, 3001)), set(), text)
    assert text.split("\n")[-1] == "- user #3000: turn 3000: parcel P-3000 moved"


def test_newest_message_cut_to_its_room_keeps_its_beginning_and_end() -> None:
    big = "BEGIN " + "lorem " * 2000 + "END"
    st = state(msg(1, 10, 0, "system", "rules"), msg(2, 5, content="hello"),
               msg(3, COUNT_MSG("user", big), content=big))
    b = budget_of(max_tokens=1000, flushing_strategy=FlushingStrategy(summary_tokens=64))
    view = context_view(st, b, count=COUNT_MSG)
    shown = view.messages[-1]
    assert seqs(view) == [1, 3] and view.token_count <= 1000 and shown.token_count == COUNT_MSG("user", shown.content)
    assert shown.content.startswith("BEGIN lorem") and shown.content.endswith("lorem END")
    elided = int(MARKER.search(shown.content).group(1))  # type: ignore[union-attr]
    assert abs(elided - (st.messages[2].token_count - shown.token_count)) < 40
    assert cut_to(st.messages[2], 20, COUNT_MSG) is None  # not even the marker fits
    assert context_view(st, b, max_tokens=60, count=COUNT_MSG).messages[-1].seq == 3  # the caller's limit
    with pytest.raises(InvalidArgument, match="newest turn"):
        context_view(st, b, max_tokens=30, count=COUNT_MSG)


def test_oversize_reject_names_the_message_its_tokens_and_the_room() -> None:
    b = budget_of(max_tokens=1000, flushing_strategy=FlushingStrategy(summary_tokens=300))
    assert message_room(b, 5, 100) == 600
    check_oversize(b, [(0, 5, 600), (1, 0, 50)], 50)  # the pinned one is not its business
    with pytest.raises(ResourceExhausted, match=r"messages\[1\]: 601 tokens, more than the 600 tokens"):
        check_oversize(b, [(0, 5, 10), (1, 5, 601)], 100)
    with pytest.raises(ResourceExhausted, match=r"messages\[0\]: 560 tokens, more than the 550"):
        check_oversize(b, [(0, 5, 560), (1, 0, 50)], 100)  # pinned in the same batch count


def test_budget_problems_name_the_field() -> None:
    def fields(**kw: object) -> list[tuple[str, ...]]:
        return [f for f, _why in budget_problems(resource(**kw), None)]
    assert fields(max_tokens=8000) == []
    assert fields(max_tokens=8000, flushing_strategy=FlushingStrategy(summary_tokens=12)) \
        == [("flushing_strategy", "summary_tokens")]
    assert fields(max_tokens=8000, flushing_strategy=FlushingStrategy(type="fifo", summary_tokens=12)) == []
    assert fields(max_tokens=560) == [("flushing_strategy", "summary_tokens")]
    pinned = (PriorityBlock(0, ("policy",), 7500),)
    assert fields(max_tokens=8000, priority_blocks=pinned) == [("priority_blocks[0]", "max_tokens")]


@pytest.mark.parametrize("cap", [200, 500])
def test_fact_retention_meets_the_target(cap: int) -> None:
    """Promise 6, measured as in bench/README.md: early facts survive many folds (≥ 80 % at 500 tokens)."""
    from bench.bench_engine import fact_retention

    folds, kept, total, summary_tokens, _times = fact_retention(cap)
    assert folds >= 10 and summary_tokens <= cap
    assert kept / total >= 0.8
