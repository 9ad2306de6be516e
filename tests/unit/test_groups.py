"""Tool-call groups in the pure engine, and promise 8: every CONTEXT view converts to a
history OpenAI Chat Completions and Anthropic Messages accept (tests/provider_rules.py
states their rules and sources).

The oracle here builds units on its own (``oracle_units``) and applies the eviction rule
one unit at a time (``reference_evictions``); the converters are checked not to hide an
engine bug: a view must never need them to drop a result or invent an answer for a call
whose result is stored."""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from memoryd_client import to_anthropic, to_openai
from memoryd_client.formats import NO_RESULT

from memoryd import tokens
from memoryd.config.model import FlushingStrategy, MemoryResource, PriorityBlock, TokenAllocation
from memoryd.convert import message_to_pb
from memoryd.engine import Budget, ContextView, budget_problems, compute_budget, context_view, plan_flush, summarize
from memoryd.engine.evict import select_kept_units
from memoryd.engine.groups import build_units, members, size
from memoryd.engine.view import newest_room
from memoryd.errors import FailedPrecondition, InvalidArgument
from memoryd.models import InstanceMeta, InstanceState, Kind, StoredMessage, ToolCall
from tests.engine_apply import apply_plan, recount
from tests.promises import MARKER, is_cut_of, named, unaccounted
from tests.provider_rules import ProviderRuleError, validate_anthropic, validate_openai
from tests.unit.test_engine_properties import reference_evictions

COUNT_MSG = tokens.counter_for_model("gpt-4o").count_message
COUNT = functools.partial(COUNT_MSG, "system")
WORDS = ("order", "A-4821", "bob@example.com", "12 Baker Street", "$19.99", "shipped", "the", "你好", "🙂",
         "→", "ok", "\n", "lorem")


def call_cost(calls: Sequence[ToolCall]) -> int:
    """What the test charges for calls (the real formula is the counter's business): name,
    arguments and a per-call overhead, so that a cut must leave them whole."""
    return sum(COUNT_MSG("", c.name) + COUNT_MSG("", c.arguments) for c in calls)


def make(seq: int, role: str, content: str, priority: int = 5, *, calls: Sequence[ToolCall] = (),
         answers: str = "", tokens_: int | None = None) -> StoredMessage:
    return StoredMessage(
        seq=seq, id=f"m{seq}", role=role, content=content, content_type="text", priority=None,
        effective_priority=priority,
        token_count=tokens_ if tokens_ is not None else COUNT_MSG(role, content) + call_cost(calls),
        created_at_ms=seq, tool_calls=tuple(calls), tool_call_id=answers,
    )


def state_of(*messages: StoredMessage) -> InstanceState:
    return InstanceState(meta=recount(InstanceMeta(), messages, None), summary=None, messages=messages)


def budget_of(**kw: object) -> Budget:
    kw.setdefault("max_tokens", 1000)
    return compute_budget(MemoryResource(id="g", **kw), None)  # type: ignore[arg-type]


def seqs(view: object) -> list[int]:
    return [m.seq for m in view.messages]  # type: ignore[attr-defined]


# -- the oracle's units ------------------------------------------------------------------

@dataclass(frozen=True)
class OUnit:
    seq: int  # newest member
    effective_priority: int
    token_count: int
    size: int
    members: tuple[StoredMessage, ...]

    @property
    def group(self) -> bool:
        return bool(self.members[0].tool_calls)


def oracle_units(messages: Sequence[StoredMessage]) -> list[OUnit]:
    """A group is an assistant message with calls plus the tool messages answering them;
    every other message is a unit alone. Oldest unit (by newest member) first."""
    lists: list[list[StoredMessage]] = []
    head_of: dict[str, list[StoredMessage]] = {}
    for m in messages:
        if m.tool_calls:
            lists.append([m])
            head_of.update((c.id, lists[-1]) for c in m.tool_calls)
        elif m.role == "tool" and m.tool_call_id in head_of:
            head_of[m.tool_call_id].append(m)
        else:
            lists.append([m])
    units = [OUnit(ms[-1].seq, min(m.effective_priority for m in ms), sum(m.token_count for m in ms), len(ms),
                   tuple(ms)) for ms in lists]
    return sorted(units, key=lambda u: u.seq)


