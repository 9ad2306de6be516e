"""The eight context promises (docs/tokens-and-budget.md), checked after every step of a
stateful test of the pure engine: appends (batches, pinned, oversized, every strategy),
tool-call groups (parallel calls, answered at once, later or never, huge results), the
flushes they schedule, explicit flushes and reads with a caller's ``max_tokens``.

The model is what the daemon does with the engine (manager.append / flush / read_context),
with real token counts; the recent units a view shows besides the newest are checked
against the eviction rule applied one unit at a time (``reference_evictions`` over
``oracle_units``), and every view must convert to a history both providers accept.
"""

from __future__ import annotations

import functools
import os

from hypothesis import HealthCheck, assume, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from memoryd import tokens
from memoryd.config.model import FlushingStrategy, MemoryResource, PriorityBlock, TokenAllocation
from memoryd.engine import (
    ContextView,
    budget_problems,
    check_oversize,
    compute_budget,
    context_view,
    effective_priority,
    needs_flush,
    plan_flush,
)
from memoryd.errors import InvalidArgument, ResourceExhausted
from memoryd.models import InstanceMeta, InstanceState, Kind, StoredMessage, ToolCall
from tests.engine_apply import apply_plan, recount
from tests.promises import named, unaccounted
from tests.unit.test_groups import call_cost, check_view_promises, oracle_units

COUNTER = tokens.counter_for_model("gpt-4o")
COUNT_MSG = COUNTER.count_message
COUNT = functools.partial(COUNT_MSG, "system")
ROLES = ("system", "user", "assistant", "tool")
CONTENT_TYPES = ("text", "tool_result", "user_preference", "code")
WORDS = ("order", "A-4821", "bob@example.com", "12 Baker Street", "$19.99", "2026-03-01", "Alice Moreau",
         "why?", "ok", "the", "parcel", "你好", "🙂", "refund", "INV-77", "+44 20 7946 0958", "\n", "lorem")


@st.composite
def resources(draw: st.DrawFn) -> MemoryResource:
    """Configurations `memoryd validate` accepts: tiny to huge budgets and summary caps,
    block caps, message limits, allocations, both strategies and both oversize policies."""
    total = draw(st.sampled_from([200, 400, 1000, 3000]))
    hybrid = draw(st.booleans())
    allocation = None
    if draw(st.booleans()):
        parts = [draw(st.integers(1, 10)) for _ in range(3)]
        allocation = TokenAllocation(parts[0] / sum(parts), parts[1] / sum(parts), parts[2] / sum(parts))
    blocks: list[PriorityBlock] = []
    for priority, ctype in ((0, "user_preference"), (7, "tool_result"), (2, "code")):
        if draw(st.booleans()):
            cap = draw(st.none() | st.integers(64, total))
            blocks.append(PriorityBlock(priority, (ctype,), cap))
    res = MemoryResource(
        id="promises",
        max_tokens=total,
        message_limit=draw(st.none() | st.integers(1, 12)),
        default_priority=draw(st.integers(1, 9)),
        token_allocation=allocation,
        priority_blocks=tuple(blocks),
        flushing_strategy=FlushingStrategy(
            type="hybrid_summary" if hybrid else "fifo",
            summarize_threshold=draw(st.sampled_from([0.3, 0.6, 0.8, 1.0])),
            summary_tokens=draw(st.integers(64, total)),
            summarize_oldest_percent=draw(st.sampled_from([1.0, 30.0, 60.0, 100.0])),
        ),
        oversize=draw(st.sampled_from(["truncate", "reject"])),
    )
    assume(not budget_problems(res, None))
    return res


