"""The context view: what a CONTEXT read returns, never more than the budget.

Layout: pinned messages (oldest first), then the summary, then the recent messages
kept by the eviction rule (``memoryd.engine.evict``), oldest first.

* The limit L is B, or the caller's smaller ``max_tokens``.
* Pinned messages are always complete. If they alone exceed L the view is refused
  rather than silently dropping a system prompt: InvalidArgument on ``max_tokens``
  when the caller asked for less than the pinned tokens, FailedPrecondition when the
  pinned tier outgrew the resource's own budget (the resource was reconfigured).
* The summary is included whole when it fits both its cap and what pinned leaves of
  L; otherwise it is left out (it is never cut here: the engine holds no tokenizer).
* It appears as a ``StoredMessage`` with kind SUMMARY, the given role (``system``),
  content type ``summary``, effective priority 0 (it is never evicted from a view),
  ``seq`` = the summary's ``through_seq`` (the newest message it covers) and id
  ``summary-<through_seq>``.
* Recent messages get min(recent_cap, L - pinned - summary) tokens and at most
  ``message_limit`` messages.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from operator import attrgetter

from memoryd.engine.budget import Budget
from memoryd.engine.evict import select_kept
from memoryd.errors import FailedPrecondition, InvalidArgument
from memoryd.models import PINNED_PRIORITY, InstanceState, Kind, StoredMessage, Summary

SUMMARY_CONTENT_TYPE = "summary"
_priority = attrgetter("effective_priority")
_tokens = attrgetter("token_count")


@dataclass(frozen=True, slots=True)
class ContextView:
    messages: tuple[StoredMessage, ...]
    token_count: int
    budget: int  # the limit applied: min(B, max_tokens)
    pinned_tokens: int
    summary_tokens: int  # 0 when the summary is not in the view
    omitted: int  # stored non-pinned messages left out


def summary_message(summary: Summary, role: str = "system") -> StoredMessage:
    """The summary in message form, as reads return it."""
    return StoredMessage(
        seq=summary.through_seq,
        id=f"summary-{summary.through_seq}",
        role=role,
        content=summary.content,
        content_type=SUMMARY_CONTENT_TYPE,
        priority=None,
        effective_priority=0,
        token_count=summary.token_count,
        created_at_ms=summary.updated_at_ms,
        kind=Kind.SUMMARY,
    )


def context_view(
    state: InstanceState, budget: Budget, max_tokens: int | None = None, summary_role: str = "system"
) -> ContextView:
    """What a model should see of ``state``; ``max_tokens`` None or 0 means the budget B."""
    if max_tokens is not None and max_tokens < 0:
        raise InvalidArgument("max_tokens", f"must be >= 0, got {max_tokens}")
    limit = budget.total if not max_tokens else min(budget.total, max_tokens)

    messages = state.messages  # oldest first, as every store returns them (InstanceState)
    # StoredMessage.pinned spelled out: the property call doubles the cost of these passes
    # (138 against 75 µs over 1,000 messages), and most conversations pin a system prompt.
    if PINNED_PRIORITY in set(map(_priority, messages)):
        pinned: Sequence[StoredMessage] = [m for m in messages if m.effective_priority == PINNED_PRIORITY]
        recent: Sequence[StoredMessage] = [m for m in messages if m.effective_priority != PINNED_PRIORITY]
    else:  # the common case: no copies
        pinned, recent = (), messages
    pinned_tokens = sum(map(_tokens, pinned))
    if pinned_tokens > limit:
        if limit < budget.total:
            raise InvalidArgument(
                "max_tokens",
                f"{max_tokens} is below the {pinned_tokens} tokens of pinned messages; ask for at least that",
            )
        raise FailedPrecondition(
            f"pinned messages hold {pinned_tokens} tokens, more than the budget of {budget.total}; "
            "raise the budget or clear the instance"
        )

    out = list(pinned)
    summary = state.summary
    summary_tokens = 0
    if (
        summary is not None
        and summary.content
        and summary.token_count <= min(budget.summary_cap, limit - pinned_tokens)
    ):
        out.append(summary_message(summary, summary_role))
        summary_tokens = summary.token_count

    room = budget.recent_room(pinned_tokens, summary_tokens, limit)
    kept = select_kept(recent, room=room, block_caps=budget.block_caps, message_limit=budget.message_limit)
    out.extend(kept)
    return ContextView(
        messages=tuple(out),
        token_count=pinned_tokens + summary_tokens + sum(map(_tokens, kept)),
        budget=limit,
        pinned_tokens=pinned_tokens,
        summary_tokens=summary_tokens,
        omitted=len(recent) - len(kept),
    )