# -- promise 8: views convert ------------------------------------------------------------

def check_converts(view_messages: Sequence[StoredMessage]) -> None:
    """The view's history passes both providers' rules, and the converters needed neither to
    drop a stored result nor to invent an answer for a call answered in the view."""
    pbs = [message_to_pb(m) for m in view_messages]
    openai = to_openai(pbs)
    validate_openai(openai)
    system, turns = to_anthropic(pbs)
    validate_anthropic(system, turns)
    calls = {c.id for m in view_messages for c in m.tool_calls}
    answered = {m.tool_call_id for m in view_messages if m.role == "tool" and m.tool_call_id in calls}
    emitted = [m for m in openai if m["role"] == "tool" and m["content"] != NO_RESULT]
    assert {m["tool_call_id"] for m in emitted} == answered  # no result of the view dropped
    placeholders = {m["tool_call_id"] for m in openai if m["role"] == "tool" and m["content"] == NO_RESULT}
    assert not placeholders & answered


def check_groups_whole(view_messages: Sequence[StoredMessage], stored: Sequence[StoredMessage]) -> None:
    """Every group is in the view whole or not at all (the newest collapsed one aside)."""
    shown = {m.seq for m in view_messages if m.kind is Kind.MESSAGE}
    for u in oracle_units(stored):
        members = {m.seq for m in u.members}
        inside = members & shown
        if inside and inside != members:
            collapsed = [m for m in view_messages if m.seq == u.members[0].seq and "tool call" in m.content
                         and not m.tool_calls]
            assert collapsed and inside == {u.members[0].seq}, f"group {sorted(members)} split: {sorted(inside)}"


# -- regression tests --------------------------------------------------------------------

CALL = ToolCall("call_1", "get_order", '{"id": "A-48213"}')


def test_a_budget_that_keeps_a_result_keeps_its_call() -> None:
    """The reported orphan: results are cheap and important, the call was dropped, and OpenAI
    refused the history ("messages with role 'tool' must be a response to a preceding
    message with 'tool_calls'")."""
    head = make(2, "assistant", "Let me look that up. " + "lorem " * 200, 9, calls=[CALL])
    result = make(3, "tool", '{"status": "shipped"}', 1, answers="call_1")
    st_ = state_of(make(1, "user", "Where is A-48213?"), head, result, make(4, "user", "thanks"))
    view = context_view(st_, budget_of(max_tokens=1000, flushing_strategy=FlushingStrategy(summary_tokens=64)),
                        max_tokens=120, count=COUNT_MSG)
    # per message, the rule kept the result (priority 1) and dropped its call (priority 9); the
    # group (priority 1, 220+ tokens) does not fit, so it goes whole, and with it the less
    # important #1 (a priority that does not fit whole ends the selection)
    assert seqs(view) == [4]
    check_converts(view.messages)
    bigger = context_view(st_, budget_of(max_tokens=1000, flushing_strategy=FlushingStrategy(summary_tokens=64)),
                          count=COUNT_MSG)
    assert seqs(bigger) == [1, 2, 3, 4]
    check_converts(bigger.messages)


