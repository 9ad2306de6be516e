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
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from memoryd.models import StoredMessage


def select_evictions(
    messages: Sequence[StoredMessage],
    *,
    room: int,
    block_caps: Mapping[int, int],
    message_limit: int | None,
) -> set[int]:
    """Seqs to drop from ``messages`` (non-pinned, oldest first) to satisfy every cap."""
    levels: dict[int, list[StoredMessage]] = {}
    for m in messages:
        levels.setdefault(m.effective_priority, []).append(m)
    evicted: set[int] = set()
    tokens = sum(m.token_count for m in messages)
    count = len(messages)

    for priority, cap in block_caps.items():
        level = levels.get(priority)
        if not level:
            continue
        level_tokens = sum(m.token_count for m in level)
        i = 0
        while level_tokens > cap:
            m = level[i]
            evicted.add(m.seq)
            level_tokens -= m.token_count
            tokens -= m.token_count
            count -= 1
            i += 1
        levels[priority] = level[i:]

    limit = count if message_limit is None else message_limit
    if tokens <= room and count <= limit:
        return evicted
    for priority in sorted(levels, reverse=True):
        for m in levels[priority]:
            if tokens <= room and count <= limit:
                return evicted
            evicted.add(m.seq)
            tokens -= m.token_count
            count -= 1
    return evicted
