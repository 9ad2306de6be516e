"""Rule-based, deterministic summary of a folded span of messages.

Format (one entry per line, whitespace inside a message collapsed to single spaces)::

    Summary of earlier conversation (through message #120):
    <the earlier summary's lines, oldest first>
    - user #13: <first message of the folded span>
    - (… 41 messages omitted …)
    - assistant #119: <most recent messages of the folded span>
    - user #120: ...

Cutting to ``cap`` uses the real token count (``count`` returns what the summary
costs as a message). Order of sacrifice:

1. the new span gets the room left after the header, minus up to half of it reserved
   for the earlier summary; inside that, the first message takes at most half when
   there are more, then the newest messages are added newest-first while they fit,
   and the first one that does not fit is cut (prefix + "…") into what is left;
2. the earlier summary keeps its beginning (the oldest context, e.g. the original
   request) and is cut at its end to fill the rest;
3. should joining still overflow, whole lines are dropped (earlier summary first,
   then the oldest kept span entries); a header that alone exceeds ``cap`` gives "".

Every cut is a binary search over character prefixes with the full text re-counted,
so the result always fits and the same input always gives the same text.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from memoryd.models import StoredMessage

HEADER_PREFIX = "Summary of earlier conversation"
ELLIPSIS = "…"
_CHARS_PER_TOKEN_BOUND = 16
"""Texts are trimmed to 16 characters per token of room before counting (real text
averages ~4), so a huge folded span costs no more than a small one."""

Counter = Callable[[str], int]


def _one_line(text: str) -> str:
    return " ".join(text.split())


def entry(m: StoredMessage, max_chars: int | None = None) -> str:
    content = m.content if max_chars is None else m.content[: 2 * max_chars]
    line = f"- {m.role} #{m.seq}: {_one_line(content)}"
    return line if max_chars is None else line[:max_chars]


def _omitted(n: int) -> str:
    return f"- ({ELLIPSIS} {n} message{'s' if n != 1 else ''} omitted {ELLIPSIS})"


def header(through_seq: int) -> str:
    return f"{HEADER_PREFIX} (through message #{through_seq}):"


def body_of(previous: str | None) -> str:
    """The lines of an earlier summary without its header line."""
    if not previous:
        return ""
    first, _sep, rest = previous.partition("\n")
    return rest if first.startswith(HEADER_PREFIX) else previous


def cut_prefix(text: str, fits: Callable[[str], bool]) -> str:
    """The longest ``text[:n] + "…"`` (or ``text`` itself) that ``fits``; "" if none does."""
    if fits(text):
        return text
    lo, hi = 0, len(text)  # text[:lo]+… fits (checked below), text[:hi]+… is not known to
    if not fits(text[:0] + ELLIPSIS):
        return ""
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if fits(text[:mid] + ELLIPSIS):
            lo = mid
        else:
            hi = mid
    return text[:lo] + ELLIPSIS


def _join(*parts: str | Sequence[str]) -> str:
    lines: list[str] = []
    for p in parts:
        if isinstance(p, str):
            if p:
                lines.append(p)
        else:
            lines.extend(x for x in p if x)
    return "\n".join(lines)


def _span_lines(span: Sequence[StoredMessage], room: int, count: Counter) -> list[str]:
    """First entry + omission marker + newest entries, fitting ``room`` tokens."""
    bound = _CHARS_PER_TOKEN_BOUND * (room + 1)
    first_room = room if len(span) == 1 else max(1, room // 2)
    first = cut_prefix(entry(span[0], bound), lambda s: count(s) <= first_room)
    head = [first] if first else []
    newest = span[-1:0:-1]
    tail: list[str] = []

    def assemble(candidate: str, omitted: int) -> str:
        return _join(head, [_omitted(omitted)] if omitted else [], [candidate], tail)

    for i, m in enumerate(newest):
        e = entry(m, bound)
        omitted = len(newest) - i - 1
        if count(assemble(e, omitted)) <= room:
            tail.insert(0, e)
            continue
        part = cut_prefix(e, lambda s: count(assemble(s, omitted)) <= room)  # noqa: B023
        if part and part != ELLIPSIS:
            tail.insert(0, part)
        else:
            omitted += 1
        return [*head, _omitted(omitted), *tail] if omitted else [*head, *tail]
    return [*head, *tail]


def summarize(
    previous: str | None, span: Sequence[StoredMessage], cap: int, count: Counter
) -> str:
    """A summary of ``previous`` + ``span`` (oldest first) costing at most ``cap`` tokens."""
    if not span:
        raise ValueError("summarize needs at least one message to fold")
    head = header(max(m.seq for m in span))
    if cap <= 0 or count(head) > cap:
        return ""
    prev_body = body_of(previous)
    bound = _CHARS_PER_TOKEN_BOUND * (cap + 1)
    # A span far longer than the cap could hold (at ~4 characters per token) is not
    # counted whole: the cutting below handles it at a cost independent of its length.
    if len(prev_body) + sum(len(m.content) for m in span) <= 2 * bound:
        full = _join(head, prev_body, [entry(m) for m in span])
        if count(full) <= cap:
            return full

    room = cap - count(head)
    prev_tokens = count(prev_body) if prev_body else 0
    new_room = room - min(prev_tokens, room // 2)
    lines = _span_lines(span, max(1, new_room), count)

    if prev_body:
        prev_body = cut_prefix(prev_body[:bound],
                               lambda s: count(_join(head, s, lines)) <= cap)
        if prev_body == ELLIPSIS:
            prev_body = ""
    text = _join(head, prev_body, lines)
    while count(text) > cap:
        if prev_body:
            prev_body = ""
        elif lines:
            lines.pop(1 if len(lines) > 1 else 0)
        else:
            return ""
        text = _join(head, prev_body, lines)
    return text
