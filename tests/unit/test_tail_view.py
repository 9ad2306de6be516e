"""The view from the newest end is the view of the whole instance (engine/tail.py).

For random instances (pinned messages, one or several priorities, block caps, message_limit,
summaries, zero-token and oversized messages, tool-call groups) and EVERY suffix of their
non-pinned messages: whenever ``view_from_tail`` answers, its answer equals ``context_view``
of the whole state, ``omitted`` included, and when the whole view raises, so does it. And the
fast path is not vacuous: with one priority and no groups, the suffix the stores return
(``tail_state``'s stopping rule) always decides.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from memoryd.config.model import FlushingStrategy, MemoryResource, PriorityBlock
from memoryd.engine import compute_budget, context_view, may_decide, view_from_tail
from memoryd.engine.budget import Budget
from memoryd.errors import MemorydError
from memoryd.models import (
    PINNED_PRIORITY,
    InstanceMeta,
    InstanceState,
    StoredMessage,
    Summary,
    TailState,
    ToolCall,
)
from memoryd.tokens import counter_for_model


@st.composite
def budgets(draw: st.DrawFn) -> Budget:
    blocks = draw(st.lists(st.builds(PriorityBlock, priority=st.sampled_from([3, 5]), content_types=st.just(("t",)),
                                     max_tokens=st.integers(64, 400)), max_size=2))
    res = MemoryResource(
        id="r", max_tokens=draw(st.integers(300, 1500)),
        message_limit=draw(st.one_of(st.none(), st.integers(1, 12))),
        priority_blocks=tuple(blocks),
        flushing_strategy=FlushingStrategy(summary_tokens=draw(st.integers(64, 150))),
    )
    return compute_budget(res, None)


@st.composite
def instances(draw: st.DrawFn, one_priority: bool = False, groups: bool = True) -> InstanceState:
    n = draw(st.integers(1, 40))
    levels = [5] if one_priority else draw(st.sampled_from([[5], [5], [3, 5], [3, 5, 7]]))
    out: list[StoredMessage] = []
    open_calls: list[str] = []
    for seq in range(1, n + 1):
        prio = PINNED_PRIORITY if draw(st.integers(0, 9)) == 0 else draw(st.sampled_from(levels))
        tokens = draw(st.one_of(st.integers(0, 60), st.integers(0, 60), st.integers(100, 900)))
        role, calls, answers = "user", (), ""
        kind = draw(st.integers(0, 5)) if groups else 0
        if kind == 1:
            role = "assistant"
            calls = tuple(ToolCall(f"c{seq}-{i}", "f", "{}") for i in range(draw(st.integers(1, 3))))
            open_calls.extend(c.id for c in calls)
        elif kind >= 4 and open_calls:
            role, answers = "tool", open_calls.pop(draw(st.integers(0, len(open_calls) - 1)))
        out.append(StoredMessage(seq=seq, id=f"m{seq}", role=role, content="w " * max(0, tokens - 4),
                                 content_type="text", priority=prio, effective_priority=prio, token_count=tokens,
                                 created_at_ms=seq, tool_calls=calls, tool_call_id=answers))
    summary = draw(st.one_of(st.none(), st.builds(lambda t: Summary("s " * t, t, 0, 1), st.integers(1, 150))))
    return InstanceState(meta=InstanceMeta(message_count=n), summary=summary, messages=tuple(out))


def tail_of(state: InstanceState, k: int) -> TailState:
    pinned = tuple(m for m in state.messages if m.effective_priority == PINNED_PRIORITY)
    recent = [m for m in state.messages if m.effective_priority != PINNED_PRIORITY]
    counts: dict[int, int] = {}
    for m in recent:
        counts[m.effective_priority] = counts.get(m.effective_priority, 0) + 1
    return TailState(state.meta, state.summary, pinned, tuple(recent[len(recent) - k:]) if k else (), counts)


def outcome(fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except MemorydError as exc:
        return (type(exc), str(exc))


@settings(max_examples=250, deadline=None)
@given(state=instances(), budget=budgets(), max_tokens=st.one_of(st.none(), st.integers(40, 1500)))
def test_every_answer_from_a_suffix_is_the_whole_view(state: InstanceState, budget: Budget, max_tokens: int) -> None:
    whole = outcome(context_view, state, budget, max_tokens)
    n_recent = sum(1 for m in state.messages if m.effective_priority != PINNED_PRIORITY)
    for k in range(1, n_recent + 1):
        tail = tail_of(state, k)
        got = outcome(view_from_tail, tail, budget, max_tokens)
        if got is not None:  # None is always allowed: the manager reads further, or the whole
            assert got == whole, f"suffix of {k} of {n_recent}"
        if k == n_recent:
            assert got == whole  # the whole suffix always decides


def store_suffix(state: InstanceState, budget: Budget, max_tokens: int | None) -> int:
    """How many non-pinned messages ``tail_state`` returns for the manager's first ask."""
    limit = budget.total if not max_tokens else min(budget.total, max_tokens)
    min_tokens = min(budget.recent_cap, limit)
    min_messages = -1 if budget.message_limit is None else budget.message_limit
    recent = [m for m in state.messages if m.effective_priority != PINNED_PRIORITY]
    k, older = 0, 0
    for m in reversed(recent):
        if k:
            older += m.token_count
        k += 1
        if older > min_tokens or 0 <= min_messages < k:
            break
    return k


@settings(max_examples=150, deadline=None)
@given(state=instances(one_priority=True, groups=False), budget=budgets(),
       max_tokens=st.one_of(st.none(), st.integers(40, 1500)))
def test_one_priority_without_groups_is_decided_by_the_first_tail(
    state: InstanceState, budget: Budget, max_tokens: int
) -> None:
    whole = outcome(context_view, state, budget, max_tokens)
    tail = tail_of(state, store_suffix(state, budget, max_tokens))
    assert may_decide(tail)
    assert outcome(view_from_tail, tail, budget, max_tokens) == whole


def test_a_collapsed_newest_group_does_not_pass_for_a_left_out_message() -> None:
    """Six parallel calls with huge results in a small room: the newest group is shown
    collapsed into one message. A suffix holding just that group must not decide the view
    (an older message may still fit), although the view shows fewer messages than the
    suffix holds (the regression: a count of shown messages took that for "left out")."""
    counter = counter_for_model(None)

    def msg(seq: int, role: str, content: str, **kw: Any) -> StoredMessage:
        return StoredMessage(seq=seq, id=f"m{seq}", role=role, content=content, content_type="text", priority=None,
                             effective_priority=5, token_count=0 if seq == 1 else counter.count_message(role, content),
                             created_at_ms=seq, **kw)

    calls = tuple(ToolCall(f"c{i}", "get_order", '{"id": "A-1"}') for i in range(6))
    messages = (msg(1, "user", "hi"), msg(2, "assistant", "", tool_calls=calls),
                *(msg(3 + i, "tool", "x " * 3000, tool_call_id=f"c{i}") for i in range(6)))
    budget = Budget(total=50, pinned_cap=0, summary_cap=0, recent_cap=50, block_caps={}, message_limit=None,
                    flush_at=50)
    state = InstanceState(InstanceMeta(message_count=len(messages)), None, messages)
    whole = context_view(state, budget, None, "system", counter.count_message)
    assert whole.messages[0].seq == 1 and len(whole.messages) == 2  # the older one + the collapsed group
    tail = TailState(state.meta, None, (), messages[1:], {5: len(messages)})
    assert view_from_tail(tail, budget, None, "system", counter.count_message) is None