def test_the_newest_groups_huge_result_is_cut_never_separated_from_its_call() -> None:
    huge = '{"rows": [' + ", ".join(f'"row {i}"' for i in range(3000)) + "]}"
    small = '{"ok": true}'
    calls = [CALL, ToolCall("call_2", "get_rows", "{}"), ToolCall("call_3", "ping", "")]
    st_ = state_of(make(1, "user", "go"), make(2, "assistant", "", calls=calls),
                   make(3, "tool", huge, answers="call_2"), make(4, "tool", small, answers="call_1"),
                   make(5, "tool", "pong " * 1500, answers="call_3"))
    b = budget_of(max_tokens=1000, flushing_strategy=FlushingStrategy(summary_tokens=64))
    view = context_view(st_, b, count=COUNT_MSG)
    assert view.token_count <= 1000
    by_seq = {m.seq: m for m in view.messages}
    assert set(by_seq) >= {2, 3, 4, 5}
    assert by_seq[4].content == small  # smaller than its share: whole
    assert MARKER.search(by_seq[3].content) and is_cut_of(by_seq[3].content, huge, 3)
    assert is_cut_of(by_seq[5].content, "pong " * 1500, 5)
    assert by_seq[2].tool_calls == tuple(calls)  # calls never cut
    # max-min fair: the two cut results got about the same room
    assert abs(by_seq[3].token_count - by_seq[5].token_count) <= 0.1 * by_seq[3].token_count + 10
    check_converts(view.messages)
    markers = context_view(st_, b, max_tokens=110, count=COUNT_MSG)  # the results cut to little but their markers
    assert seqs(markers) == [2, 3, 4, 5] and markers.token_count <= 110
    check_converts(markers.messages)
    tight = context_view(st_, b, max_tokens=90, count=COUNT_MSG)  # not even the markers fit: collapsed
    assert seqs(tight) == [1, 2] and not tight.messages[1].tool_calls
    assert "3 tool calls and 3 results elided" in tight.messages[1].content and tight.token_count <= 90
    check_converts(tight.messages)


def test_a_group_is_folded_whole_and_summarised_as_one_entry() -> None:
    calls = [CALL, ToolCall("call_2", "get_user", '{"id": 7}')]
    st_ = state_of(
        make(1, "user", "Where is my order A-48213?"),
        make(2, "assistant", "", calls=calls),
        make(3, "tool", '{"status": "shipped", "tracking": "1Z999AA1"}', answers="call_1"),
        make(4, "user", "and my email?"),  # appended before the second result arrived
        make(5, "tool", '{"email": "bob@example.com"}', answers="call_2"),
        make(6, "assistant", "Shipped, tracking 1Z999AA1; your email is bob@example.com."),
        make(7, "user", "thanks"),
    )
    res = MemoryResource(id="g", max_tokens=2000, flushing_strategy=FlushingStrategy(summarize_oldest_percent=50))
    plan = plan_flush(st_, res, compute_budget(res, None), COUNT, now_ms=1)
    assert plan.remove_seqs == (1, 2, 3, 4, 5)  # 3 of 5 units: the group (newest member #5) whole
    assert plan.summary is not None
    lines = plan.summary.content.splitlines()
    assert '- assistant #2 called get_order(id="A-48213"), get_user(id=7) → tool #3: ' in plan.summary.content
    assert any(line.endswith('→ tool #5: {"email": "bob@example.com"}') for line in lines)
    assert not unaccounted(set(range(1, 8)), {6, 7}, plan.summary.content)
    after = apply_plan(st_, plan)
    again = summarize(plan.summary.content, [after.messages[0]], 70, COUNT)  # shrinks: the group is merged
    assert not unaccounted(set(range(1, 8)), {7}, again) and "1Z999AA1" in again
    fewer = replace(res, flushing_strategy=FlushingStrategy(summarize_oldest_percent=40))
    # 2 of 5 units: #1 and #4 (the group's newest member, #5, makes it younger): never part of it
    assert plan_flush(st_, fewer, compute_budget(fewer, None), COUNT, now_ms=1).remove_seqs == (1, 4)


def test_a_pending_newest_group_is_kept_as_it_is_and_an_abandoned_one_is_answered() -> None:
    calls = [CALL, ToolCall("call_2", "get_user", "{}")]
    pending = state_of(make(1, "user", "go"), make(2, "assistant", "", calls=calls),
                       make(3, "tool", "{}", answers="call_1"))
    view = context_view(pending, budget_of(), count=COUNT_MSG)
    openai = to_openai([message_to_pb(m) for m in view.messages])
    assert [m["role"] for m in openai] == ["user", "assistant", "tool"]  # call_2 still open: the agent adds it
    validate_openai(openai)
    with pytest.raises(ProviderRuleError, match="O3"):
        validate_openai(openai, pending_ok=False)
    abandoned = state_of(*pending.messages, make(4, "user", "hello?"))
    openai = to_openai([message_to_pb(m) for m in context_view(abandoned, budget_of(), count=COUNT_MSG).messages])
    assert [(m["role"], m.get("tool_call_id"), m.get("content")) for m in openai[2:]] == [
        ("tool", "call_1", "{}"), ("tool", "call_2", NO_RESULT), ("user", None, "hello?")]
    check_converts(context_view(abandoned, budget_of(), count=COUNT_MSG).messages)


