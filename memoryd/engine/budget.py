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
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from memoryd.config.model import MemoryResource
from memoryd.errors import ConfigError, PinnedTierFull, ResourceExhausted
from memoryd.models import PINNED_PRIORITY

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
        else:
            cap = min(block.max_tokens, recent_cap)
            block_caps[block.priority] = min(cap, block_caps.get(block.priority, cap))

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
    )


def check_pinned_append(budget: Budget, pinned_tokens: int, adding: int) -> None:
    """Raise PinnedTierFull when ``adding`` pinned tokens would overflow the pinned cap.

    The stores apply the same rule atomically (``pinned_cap`` argument of append); this
    lets the manager refuse a batch before touching the store.
    """
    if adding > 0 and pinned_tokens + adding > budget.pinned_cap:
        raise PinnedTierFull(
            f"pinned tier full: {pinned_tokens} + {adding} pinned tokens exceed the cap of {budget.pinned_cap}"
        )


def message_ceiling(budget: Budget, effective_priority: int) -> int:
    """The largest token count a single message of this priority can have and still
    appear in a context view (its tier cap, and its block cap)."""
    if effective_priority == PINNED_PRIORITY:
        return budget.pinned_cap
    return min(budget.recent_cap, budget.block_caps.get(effective_priority, budget.recent_cap))


def check_message_fits(budget: Budget, effective_priority: int, token_count: int, field: str = "messages") -> None:
    """Raise ResourceExhausted for a message that could never be part of a context view."""
    ceiling = message_ceiling(budget, effective_priority)
    if token_count > ceiling:
        raise ResourceExhausted(
            f"{field}: message of {token_count} tokens exceeds the {ceiling} tokens its tier "
            f"(priority {effective_priority}) can hold"
        )
