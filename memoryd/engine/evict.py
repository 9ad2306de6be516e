"""The one eviction rule, shared by the context view and the flush planner.

Given the non-pinned messages (oldest first), choose which to leave out:

1. block caps: for every priority with a block ``max_tokens``, drop that priority's
   oldest messages until its tokens fit its cap;
2. then, while the recent tokens exceed the room or the count exceeds the message
   limit, drop messages with the highest priority number first, oldest first within
   a priority.

So within one priority what stays is always the newest messages, and a message of
a more important priority is only dropped before a less important one because its
own block was over its cap.

Computed from the kept side: the priorities, most important first, are kept whole
while they fit what is left of the room and the limit; the first one that does not
fit keeps its newest messages that do, and every less important one goes. That is
the same selection (token counts are never negative, so "drop the oldest until it
fits" keeps exactly the longest newest run that fits), but a read of a large instance
costs the kept messages, not the stored ones (measured: docs/decisions.md, "Measured
costs behind the code"). The step-by-step form above is kept as the tests' oracle
(tests/unit/test_engine_properties.py).

With tool-call groups the rule runs on units (``engine/groups.py``): a group is one item
with its members' tokens, its lowest priority and its newest member's age, and it counts
as its members for ``message_limit``; it is kept or dropped whole
(``select_kept_units``). Without groups units are messages, and the message functions
below are the same rule at the cost it had before groups existed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import chain
from operator import attrgetter

from memoryd.engine.groups import Unit
from memoryd.models import StoredMessage

_priority = attrgetter("effective_priority")
_tokens = attrgetter("token_count")
_seq = attrgetter("seq")


def select_kept(
    messages: Sequence[StoredMessage],
    *,
    room: int,
    block_caps: Mapping[int, int],
    message_limit: int | None,
) -> Sequence[StoredMessage]:
    """The messages of ``messages`` (non-pinned, oldest first) that every cap lets stay, oldest first."""
    limit = len(messages) if message_limit is None else message_limit
    levels = set(map(_priority, messages))
    if len(levels) <= 1 and levels.isdisjoint(block_caps):
        return newest_within(messages, room, limit)  # one priority: the common case, no grouping

    groups: dict[int, list[StoredMessage]] = {}
    for m in messages:
        groups.setdefault(m.effective_priority, []).append(m)
    by_level: dict[int, Sequence[StoredMessage]] = dict(groups)
    for priority, cap in block_caps.items():
        level = by_level.get(priority)
        if level:
            by_level[priority] = newest_within(level, cap, len(level))
    parts: list[Sequence[StoredMessage]] = []
    for priority in sorted(by_level):
        level = by_level[priority]
        part = newest_within(level, room, limit)
        parts.append(part)
        if len(part) < len(level):
            break  # this priority did not fit whole: every less important one goes
        room -= sum(map(_tokens, part))
        limit -= len(part)
    if len(parts) == 1:
        return parts[0]
    return sorted(chain.from_iterable(parts), key=_seq)


def newest_within(messages: Sequence[StoredMessage], room: int, limit: int) -> Sequence[StoredMessage]:
    """The longest newest run of ``messages`` holding at most ``room`` tokens and ``limit`` messages:
    what dropping the oldest one at a time until both fit leaves."""
    n = len(messages)
    if n <= limit and sum(map(_tokens, messages)) <= room:
        return messages
    start, stop, used = n, max(0, n - max(limit, 0)), 0
    while start > stop:
        tokens = messages[start - 1].token_count
        if used + tokens > room:
            break
        used += tokens
        start -= 1
    return messages[start:]


def select_evictions(
    messages: Sequence[StoredMessage],
    *,
    room: int,
    block_caps: Mapping[int, int],
    message_limit: int | None,
) -> set[int]:
    """Seqs to drop from ``messages`` (non-pinned, oldest first) to satisfy every cap."""
    kept = select_kept(messages, room=room, block_caps=block_caps, message_limit=message_limit)
    if len(kept) == len(messages):
        return set()
    stay = set(map(_seq, kept))
    return {m.seq for m in messages if m.seq not in stay}


def select_kept_units(
    units: Sequence[Unit],
    *,
    room: int,
    block_caps: Mapping[int, int],
    message_limit: int | None,
) -> list[Unit]:
    """``select_kept`` over units (oldest first): whole units, ``message_limit`` counting members."""
    limit = sum(u.size for u in units) if message_limit is None else message_limit
    by_level: dict[int, list[Unit]] = {}
    for u in units:
        by_level.setdefault(u.effective_priority, []).append(u)
    for priority, cap in block_caps.items():
        level = by_level.get(priority)
        if level:
            by_level[priority] = newest_units_within(level, cap, sum(u.size for u in level))
    kept: list[Unit] = []
    for priority in sorted(by_level):
        level = by_level[priority]
        part = newest_units_within(level, room, limit)
        kept += part
        if len(part) < len(level):
            break  # this priority did not fit whole: every less important one goes
        room -= sum(u.token_count for u in part)
        limit -= sum(u.size for u in part)
    kept.sort(key=_seq)
    return kept


def newest_units_within(units: Sequence[Unit], room: int, limit: int) -> list[Unit]:
    """The longest newest run of ``units`` holding at most ``room`` tokens and ``limit`` messages."""
    start, used, count = len(units), 0, 0
    while start > 0:
        u = units[start - 1]
        if used + u.token_count > room or count + u.size > limit:
            break
        used += u.token_count
        count += u.size
        start -= 1
    return list(units[start:])