def test_a_pinned_member_pins_its_group() -> None:
    st_ = state_of(make(1, "user", "go"), make(2, "assistant", "", 0, calls=[CALL]),
                   make(3, "tool", "{}" + " x" * 300, 9, answers="call_1"), make(4, "user", "next " * 300))
    view = context_view(st_, budget_of(max_tokens=1000, flushing_strategy=FlushingStrategy(summary_tokens=64)),
                        count=COUNT_MSG)
    assert seqs(view)[:2] == [2, 3] and view.pinned_tokens == st_.messages[1].token_count + st_.messages[2].token_count
    check_converts(view.messages)
    res = MemoryResource(id="g", max_tokens=2000, flushing_strategy=FlushingStrategy(summarize_oldest_percent=100))
    assert plan_flush(st_, res, compute_budget(res, None), COUNT, 1).remove_seqs == (1,)
    # one recent priority (the fast path): the result would be dropped for the huge newest turn
    one_level = state_of(*(m._replace(effective_priority=5) if m.seq == 3 else m for m in st_.messages[:3]),
                         make(4, "user", "next " * 2000))
    view = context_view(one_level, budget_of(max_tokens=1000, flushing_strategy=FlushingStrategy(summary_tokens=64)),
                        count=COUNT_MSG)
    assert seqs(view) == [2, 3, 4]
    check_converts(view.messages)


def test_orphans_are_units_and_never_emitted_without_their_call() -> None:
    st_ = state_of(make(1, "assistant", "hi"), make(2, "tool", "late result", answers="deleted-call"),
                   make(3, "user", "ok"))
    view = context_view(st_, budget_of(), count=COUNT_MSG)
    assert seqs(view) == [1, 2, 3]
    pbs = [message_to_pb(m) for m in view.messages]
    assert [m["role"] for m in to_openai(pbs)] == ["assistant", "user"]
    system, turns = to_anthropic(pbs)
    assert system == "" and [t["role"] for t in turns] == ["user", "assistant", "user"]
    validate_anthropic(system, turns)


def test_the_validators_refuse_what_the_providers_refuse() -> None:
    """Each rule on a history the provider's API returns 400 for (the validators are not vacuous)."""
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    bad_openai: dict[str, list[dict[str, Any]]] = {
        "O2": [{"role": "user", "content": "x"}, {"role": "tool", "tool_call_id": "c1", "content": "r"}],
        "O3": [{"role": "assistant", "content": None, "tool_calls": [call]}, {"role": "user", "content": "x"}],
        "O5": [{"role": "assistant", "content": None}],
        "O7": [{"role": "assistant", "content": None, "tool_calls": [call]},
               {"role": "tool", "tool_call_id": "c1", "content": "r", "name": "f"}],
    }
    for rule, history in bad_openai.items():
        with pytest.raises(ProviderRuleError, match=rule):
            validate_openai(history)
    use: dict[str, Any] = {"type": "tool_use", "id": "c1", "name": "f", "input": {}}
    result: dict[str, Any] = {"type": "tool_result", "tool_use_id": "c1", "content": "r"}
    bad_anthropic: dict[str, list[dict[str, Any]]] = {
        "A2": [{"role": "assistant", "content": "hi"}],
        "A3": [{"role": "user", "content": "x"}, {"role": "assistant", "content": [use]},
               {"role": "user", "content": "y"}, {"role": "assistant", "content": "z"}],
        "A4": [{"role": "user", "content": [{"type": "text", "text": "x"}, result]}],
        "A5": [{"role": "user", "content": [{"type": "text", "text": ""}, {"type": "text", "text": "x"}]}],
        "A6": [{"role": "user", "content": "x"}, {"role": "assistant", "content": []},
               {"role": "user", "content": "y"}],
    }
    for rule, history in bad_anthropic.items():
        with pytest.raises(ProviderRuleError, match=rule):
            validate_anthropic("", history)
    with pytest.raises(ProviderRuleError, match="A2"):
        validate_anthropic("", [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}])
    validate_anthropic("", [{"role": "user", "content": "x"}, {"role": "assistant", "content": [use]},
                            {"role": "user", "content": [result, {"type": "text", "text": "y"}]}])


