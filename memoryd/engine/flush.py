"""When to flush and what a flush does (a FlushPlan: exact seqs to delete + summary).

``needs_flush`` works from the counters alone (what an append returns):
the total is at or above ``flush_at`` (summarize_threshold x B), the recent tier is
over its cap, or the message count is over ``message_limit``. The count includes
pinned messages (the counters do not split it), so with pinned messages a flush may
be scheduled a little early; the plan then does only what the rules require. Block
caps are not visible in the counters: they are enforced by every view and every
flush, and do not by themselves trigger one. Nothing is due without recent tokens.

``hybrid_summary``: fold the oldest ceil(summarize_oldest_percent % of the recent
messages), at least one, into the summary (by age, whatever their priority), then
evict by the eviction rule whatever the caps still require (pinned + summary + recent
within B, block caps, message_limit). Evicted messages are dropped, not summarised:
they are the ones the configuration marks least important. The new summary is cut
to min(summary_cap, B - pinned, old summary + folded tokens), so a flush never
increases the token total.

``fifo``: no summary (an existing one is kept); evict by the eviction rule until the
instance is back under the threshold on every bound: total < flush_at, recent <=
summarize_threshold x its room, non-pinned count <= summarize_threshold x
message_limit (hysteresis, so that an instance at its limit does not flush on every
append), and block caps.

Priority 0 is never folded or evicted. Plans are deterministic: same input, same plan.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from memoryd.config.model import MemoryResource
from memoryd.engine.budget import Budget, share
from memoryd.engine.evict import select_evictions
from memoryd.engine.summarize import summarize
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
    recent = [m for m in ordered if not m.pinned]
    pinned_tokens = sum(m.token_count for m in ordered if m.pinned)
    old_summary_tokens = state.summary.token_count if state.summary is not None else 0
    before = pinned_tokens + old_summary_tokens + sum(m.token_count for m in recent)
    if not recent:
        return FlushPlan(strategy, (), None, before, before)
    if strategy == "fifo":
        return _plan_fifo(recent, resource, budget, pinned_tokens, old_summary_tokens, before)
    return _plan_hybrid(state, recent, resource, budget, count, now_ms, pinned_tokens, before)


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
    pct = resource.flushing_strategy.summarize_oldest_percent
    n_fold = min(len(recent), max(1, math.ceil(len(recent) * pct / 100 - 1e-9)))
    folded, rest = recent[:n_fold], recent[n_fold:]
    old = state.summary
    old_tokens = old.token_count if old is not None else 0
    cap = min(budget.summary_cap, budget.total - pinned_tokens, old_tokens + sum(m.token_count for m in folded))
    content = summarize(old.content if old is not None else None, folded, max(0, cap), count)
    tokens = count(content) if content else 0
    through = max(folded[-1].seq, old.through_seq if old is not None else 0)
    summary = Summary(content=content, token_count=tokens, through_seq=through, updated_at_ms=now_ms)

    room = budget.recent_room(pinned_tokens, tokens)
    evicted = select_evictions(rest, room=room, block_caps=budget.block_caps, message_limit=budget.message_limit)
    kept_tokens = sum(m.token_count for m in rest if m.seq not in evicted)
    remove = tuple(sorted([m.seq for m in folded] + list(evicted)))
    return FlushPlan("hybrid_summary", remove, summary, before, pinned_tokens + tokens + kept_tokens)


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
    evicted = select_evictions(recent, room=max(0, room), block_caps=budget.block_caps, message_limit=limit)
    kept_tokens = sum(m.token_count for m in recent if m.seq not in evicted)
    return FlushPlan("fifo", tuple(sorted(evicted)), None, before, pinned_tokens + summary_tokens + kept_tokens)
