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
_answers = itemgetter(12)  # StoredMessage.tool_call_id


class Unit(NamedTuple):
    """A tool-call group; quacks like a StoredMessage for the eviction rule. A message that is
    no group's member is its own unit and stays a StoredMessage (``Item``): building a tuple
    per message made a 10,000-message view ~5 times slower."""

    seq: int  # its newest member's seq: the unit's age
    effective_priority: int  # the lowest of its members'
    token_count: int  # its members' sum
    size: int  # its members
    members: tuple[StoredMessage, ...]  # seq order; the head first

    @property
    def grouped(self) -> bool:
        return bool(self.members[0].tool_calls)


Item = StoredMessage | Unit
"""A unit: a message alone, or a group."""


def size(item: Item) -> int:
    return item.size if item.__class__ is Unit else 1


def members(item: Item) -> tuple[StoredMessage, ...]:
    return item.members if item.__class__ is Unit else (item,)  # type: ignore[return-value]


def has_calls(messages: Iterable[StoredMessage]) -> bool:
    """True when some message calls tools: only then can a group exist."""
    return any(map(_calls, messages))


def touches_groups(messages: Sequence[StoredMessage]) -> bool:
    """True when one of ``messages`` calls tools or answers a call (cheap; for the fast
    path's check of what it kept)."""
    return any(map(_calls, messages)) or any(map(_answers, messages))


def build_units(messages: Sequence[StoredMessage]) -> list[Item]:
    """The units of ``messages`` (oldest first, as stores return them), oldest unit first."""
    items: list[StoredMessage | list[StoredMessage]] = []
    owner: dict[str, list[StoredMessage]] = {}  # call id -> its group's members so far
    grouped = False
    for m in messages:
        if m[11]:  # tool_calls
            group = [m]
            for call in m[11]:
                owner[call.id] = group
            items.append(group)
        elif m[12] and m[2] == "tool" and m[12] in owner:  # a result of a call seen before
            owner[m[12]].append(m)
            grouped = True
        else:
            items.append(m)
    units: list[Item] = [
        x if x.__class__ is StoredMessage else _unit(x)  # type: ignore[arg-type]
        for x in items
    ]
    if grouped:
        units.sort(key=_seq)  # by age: a group's newest member may follow later units
    return units


def _unit(ms: list[StoredMessage]) -> Unit:
    priority, tokens = ms[0][6], ms[0][7]  # effective_priority, token_count
    for m in ms[1:]:
        tokens += m[7]
        if m[6] < priority:
            priority = m[6]
    return Unit(ms[-1][0], priority, tokens, len(ms), tuple(ms))


def split_pinned(units: Sequence[Item]) -> tuple[list[Item], list[Item]]:
    """(pinned units, the others), each oldest first."""
    pinned = [u for u in units if u.effective_priority == PINNED_PRIORITY]
    if not pinned:
        return [], list(units)
    return pinned, [u for u in units if u.effective_priority != PINNED_PRIORITY]


def flatten(units: Iterable[Item]) -> list[StoredMessage]:
    """The members of ``units``, in seq order."""
    out: list[StoredMessage] = []
    grouped = False
    for u in units:
        if u.__class__ is Unit:
            out.extend(u.members)
            grouped = True
        else:
            out.append(u)  # type: ignore[arg-type]
    if grouped:
        out.sort(key=_seq)
    return out