def test_converters_map_every_field_as_the_shared_rules_say() -> None:
    from memoryd_client import pb
    msgs = [
        pb.Message(role=pb.ROLE_SYSTEM, content="rules", kind=pb.MESSAGE_KIND_MESSAGE),
        pb.Message(role=pb.ROLE_SYSTEM, content="Summary of earlier conversation", kind=pb.MESSAGE_KIND_SUMMARY),
        pb.Message(role=pb.ROLE_DEVELOPER, content="be brief"),
        pb.Message(role=pb.ROLE_USER, name="bob", extra='{"x_custom": 1, "role": "ignored"}', parts=[
            pb.ContentPart(text="look"), pb.ContentPart(image=pb.MediaRef(url="https://x/i.png", detail="low")),
            pb.ContentPart(file=pb.MediaRef(file_id="file-1", filename="a.pdf"))]),
        pb.Message(role=pb.ROLE_ASSISTANT, content="", tool_calls=[
            pb.ToolCall(id="c1", name="get", arguments='{"id": 1}'), pb.ToolCall(id="c2", name="raw", arguments="x")]),
        pb.Message(role=pb.ROLE_USER, content="between"),
        pb.Message(role=pb.ROLE_TOOL, tool_call_id="c2", content="two"),
        pb.Message(role=pb.ROLE_TOOL, tool_call_id="c1", content="one"),
    ]
    assert to_openai(msgs) == [
        {"role": "system", "content": "rules"},
        {"role": "system", "content": "Summary of earlier conversation"},
        {"role": "developer", "content": "be brief"},
        {"role": "user", "name": "bob", "x_custom": 1, "content": [
            {"type": "text", "text": "look"}, {"type": "image_url", "image_url": {"url": "https://x/i.png",
                                                                                 "detail": "low"}},
            {"type": "file", "file": {"file_id": "file-1", "filename": "a.pdf"}}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "get", "arguments": '{"id": 1}'}},
            {"id": "c2", "type": "function", "function": {"name": "raw", "arguments": "x"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "one"},
        {"role": "tool", "tool_call_id": "c2", "content": "two"},
        {"role": "user", "content": "between"},
    ]
    system, turns = to_anthropic(msgs)
    assert system == "rules\n\nSummary of earlier conversation\n\nbe brief"
    assert turns == [
        {"role": "user", "content": [
            {"type": "text", "text": "look"}, {"type": "image", "source": {"type": "url", "url": "https://x/i.png"}},
            {"type": "document", "source": {"type": "file", "file_id": "file-1"}}]},
        {"role": "assistant", "content": [
            {"type": "tool_use", "id": "c1", "name": "get", "input": {"id": 1}},
            {"type": "tool_use", "id": "c2", "name": "raw", "input": {"arguments": "x"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "c1", "content": "one"},
            {"type": "tool_result", "tool_use_id": "c2", "content": "two"},
            {"type": "text", "text": "between"}]},
    ]
    validate_openai(to_openai(msgs))
    validate_anthropic(system, turns)


# -- properties --------------------------------------------------------------------------

@st.composite
def group_resources(draw: st.DrawFn) -> MemoryResource:
    total = draw(st.sampled_from([200, 400, 1000, 3000]))
    allocation = None
    if draw(st.booleans()):
        parts = [draw(st.integers(1, 10)) for _ in range(3)]
        allocation = TokenAllocation(parts[0] / sum(parts), parts[1] / sum(parts), parts[2] / sum(parts))
    blocks = [PriorityBlock(p, (ctype,), draw(st.none() | st.integers(64, total)))
              for p, ctype in ((7, "tool_result"), (2, "code")) if draw(st.booleans())]
    res = MemoryResource(
        id="groups", max_tokens=total, message_limit=draw(st.none() | st.integers(1, 12)),
        default_priority=draw(st.integers(1, 9)), token_allocation=allocation, priority_blocks=tuple(blocks),
        flushing_strategy=FlushingStrategy(
            type=draw(st.sampled_from(["hybrid_summary", "fifo", "external"])),  # external: the rule is the fallback
            summarize_threshold=draw(st.sampled_from([0.3, 0.6, 1.0])),
            summary_tokens=draw(st.integers(64, total)),
            summarize_oldest_percent=draw(st.sampled_from([1.0, 30.0, 60.0, 100.0])),
        ),
    )
    assume(not budget_problems(res, None))
    return res


def _text(draw: st.DrawFn, total: int, huge_ok: bool = True) -> str:
    size = draw(st.sampled_from(["empty", "small", "small", "medium", "huge"] if huge_ok else ["small"]))
    if size == "empty":
        return ""
    if size == "huge":
        return " ".join(draw(st.lists(st.sampled_from(WORDS), min_size=2, max_size=5))) + " row" * (total + 40)
    n = draw(st.integers(1, 10)) if size == "small" else draw(st.integers(30, max(31, total // 3)))
    return " ".join(draw(st.lists(st.sampled_from(WORDS), min_size=n, max_size=n)))


@st.composite
def group_conversations(draw: st.DrawFn, res: MemoryResource, budget: Budget) -> list[StoredMessage]:
    """Turns of a tool-using agent: user/assistant text, pinned system prompts, groups with
    parallel calls answered at once, later (after other messages) or never, orphans."""
    messages: list[StoredMessage] = []
    open_calls: list[str] = []
    pinned = 0
    seq = 0
    ctypes = {"tool": "tool_result", "assistant": "text", "user": "text"}

    def add(role: str, content: str, calls: Sequence[ToolCall] = (), answers: str = "") -> None:
        nonlocal seq
        seq += draw(st.integers(1, 2))
        explicit = draw(st.none() | st.integers(1, 9))
        ctype = draw(st.sampled_from([ctypes.get(role, "text"), "code"]))
        prio = explicit if explicit is not None else next(
            (b.priority for b in res.priority_blocks if ctype in b.content_types), res.default_priority)
        m = make(seq, role, content, prio, calls=calls, answers=answers)
        messages.append(m._replace(content_type=ctype, priority=explicit))

    for _ in range(draw(st.integers(1, 14))):
        kind = draw(st.sampled_from(["user", "assistant", "group", "group", "answer", "system", "orphan"]))
        if kind == "system":
            content = _text(draw, budget.total, huge_ok=False) or "rules"
            cost = COUNT_MSG("system", content)
            if pinned + cost <= budget.pinned_cap:
                pinned += cost
                seq += 1
                messages.append(make(seq, "system", content, 0))
        elif kind == "group":
            n = draw(st.integers(1, 3))
            calls = [ToolCall(f"c{seq + 1}_{j}", draw(st.sampled_from(["get_order", "search", "ping"])),
                              json.dumps({"q": _text(draw, budget.total, huge_ok=False)}) if draw(st.booleans())
                              else "") for j in range(n)]
            add("assistant", _text(draw, budget.total, huge_ok=False) if draw(st.booleans()) else "", calls)
            answered = draw(st.lists(st.sampled_from(calls), unique=True, max_size=n))
            for call in answered:
                add("tool", _text(draw, budget.total) or "{}", answers=call.id)
            open_calls = [c.id for c in calls if c not in answered]  # only the newest group is awaited
        elif kind == "answer" and open_calls:
            add("tool", _text(draw, budget.total) or "{}", answers=open_calls.pop(0))
        elif kind == "orphan":
            add("tool", _text(draw, budget.total, huge_ok=False) or "r", answers=f"gone{seq}")
        elif kind in ("user", "assistant"):
            add(kind, _text(draw, budget.total) or "…")
    return messages


def check_view(state: InstanceState, budget: Budget, max_tokens: int | None) -> None:
    refused: InvalidArgument | None = None
    try:
        view = context_view(state, budget, max_tokens, count=COUNT_MSG)
    except InvalidArgument as exc:
        refused = exc
    if refused is not None:
        assert refused.field == "max_tokens" and max_tokens is not None and max_tokens < budget.total
        event("refused: max_tokens below pinned + the newest turn's minimum")
        return
    check_view_promises(view, state, budget, budget.total if not max_tokens else min(budget.total, max_tokens))


def check_view_promises(view: ContextView, state: InstanceState, budget: Budget, limit: int) -> None:
    """Promises 1, 2, 3, 5, 7 and 8 of one view, on units: the newest unit shown (whole,
    its results cut, or collapsed), the older ones exactly what the eviction rule applied
    one unit at a time keeps in the room the newest leaves."""
    assert view.token_count == sum(m.token_count for m in view.messages) <= limit  # 1
    check_groups_whole(view.messages, state.messages)
    check_converts(view.messages)  # 8
    units = oracle_units(state.messages)
    pinned_units = [u for u in units if u.effective_priority == 0]
    recent_units = [u for u in units if u.effective_priority != 0]
    pinned = sorted((m for u in pinned_units for m in u.members), key=lambda m: m.seq)
    assert list(view.messages[: len(pinned)]) == pinned  # 2, 7
    after = view.messages[len(pinned):]
    assert all(m.kind is Kind.SUMMARY for m in after[:1] if m.kind is not Kind.MESSAGE)  # 7
    rest = [m for m in after if m.kind is Kind.MESSAGE]
    assert len(rest) >= len(after) - 1 and [m.seq for m in rest] == sorted(m.seq for m in rest)  # 7
    if not recent_units:
        assert not rest
        return
    newest = recent_units[-1]  # 3: the newest unit, whole, its results cut, or collapsed
    members = {m.seq: m for m in newest.members}
    shown = [m for m in rest if m.seq in members]
    assert shown, "the newest unit is missing"
    if newest.group and not shown[0].tool_calls:
        event("newest group collapsed")
        assert len(shown) == 1 and "elided" in shown[0].content and shown[0].seq == newest.members[0].seq
    else:
        assert [m.seq for m in shown] == sorted(members)
        for m in shown:  # 5: cut to fit, calls whole
            full = members[m.seq]
            assert m.tool_calls == full.tool_calls and is_cut_of(m.content, full.content, m.seq)
            assert m.token_count == (full.token_count if m.content == full.content else
                                     COUNT_MSG(m.role, m.content) + call_cost(m.tool_calls))
        event("newest unit cut" if any(m.content != members[m.seq].content for m in shown) else "newest unit whole")
    used = sum(m.token_count for m in shown)
    room = budget.recent_room(view.pinned_tokens, view.summary_tokens, limit)
    assert used <= newest_room(newest, room, budget.block_caps)  # type: ignore[arg-type]
    caps = dict(budget.block_caps)
    if newest.effective_priority in caps:
        caps[newest.effective_priority] -= used
    msg_limit = None if budget.message_limit is None else max(0, budget.message_limit - newest.size)
    gone = reference_evictions(recent_units[:-1], room - used, caps, msg_limit)
    expected = sorted(m.seq for u in recent_units[:-1] if u.seq not in gone for m in u.members)
    assert [m.seq for m in rest if m.seq not in members] == expected


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.data())
def test_every_view_of_a_tool_using_conversation_converts_and_keeps_the_promises(data: st.DataObject) -> None:
    res = data.draw(group_resources())
    budget = compute_budget(res, None)
    messages = data.draw(group_conversations(res, budget))
    state = state_of(*messages)
    for step in range(data.draw(st.integers(0, 3), label="flushes") + 1):
        for max_tokens in (None, data.draw(st.integers(1, budget.total), label="max_tokens")):
            try:
                check_view(state, budget, max_tokens)
            except FailedPrecondition:  # a pinned group's other members crowd the budget (documented)
                assume(False)
        if step:
            before = state
            plan = plan_flush(state, res, budget, COUNT, now_ms=step)
            state = apply_plan(state, plan, now_ms=step)
            stored = {m.seq for m in state.messages}
            gone = {m.seq for m in before.messages} - stored
            for u in oracle_units(before.messages):  # folded or evicted whole
                assert {m.seq for m in u.members} <= gone or not {m.seq for m in u.members} & gone
            if res.flushing_strategy.summarises and state.summary is not None:
                assert not unaccounted({m.seq for m in messages}, stored, state.summary.content)  # 4
                event("summary names a group" if " → tool #" in state.summary.content else "summary")


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_unit_eviction_selects_what_the_rule_drops_one_unit_at_a_time(data: st.DataObject) -> None:
    n = data.draw(st.integers(0, 30))
    messages: list[StoredMessage] = []
    for seq in range(1, n + 1):
        kind = data.draw(st.sampled_from(["text", "call", "result"]))
        heads = [c.id for m in messages for c in m.tool_calls]
        prio = data.draw(st.sampled_from([1, 4, 9]))
        tokens_ = data.draw(st.integers(0, 40))
        if kind == "call":
            calls = [ToolCall(f"c{seq}_{j}", "f", "") for j in range(data.draw(st.integers(1, 3)))]
            messages.append(make(seq, "assistant", "", prio, calls=calls, tokens_=tokens_))
        elif kind == "result" and heads:
            messages.append(make(seq, "tool", "r", prio, answers=data.draw(st.sampled_from(heads)), tokens_=tokens_))
        else:
            messages.append(make(seq, "user", "x", prio, tokens_=tokens_))
    units = build_units(messages)
    assert [(u.seq, u.token_count, size(u), u.effective_priority, members(u)) for u in units] == \
        [(u.seq, u.token_count, u.size, u.effective_priority, u.members) for u in oracle_units(messages)]
    room = data.draw(st.integers(0, 600))
    caps = data.draw(st.dictionaries(st.sampled_from([1, 4, 9]), st.integers(0, 200), max_size=2))
    limit = data.draw(st.none() | st.integers(0, 35))
    expected = reference_evictions(oracle_units(messages), room, caps, limit)
    kept = select_kept_units(units, room=room, block_caps=caps, message_limit=limit)
    assert [u.seq for u in kept] == [u.seq for u in units if u.seq not in expected]


def test_summaries_name_every_member_of_a_group_after_any_number_of_folds() -> None:
    calls = [ToolCall(f"c{i}", "lookup", json.dumps({"id": f"A-{i}"})) for i in range(3)]
    text = summarize(None, [make(10, "assistant", "Checking → now", calls=calls),
                            *(make(11 + i, "tool", f'{{"id": "A-{i}", "state": "→ done"}}', answers=f"c{i}")
                              for i in range(3))], 400, COUNT)
    assert named(text)[0] == {10, 11, 12, 13}
    assert text.count(" → tool #") == 3  # the spans' own arrows were written "->"
    roomy = summarize(text, [make(20, "user", "ok")], 1000, COUNT)  # the group line parses back: kept as it was
    assert roomy.splitlines()[1:] == [*text.splitlines()[1:], "- user #20: ok"]
    for cap in (120, 80, 64):
        smaller = summarize(text, [make(20, "user", "ok")], cap, COUNT)
        assert not unaccounted({10, 11, 12, 13, 20}, set(), smaller)


@pytest.mark.parametrize("strategy", ["hybrid_summary", "external", "fifo"])
def test_a_lone_newest_group_is_never_folded_under_any_strategy(strategy: str) -> None:
    """The regression: with one recent unit (a tool-call group), the unit planner folded
    nothing only for hybrid_summary; under external (whose fallback is the same rule) it
    tried to summarise an empty span and raised."""
    res = MemoryResource(id="r", max_tokens=1000, flushing_strategy=FlushingStrategy(type=strategy))
    state = state_of(make(1, "assistant", "", calls=(ToolCall("c1", "f", "{}"),)),
                     make(2, "tool", "done", answers="c1"))
    plan = plan_flush(state, res, compute_budget(res, None), COUNT, now_ms=1)
    assert plan.remove_seqs == () and plan.summary is None
