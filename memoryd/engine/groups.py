"""Tool-call groups: the units the budget rules keep, fold or drop whole.

A **group** is an assistant message with ``tool_calls`` (its head) plus the tool messages
whose ``tool_call_id`` is one of its call ids (its results), wherever they were appended.
Every other message is a unit of its own, including a tool message whose call is not in
the input (an orphan: the output converters never emit it without its call).

A unit's

* **priority** is the lowest (most important) effective priority of its members, so no
  member is ever dropped earlier than its own priority would drop it; a unit with a
  pinned member is pinned whole;
* **tokens** are its members' tokens; its **size** (for ``message_limit``) its members;
* **age** (``seq``) is its newest member's seq: the unit holding the newest stored
  message is the newest unit (promise 3), and a late result makes its group newer.

A group is **pending** while some call has no result. Only the newest unit can be
pending in a running agent; it is protected as the newest unit always is (shown, never
folded). A pending group that is not the newest unit (the agent stopped mid-call and
the conversation went on) is an ordinary unit; the output converters answer its missing
calls with a placeholder result so the history stays valid (docs/tokens-and-budget.md,
promise 8).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from operator import attrgetter, itemgetter
from typing import NamedTuple

from memoryd.models import PINNED_PRIORITY, StoredMessage

_seq = attrgetter("seq")
_calls = itemgetter(11)  # StoredMessage.tool_calls, read by position (cheaper than the property)


class Unit(NamedTuple):
    """One message, or one tool-call group; quacks like a StoredMessage for the eviction rule."""

    seq: int  # its newest member's seq: the unit's age
    effective_priority: int  # the lowest of its members'
    token_count: int  # its members' sum
    size: int  # its members
    members: tuple[StoredMessage, ...]  # seq order; a group's head first

    @property
    def grouped(self) -> bool:
        return bool(self.members[0].tool_calls)


def has_calls(messages: Iterable[StoredMessage]) -> bool:
    """True when some message calls tools: only then can a group exist."""
    return any(map(_calls, messages))


def touches_groups(messages: Iterable[StoredMessage]) -> bool:
    """True when one of ``messages`` calls tools or answers a call (cheap; for the fast
    path's check of what it kept)."""
    return any(m.tool_calls or m.tool_call_id for m in messages)


def single(m: StoredMessage) -> Unit:
    return Unit(m.seq, m.effective_priority, m.token_count, 1, (m,))


def build_units(messages: Sequence[StoredMessage]) -> list[Unit]:
    """The units of ``messages`` (oldest first, as stores return them), oldest unit first."""
    members: list[list[StoredMessage]] = []
    owner: dict[str, int] = {}  # call id -> index of its group in ``members``
    for m in messages:
        if m.tool_calls:
            for call in m.tool_calls:
                owner[call.id] = len(members)
            members.append([m])
        elif m.tool_call_id and m.role == "tool" and m.tool_call_id in owner:
            members[owner[m.tool_call_id]].append(m)
        else:
            members.append([m])
    units = [
        single(ms[0]) if len(ms) == 1 and not ms[0].tool_calls else Unit(
            ms[-1].seq, min(m.effective_priority for m in ms), sum(m.token_count for m in ms), len(ms), tuple(ms)
        )
        for ms in members
    ]
    units.sort(key=_seq)  # by age: a group's newest member may follow later units' heads
    return units


def split_pinned(units: Sequence[Unit]) -> tuple[list[Unit], list[Unit]]:
    """(pinned units, the others), each oldest first."""
    pinned = [u for u in units if u.effective_priority == PINNED_PRIORITY]
    if not pinned:
        return [], list(units)
    return pinned, [u for u in units if u.effective_priority != PINNED_PRIORITY]


def flatten(units: Iterable[Unit]) -> list[StoredMessage]:
    """The members of ``units``, in seq order."""
    out = [m for u in units for m in u.members]
    out.sort(key=_seq)
    return out


def unanswered(unit: Unit) -> list[str]:
    """The call ids of a group that have no result among its members (empty: complete)."""
    answered = {m.tool_call_id for m in unit.members[1:]}
    return [c.id for c in unit.members[0].tool_calls if c.id not in answered]
