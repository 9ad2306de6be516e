"""The context view from the newest end of an instance (pure, no I/O).

A CONTEXT read should cost the budget, not the instance's length. The store hands over a
``TailState``: counters, summary, every pinned message and a suffix of the non-pinned ones
(the newest). The view is computed on it by the unchanged rule (``context_view``); this
module says whether that view is provably the view of the whole instance. When it is not,
the caller reads a longer suffix, or the whole instance.

Why a suffix can decide. With one non-pinned priority, the eviction rule keeps a newest
run: walking back from the newest, whole units (a message, or with tool-call groups an
assistant message with the tool results answering it) are kept while they fit the room,
the priority's block cap and ``message_limit``, and the walk stops at the first that does
not; everything older goes. If the suffix holds no partial group (every tool result in it
answers a call made in it), its units are exactly the whole instance's newest units, in the
same order. Then a view of the suffix that left something out stopped its walk inside the
suffix, and the walk over the whole instance stops at the same unit: the same messages
are kept. The suffix's own ``omitted`` misses the messages older than it; the counters
give the true number.

Not decided, so read further or whole: a suffix that starts inside a group, or whose view
kept all of it (an older message might fit too); an instance with several non-pinned
priorities (a more important priority's messages are kept however old they are); pinned
messages that call tools or answer a call (a group with a pinned member is pinned whole,
so its other members may be anywhere in the instance).
"""

from __future__ import annotations

from dataclasses import replace

from memoryd.engine.budget import Budget
from memoryd.engine.groups import build_units, members
from memoryd.engine.view import ContextView, MessageCounter, bytes_bound, context_view
from memoryd.models import Kind, StoredMessage, TailState


def view_from_tail(
    tail: TailState,
    budget: Budget,
    max_tokens: int | None = None,
    summary_role: str = "system",
    count: MessageCounter = bytes_bound,
) -> ContextView | None:
    """``context_view`` of the whole instance, computed from ``tail``; None when ``tail``
    does not decide it (read a longer suffix when ``may_decide(tail)``, else the whole).
    Raises what ``context_view`` raises when the tail decides: those checks see only pinned
    messages, the summary and the newest unit, which such a tail holds whole."""
    if not tail.complete and (not may_decide(tail) or not _groups_whole(tail.recent)):
        return None  # before the view: a pinned group's members may lie outside the suffix
    view = context_view(tail.as_state(), budget, max_tokens, summary_role, count)
    if tail.complete:
        return view
    # The walk stopped inside the suffix iff its oldest unit is left out. Compared by seq, not by
    # counting shown messages: a newest group too large for its room is shown collapsed into
    # one message, so a count would take "fewer shown" for "something left out".
    oldest = tail.recent[0].seq
    newest_unit = members(build_units(tail.recent)[-1])
    if oldest in {m.seq for m in newest_unit}:
        return None  # the suffix is the newest unit alone: it is always shown, older ones may fit too
    if any(m.seq == oldest and m.kind is Kind.MESSAGE for m in view.messages):
        return None  # the suffix's view kept all of it: an older message might fit as well
    return replace(view, omitted=view.omitted + tail.recent_total - len(tail.recent))


def may_decide(tail: TailState) -> bool:
    """Whether some suffix of this instance can decide its view (else read it whole)."""
    return tail.complete or (len(tail.priorities) == 1 and not any(map(_in_group, tail.pinned)))


def _in_group(m: StoredMessage) -> bool:
    return bool(m.tool_calls) or bool(m.tool_call_id)


def _groups_whole(recent: tuple[StoredMessage, ...]) -> bool:
    """No tool result in ``recent`` answers a call made before it (the suffix starts at a
    group boundary)."""
    answers = {m.tool_call_id for m in recent if m.tool_call_id}
    if not answers:
        return True
    calls = {c.id for m in recent for c in m.tool_calls}
    return answers <= calls