@st.composite
def contents(draw: st.DrawFn, total: int) -> str:
    size = draw(st.sampled_from(["small", "small", "medium", "huge"]))
    if size == "huge":  # alone larger than the whole budget
        return " ".join(draw(st.lists(st.sampled_from(WORDS), min_size=3, max_size=6))) + " lorem" * (total + 50)
    n = draw(st.integers(1, 12)) if size == "small" else draw(st.integers(40, total // 3))
    return " ".join(draw(st.lists(st.sampled_from(WORDS), min_size=n, max_size=n)))


class Promises(RuleBasedStateMachine):
    """One instance driven like the daemon drives it; every promise checked after each step."""

    def __init__(self) -> None:
        super().__init__()
        self.state = InstanceState(meta=InstanceMeta(), summary=None, messages=())
        self.acked: dict[int, str] = {}  # seq -> content, as acknowledged
        self.pinned: list[int] = []
        self.evicted: set[int] = set()  # fifo: what flushes dropped (the `evicted` count)
        self.now = 0

    @initialize(res=resources())
    def configure(self, res: MemoryResource) -> None:
        self.res = res
        self.budget = compute_budget(res, None)

    def _flush(self) -> None:
        self.now += 1
        plan = plan_flush(self.state, self.res, self.budget, COUNT, self.now)
        gone = set(plan.remove_seqs)
        for u in oracle_units(self.state.messages):  # a group is folded or evicted whole
            members = {m.seq for m in u.members}
            assert members <= gone or not members & gone
        if self.res.flushing_strategy.type == "fifo":
            self.evicted |= set(plan.remove_seqs)
        else:
            assert plan.summary is not None or not plan.remove_seqs  # nothing leaves unfolded
        self.state = apply_plan(self.state, plan, now_ms=self.now)

    @rule(data=st.data(), n=st.integers(1, 4))
    def append(self, data: st.DataObject, n: int) -> None:
        batch: list[StoredMessage] = []
        seq = self.state.meta.last_seq
        for _ in range(n):
            role = data.draw(st.sampled_from(ROLES))
            ctype = data.draw(st.sampled_from(CONTENT_TYPES))
            explicit = data.draw(st.none() | st.integers(0, 9))
            content = data.draw(contents(self.budget.total))
            seq += 1
            batch.append(StoredMessage(
                seq=seq, id=f"m{seq}", role=role, content=content, content_type=ctype, priority=explicit,
                effective_priority=effective_priority(self.res, role, ctype, explicit),
                token_count=COUNT_MSG(role, content), created_at_ms=seq,
            ))
        self._store(batch)

    def _member(self, data: st.DataObject, seq: int, role: str, content: str, *, calls: tuple[ToolCall, ...] = (),
                answers: str = "") -> StoredMessage:
        """A group member: never pinned (a pinned member pins its group: tests/unit/test_groups.py)."""
        ctype = data.draw(st.sampled_from(("text", "tool_result", "code")))
        explicit = data.draw(st.none() | st.integers(1, 9))
        return StoredMessage(
            seq=seq, id=f"m{seq}", role=role, content=content, content_type=ctype, priority=explicit,
            effective_priority=effective_priority(self.res, role, ctype, explicit),
            token_count=COUNT_MSG(role, content) + call_cost(calls), created_at_ms=seq,
            tool_calls=calls, tool_call_id=answers,
        )

    @rule(data=st.data(), n=st.integers(1, 3))
    def call_tools(self, data: st.DataObject, n: int) -> None:
        """An assistant turn calling ``n`` tools in parallel, with the results it has at once."""
        seq = self.state.meta.last_seq + 1
        calls = tuple(ToolCall(f"call{seq}_{j}", data.draw(st.sampled_from(("get_order", "search"))),
                               data.draw(st.sampled_from(("", "{}", '{"id": "A-4821"}', '{"q": "' + "x" * 300 + '"}'))))
                      for j in range(n))
        head_text = data.draw(st.sampled_from(("", "Let me check.")))
        batch = [self._member(data, seq, "assistant", head_text, calls=calls)]
        for call in data.draw(st.lists(st.sampled_from(calls), unique=True, max_size=n)):
            seq += 1
            batch.append(self._member(data, seq, "tool", data.draw(contents(self.budget.total)), answers=call.id))
        self._store(batch)

    def _open_calls(self) -> list[str]:
        answered = {m.tool_call_id for m in self.state.messages if m.role == "tool"}
        return [c.id for m in self.state.messages for c in m.tool_calls if c.id not in answered]

    @precondition(lambda self: hasattr(self, "res") and bool(self._open_calls()))
    @rule(data=st.data())
    def answer(self, data: st.DataObject) -> None:
        """A result arriving later (maybe after other messages); only for a stored call (the
        API refuses an answer to a call not in the instance)."""
        call_id = data.draw(st.sampled_from(self._open_calls()))
        seq = self.state.meta.last_seq + 1
        self._store([self._member(data, seq, "tool", data.draw(contents(self.budget.total)), answers=call_id)])

    def _store(self, batch: list[StoredMessage]) -> None:
        try:  # what the manager and the store check before anything is stored
            adding = sum(m.token_count for m in batch if m.pinned)  # the store's pinned_cap check
            if adding and self.budget.pinned_cap is not None and \
                    self.state.meta.pinned_tokens + adding > self.budget.pinned_cap:
                raise ResourceExhausted("pinned tier full")
            if self.res.oversize == "reject":
                check_oversize(self.budget, [(i, m.effective_priority, m.token_count) for i, m in enumerate(batch)],
                               self.state.meta.pinned_tokens)
        except ResourceExhausted as exc:
            event("batch refused: " + ("pinned" if "pinned" in str(exc) else "oversize"))
            return  # refused whole: nothing stored, nothing acknowledged
        messages = (*self.state.messages, *batch)
        self.state = InstanceState(recount(self.state.meta, messages, self.state.summary), self.state.summary,
                                   messages)
        self.acked.update((m.seq, m.content) for m in batch)
        self.pinned += [m.seq for m in batch if m.pinned]
        if needs_flush(self.state.meta, self.res, self.budget):
            self._flush()

    @precondition(lambda self: bool(self.state.messages))
    @rule()
    def flush(self) -> None:
        self._flush()

    @rule(max_tokens=st.integers(1, 3000))
    def read_with_a_smaller_limit(self, max_tokens: int) -> None:
        refused: InvalidArgument | None = None
        try:
            view = context_view(self.state, self.budget, max_tokens, count=COUNT_MSG)
        except InvalidArgument as exc:  # only when pinned + the newest turn's minimal cut do not fit
            refused = exc
        if refused is not None:
            assert refused.field == "max_tokens" and max_tokens < self.budget.total
            return
        assert view.token_count <= min(max_tokens, self.budget.total)  # 1
        self._check_view(view, max_tokens)

    @invariant()
    def promises(self) -> None:
        if not hasattr(self, "res"):
            return
        view = context_view(self.state, self.budget, count=COUNT_MSG)
        stored = {m.seq: m for m in self.state.messages}
        assert view.token_count == sum(m.token_count for m in view.messages) <= self.budget.total  # 1
        assert [m.seq for m in view.messages if m.kind is Kind.MESSAGE and m.pinned] == self.pinned  # 2
        assert all(s in stored for s in self.pinned)
        assert all(stored[s].content == self.acked[s] for s in stored)  # 5: stored whole, byte-exact
        summary = self.state.summary
        text = summary.content if summary is not None else ""
        if self.res.flushing_strategy.type == "hybrid_summary":  # 4
            assert not unaccounted(set(self.acked), set(stored), text)
        else:
            assert set(self.acked) - set(stored) == self.evicted
        if summary is not None and summary.content:  # 6
            assert summary.token_count == COUNT(text) <= self.budget.summary_cap
            assert any(named(text))  # never its header alone
            event("summary with an omission line" if named(text)[1] else "summary of entries only")
            assert any(m.kind is Kind.SUMMARY for m in view.messages)  # 7: its room is reserved
        self._check_view(view, None)

    def _check_view(self, view: ContextView, max_tokens: int | None) -> None:
        limit = self.budget.total if not max_tokens else min(self.budget.total, max_tokens)
        check_view_promises(view, self.state, self.budget, limit)  # 1, 2, 3, 5, 7, 8 on units

Promises.TestCase.settings = settings(
    max_examples=int(os.environ.get("MEMORYD_PROMISE_EXAMPLES", "60")),
    stateful_step_count=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
test_engine_promises = Promises.TestCase
