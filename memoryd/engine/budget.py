"""The budget B of a resource and its split into tiers (docs/tokens-and-budget.md).

All caps are whole tokens. Ratio shares are floored, so the three shares of a
``token_allocation`` never add up to more than B:

* ``total`` (B) = ``max_tokens``, else floor(``max_context_ratio`` x context window).
* ``pinned_cap`` = min(B, the priority-0 block's ``max_tokens``, floor(system x B) when
  ``token_allocation`` is set). Appends that would overflow it are refused.
* ``summary_cap`` = min(``summary_tokens``, floor(long_term x B) when allocated).
* ``recent_cap`` = floor(short_term x B) when allocated, else B. At read/flush time the
  recent tier gets min(recent_cap, B - pinned in use - summary in use): whatever the
  caps say, pinned + summary + recent never exceeds B.
* ``block_caps`` = for every priority > 0 with a block ``max_tokens``: min(that,
  recent_cap) (the lower of block cap and ratio wins). Several blocks with the same
  priority: the lowest cap.
* ``flush_at`` = ceil(summarize_threshold x B): at this total a flush is due.
* ``summary_reserve`` = ``summary_cap`` under hybrid_summary and external, else 0: the room every
  view and every pinned append leave for the summary (promises 2 and 7).

With no explicit pinned cap (no priority-0 block ``max_tokens``, no allocation), the
pinned cap is B - summary_reserve - MIN_RECENT_TOKENS, so pinned messages can never
crowd out the summary or the newest turn. ``budget_problems`` lists the configurations
that cannot keep the promises (docs/tokens-and-budget.md); the loader reports them
with file, line and field, and the manager refuses them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from memoryd.config.model import MemoryResource
from memoryd.errors import ConfigError, ResourceExhausted
from memoryd.models import PINNED_PRIORITY

MIN_RECENT_TOKENS = 64
"""Room a configuration must leave for recent turns: enough for the newest turn cut to
its beginning, its end and the elision marker (~30 tokens)."""
MIN_SUMMARY_TOKENS = 64
"""Smallest summary cap under hybrid_summary: the header (~20 tokens), an omission line
(~22) and a few facts, so a summary is never its header alone."""
_EPS = 1e-9  # 0.29 * 100 == 28.999999999999996 must floor to 29


def share(ratio: float, total: int) -> int:
    """floor(ratio x total), robust to binary floating point."""
    return max(0, math.floor(ratio * total + _EPS))


@dataclass(frozen=True, slots=True)
class Budget:
    total: int
    pinned_cap: int
    summary_cap: int
    recent_cap: int
    block_caps: Mapping[int, int]
    message_limit: int | None
    flush_at: int
    summary_reserve: int = 0

    def recent_room(self, pinned_tokens: int, summary_tokens: int, limit: int | None = None) -> int:
        """Tokens the recent tier may use next to the given pinned and summary tokens."""
        total = self.total if limit is None else min(self.total, limit)
        return max(0, min(self.recent_cap, total - pinned_tokens - summary_tokens))


def compute_budget(resource: MemoryResource, context_window: int | None) -> Budget:
    """The budget of ``resource``; ``context_window`` of its model serves ``max_context_ratio``."""
    if resource.max_tokens is not None:
        total = resource.max_tokens
    elif resource.max_context_ratio is not None:
        if context_window is None:
            raise ConfigError(
                [f"memory '{resource.id}': max_context_ratio needs a model with a known context window "
                 f"(model: {resource.model!r})"]
            )
        total = share(resource.max_context_ratio, context_window)
    else:
        raise ConfigError([f"memory '{resource.id}': set max_tokens or max_context_ratio"])
    if total <= 0:
        raise ConfigError([f"memory '{resource.id}': the token budget must be positive, got {total}"])

    alloc = resource.token_allocation
    pinned_cap = total
    explicit_pinned = alloc is not None
    summary_cap = resource.flushing_strategy.summary_tokens
    recent_cap = total
    if alloc is not None:
        pinned_cap = min(pinned_cap, share(alloc.system, total))
        summary_cap = min(summary_cap, share(alloc.long_term, total))
        recent_cap = share(alloc.short_term, total)
    summary_cap = max(0, min(summary_cap, total))

    block_caps: dict[int, int] = {}
    for block in resource.priority_blocks:
        if block.max_tokens is None:
            continue
        if block.priority == PINNED_PRIORITY:
            pinned_cap = min(pinned_cap, block.max_tokens)
            explicit_pinned = True
        else:
            cap = min(block.max_tokens, recent_cap)
            block_caps[block.priority] = min(cap, block_caps.get(block.priority, cap))

    reserve = summary_cap if resource.flushing_strategy.summarises else 0
    if not explicit_pinned:
        pinned_cap = total - reserve - MIN_RECENT_TOKENS
    threshold = resource.flushing_strategy.summarize_threshold
    flush_at = max(1, math.ceil(threshold * total - _EPS))
    return Budget(
        total=total,
        pinned_cap=max(0, pinned_cap),
        summary_cap=summary_cap,
        recent_cap=recent_cap,
        block_caps=MappingProxyType(dict(sorted(block_caps.items()))),
        message_limit=resource.message_limit,
        flush_at=flush_at,
        summary_reserve=reserve,
    )


Problem = tuple[tuple[str, ...], str]
"""A field path (e.g. ``("flushing_strategy", "summary_tokens")``) and what is wrong with it."""


def budget_problems(resource: MemoryResource, context_window: int | None) -> list[Problem]:
    """Why ``resource`` cannot keep the context promises, field by field (empty: it can)."""
    try:
        b = compute_budget(resource, context_window)
    except ConfigError:
        return []  # reported elsewhere (missing budget or context window)
    out: list[Problem] = []
    alloc = resource.token_allocation
    hybrid = resource.flushing_strategy.summarises  # hybrid_summary, or external (it falls back to it)
    if hybrid and b.summary_cap < MIN_SUMMARY_TOKENS:
        field = ("flushing_strategy", "summary_tokens")
        if alloc is not None and share(alloc.long_term, b.total) < resource.flushing_strategy.summary_tokens:
            field = ("token_allocation", "long_term")
        out.append((field, f"the summary cap is {b.summary_cap} tokens; hybrid_summary needs at least "
                           f"{MIN_SUMMARY_TOKENS} (header, an omission line and its facts), or use type: fifo"))
    if b.recent_cap < MIN_RECENT_TOKENS:
        out.append((("token_allocation", "short_term"),
                    f"leaves {b.recent_cap} tokens for recent turns; at least {MIN_RECENT_TOKENS} are needed"))
    left = b.total - b.pinned_cap - b.summary_reserve
    if left < MIN_RECENT_TOKENS:
        field = ("flushing_strategy", "summary_tokens")
        for i, block in enumerate(resource.priority_blocks):
            if block.priority == PINNED_PRIORITY and block.max_tokens == b.pinned_cap:
                field = (f"priority_blocks[{i}]", "max_tokens")
        if alloc is not None and share(alloc.system, b.total) == b.pinned_cap:
            field = ("token_allocation", "system")
        out.append((field, f"pinned cap {b.pinned_cap} + summary cap {b.summary_reserve} leave {max(0, left)} of "
                           f"the {b.total}-token budget for recent turns; at least {MIN_RECENT_TOKENS} are needed"))
    for i, block in enumerate(resource.priority_blocks):
        if block.priority != PINNED_PRIORITY and block.max_tokens is not None and block.max_tokens < MIN_RECENT_TOKENS:
            out.append(((f"priority_blocks[{i}]", "max_tokens"),
                        f"{block.max_tokens} cannot hold the newest message of its priority cut to fit; "
                        f"give at least {MIN_RECENT_TOKENS}"))
    return out


def message_room(budget: Budget, effective_priority: int, pinned_tokens: int) -> int:
    """The most tokens a non-pinned message of this priority can show in a view at the
    resource's budget, next to ``pinned_tokens`` and a summary at its cap."""
    room = min(budget.recent_cap, budget.total - pinned_tokens - budget.summary_reserve)
    return max(0, min(room, budget.block_caps.get(effective_priority, room)))


def check_oversize(budget: Budget, sizes: list[tuple[int, int, int]], pinned_tokens: int) -> None:
    """``oversize: reject``: raise ResourceExhausted for the first non-pinned message of a
    batch (index in the request, effective priority, tokens) larger than its room."""
    pinned = pinned_tokens + sum(t for _i, p, t in sizes if p == PINNED_PRIORITY)
    for index, priority, token_count in sizes:
        if priority == PINNED_PRIORITY:
            continue
        room = message_room(budget, priority, pinned)
        if token_count > room:
            raise ResourceExhausted(
                f"messages[{index}]: {token_count} tokens, more than the {room} tokens of room a context view "
                f"has for it (oversize: reject); nothing was stored"
            )
