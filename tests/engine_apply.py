"""Apply a FlushPlan to an InstanceState, purely: the tests' model of what a store's
apply-flush must leave (the stores themselves apply plans atomically, in Lua or in process).

Counters are recomputed from the content, never adjusted, so they cannot drift.
Idempotent: seqs already gone are skipped, and ``flush_count`` / ``last_flush_at_ms``
move only when the plan changed something, so applying a plan twice equals once.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from memoryd.models import FlushPlan, InstanceMeta, InstanceState, StoredMessage, Summary


def recount(base: InstanceMeta, messages: Iterable[StoredMessage], summary: Summary | None) -> InstanceMeta:
    """``base`` with every content-derived counter recomputed from ``messages`` and ``summary``."""
    count = pinned = recent = last = 0
    for m in messages:
        count += 1
        last = max(last, m.seq)
        if m.pinned:
            pinned += m.token_count
        else:
            recent += m.token_count
    return replace(
        base,
        message_count=count,
        pinned_tokens=pinned,
        recent_tokens=recent,
        summary_tokens=summary.token_count if summary is not None else 0,
        last_seq=max(base.last_seq, last),
    )


def apply_plan(state: InstanceState, plan: FlushPlan, *, now_ms: int | None = None) -> InstanceState:
    """The state after ``plan``; ``now_ms`` (else the new summary's time) stamps the flush."""
    remove = set(plan.remove_seqs)
    kept = tuple(m for m in state.messages if m.seq not in remove)
    summary = state.summary
    changed = len(kept) != len(state.messages)
    if plan.summary is not None and plan.summary != summary:
        summary = plan.summary
        changed = True
    meta = recount(state.meta, kept, summary)
    if changed:
        stamp = now_ms if now_ms is not None else (
            plan.summary.updated_at_ms if plan.summary is not None else meta.last_flush_at_ms
        )
        meta = replace(meta, flush_count=meta.flush_count + 1, last_flush_at_ms=stamp)
    return InstanceState(meta=meta, summary=summary, messages=kept)
