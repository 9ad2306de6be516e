"""When to flush and what a flush does (a FlushPlan: exact seqs to delete + summary).

``needs_flush`` works from the counters alone (what an append returns):
the total is at or above ``flush_at`` (summarize_threshold x B), the recent tier is
over its cap, or the message count is over ``message_limit``. The count includes
pinned messages (the counters do not split it), so with pinned messages a flush may
be scheduled a little early; the plan then does only what the rules require. Block
caps are not visible in the counters: they are enforced by every view and every
flush, and do not by themselves trigger one. Nothing is due without recent tokens.

``hybrid_summary``: fold the oldest ceil(summarize_oldest_percent % of the recent
messages), at least one, into the summary (by age, whatever their priority), and with
them every older message the eviction rule would leave out of a view at the
resource's budget with the summary at its cap (block caps, ``message_limit``, room).
Nothing is dropped: every removed message is folded (promise 4). The newest
non-pinned message is never folded (promise 3): with one recent message there is
nothing to do. The new summary may use its whole cap, min(summary_cap, B - pinned).

``external`` plans as ``hybrid_summary`` (PlanFlush returns the seqs; the caller writes the
summary, within ``summary_room``; the daemon's fallback fold is this rule's).

``fifo``: no summary (an existing one is kept); evict by the eviction rule, never the
newest message, until the instance is back under the threshold on every bound:
total < flush_at, recent <= summarize_threshold x its room, non-pinned count <=
summarize_threshold x message_limit (hysteresis, so that an instance at its limit does
not flush on every append), and block caps.

Priority 0 is never folded or evicted. Plans are deterministic: same input, same plan.

With tool-call groups both strategies count, fold and evict units (``engine/groups.py``):
"the oldest ceil(p %) of the recent messages" becomes the oldest ceil(p %) of the recent
units, "the newest message" the newest unit, and a group is folded or evicted whole. A
pinned unit (one with a priority-0 member) is never folded. Without tool calls the plan
is computed on messages, as before.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

from memoryd.config.model import MemoryResource
from memoryd.engine.budget import Budget, share
from memoryd.engine.evict import select_evictions, select_kept_units
from memoryd.engine.groups import Item, build_units, flatten, has_calls, members, size, split_pinned
from memoryd.engine.summarize import summarize
from memoryd.engine.view import newest_room, older_caps
from memoryd.models import FlushPlan, InstanceMeta, InstanceState, StoredMessage, Summary


def needs_flush(meta: InstanceMeta, resource: MemoryResource, budget: Budget) -> bool:
    """True when the counters say a background flush is due."""
    if meta.recent_tokens <= 0:
        return False
    if meta.token_count >= budget.flush_at or meta.recent_tokens > budget.recent_cap:
        return True
    return budget.message_limit is not None and meta.message_count > budget.message_limit


def plan_flush(
    state: InstanceState,
    resource: MemoryResource,
    budget: Budget,
    count: Callable[[str], int],
    now_ms: int,
) -> FlushPlan:
    """The flush of ``state`` under ``resource``'s strategy.

    ``count`` returns the tokens a summary text costs as a stored message (the manager
    passes ``functools.partial(counter.count_message, "system")``).
    """
    strategy = resource.flushing_strategy.type
    ordered = state.messages  # oldest first (InstanceState)
    if has_calls(ordered):
        return _plan_units(state, resource, budget, count, now_ms)
    recent = [m for m in ordered if not m.pinned]
    pinned_tokens = sum(m.token_count for m in ordered if m.pinned)
    old_summary_tokens = state.summary.token_count if state.summary is not None else 0
    before = pinned_tokens + old_summary_tokens + sum(m.token_count for m in recent)
    if not recent:
        return FlushPlan(strategy, (), None, before, before)
    if strategy == "fifo":
        return _plan_fifo(recent, resource, budget, pinned_tokens, old_summary_tokens, before)
    return _plan_hybrid(state, recent, resource, budget, count, now_ms, pinned_tokens, before)


def summary_room(budget: Budget, pinned_tokens: int) -> int:
    """The most tokens a new summary may hold next to ``pinned_tokens``: what the hybrid
    rule's summary may use, and the cap of a caller's summary (ApplyFlush)."""
    return max(0, min(budget.summary_cap, budget.total - pinned_tokens))


def _plan_hybrid(
    state: InstanceState,
    recent: list[StoredMessage],
    resource: MemoryResource,
    budget: Budget,
    count: Callable[[str], int],
    now_ms: int,
    pinned_tokens: int,
    before: int,
) -> FlushPlan:
    if len(recent) < 2:
        return FlushPlan("hybrid_summary", (), None, before, before)
    pct = resource.flushing_strategy.summarize_oldest_percent
    n_fold = min(len(recent) - 1, max(1, math.ceil(len(recent) * pct / 100 - 1e-9)))
    rest = recent[n_fold:]
    room = budget.recent_room(pinned_tokens, budget.summary_cap)
    evicted = _left_out(rest, room, budget.block_caps, budget.message_limit)
    span = recent[:n_fold] + [m for m in rest if m.seq in evicted]
    old = state.summary
    cap = summary_room(budget, pinned_tokens)
    content = summarize(old.content if old is not None else None, span, cap, count)
    tokens = count(content) if content else 0
    through = max(max(m.seq for m in span), old.through_seq if old is not None else 0)
    summary = Summary(content=content, token_count=tokens, through_seq=through, updated_at_ms=now_ms)
    kept_tokens = sum(m.token_count for m in rest if m.seq not in evicted)
    remove = tuple(sorted(m.seq for m in span))
    return FlushPlan("hybrid_summary", remove, summary, before, pinned_tokens + tokens + kept_tokens)


def _left_out(
    recent: list[StoredMessage], room: int, block_caps: Mapping[int, int], message_limit: int | None
) -> set[int]:
    """Seqs of ``recent`` a view with ``room`` leaves out: never the newest (promise 3),
    which holds min(its tokens, its room) — what a view shows of it, cut or whole."""
    newest = recent[-1]
    used = min(newest.token_count, newest_room(newest, room, block_caps))
    return select_evictions(recent[:-1], **older_caps(newest, used, room, block_caps, message_limit))


def _plan_fifo(
    recent: list[StoredMessage],
    resource: MemoryResource,
    budget: Budget,
    pinned_tokens: int,
    summary_tokens: int,
    before: int,
) -> FlushPlan:
    threshold = resource.flushing_strategy.summarize_threshold
    hard_room = budget.recent_room(pinned_tokens, summary_tokens)
    room = min(share(threshold, hard_room), budget.flush_at - 1 - pinned_tokens - summary_tokens)
    limit = None if budget.message_limit is None else share(threshold, budget.message_limit)
    evicted = _left_out(recent, max(0, room), budget.block_caps, limit)
    kept_tokens = sum(m.token_count for m in recent if m.seq not in evicted)
    return FlushPlan("fifo", tuple(sorted(evicted)), None, before, pinned_tokens + summary_tokens + kept_tokens)


def _plan_units(
    state: InstanceState, resource: MemoryResource, budget: Budget, count: Callable[[str], int], now_ms: int
) -> FlushPlan:
    """``plan_flush`` on units: the same rules, a group folded or evicted whole."""
    strategy = resource.flushing_strategy.type
    pinned_units, recent = split_pinned(build_units(state.messages))
    pinned_tokens = sum(u.token_count for u in pinned_units)
    old = state.summary
    old_summary_tokens = old.token_count if old is not None else 0
    before = pinned_tokens + old_summary_tokens + sum(u.token_count for u in recent)
    if len(recent) < (2 if resource.flushing_strategy.summarises else 1):  # the newest unit is never folded
        return FlushPlan(strategy, (), None, before, before)
    if strategy == "fifo":
        threshold = resource.flushing_strategy.summarize_threshold
        hard_room = budget.recent_room(pinned_tokens, old_summary_tokens)
        room = min(share(threshold, hard_room), budget.flush_at - 1 - pinned_tokens - old_summary_tokens)
        limit = None if budget.message_limit is None else share(threshold, budget.message_limit)
        gone = _units_left_out(recent, max(0, room), budget.block_caps, limit)
        kept_tokens = sum(u.token_count for u in recent if u.seq not in gone)
        remove = tuple(sorted(m.seq for u in recent if u.seq in gone for m in members(u)))
        return FlushPlan("fifo", remove, None, before, pinned_tokens + old_summary_tokens + kept_tokens)
    pct = resource.flushing_strategy.summarize_oldest_percent
    n_fold = min(len(recent) - 1, max(1, math.ceil(len(recent) * pct / 100 - 1e-9)))
    rest = recent[n_fold:]
    room = budget.recent_room(pinned_tokens, budget.summary_cap)
    gone = _units_left_out(rest, room, budget.block_caps, budget.message_limit)
    span = flatten([*recent[:n_fold], *(u for u in rest if u.seq in gone)])
    content = summarize(old.content if old is not None else None, span, summary_room(budget, pinned_tokens), count)
    tokens = count(content) if content else 0
    through = max(max(m.seq for m in span), old.through_seq if old is not None else 0)
    summary = Summary(content=content, token_count=tokens, through_seq=through, updated_at_ms=now_ms)
    kept_tokens = sum(u.token_count for u in rest if u.seq not in gone)
    remove = tuple(sorted(m.seq for m in span))
    return FlushPlan("hybrid_summary", remove, summary, before, pinned_tokens + tokens + kept_tokens)


def _units_left_out(
    recent: list[Item], room: int, block_caps: Mapping[int, int], message_limit: int | None
) -> set[int]:
    """Ages (``Unit.seq``) of the units a view with ``room`` leaves out: never the newest,
    which holds min(its tokens, its room)."""
    newest = recent[-1]
    used = min(newest.token_count, newest_room(newest, room, block_caps))
    older = recent[:-1]
    kept = select_kept_units(older, **older_caps(newest, used, room, block_caps, message_limit, size=size(newest)))
    stay = {u.seq for u in kept}
    return {u.seq for u in older if u.seq not in stay}
