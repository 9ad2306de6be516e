"""The context view: what a CONTEXT read returns, never more than the budget.

Layout: pinned messages (oldest first), then the summary, then the recent messages,
oldest first (promise 7). The limit L is B, or the caller's smaller ``max_tokens``.

* Pinned messages are always complete. If they alone exceed L the view is refused
  rather than silently dropping a system prompt: InvalidArgument on ``max_tokens``
  when the caller asked for less than the pinned tokens, FailedPrecondition when the
  pinned tier outgrew the resource's own budget (the resource was reconfigured).
* The newest non-pinned message is always shown (promise 3): whole when it fits its
  room (recent room, its block cap), else cut to it (promise 5: beginning, marker,
  end; ``count(role, content)`` measures the cut). A caller's ``max_tokens`` too small
  for pinned + that cut is InvalidArgument, as for pinned alone.
* The summary is included whole when it fits its cap and what pinned and the newest
  turn's minimal cut leave of L. Its room is reserved in the budget (pinned cap), so at
  L = B it always fits.
* It appears as a ``StoredMessage`` with kind SUMMARY, the given role (``system``),
  content type ``summary``, effective priority 0 (it is never evicted from a view),
  ``seq`` = the summary's ``through_seq`` (the newest message it covers) and id
  ``summary-<through_seq>``.
* The other recent messages get what is left by the eviction rule (``select_kept``):
  min(recent_cap, L - pinned - summary) minus the newest turn's tokens, its block cap
  minus them, ``message_limit`` - 1 messages.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

from memoryd.engine.budget import Budget
from memoryd.engine.evict import select_kept, select_kept_units
from memoryd.engine.groups import Unit, build_units, flatten, has_calls, split_pinned, touches_groups
from memoryd.errors import FailedPrecondition, InvalidArgument
from memoryd.models import PINNED_PRIORITY, InstanceState, Kind, StoredMessage, Summary

SUMMARY_CONTENT_TYPE = "summary"
MessageCounter = Callable[[str, str], int]
"""``count(role, content)``: what a message costs (``TokenCounter.count_message``)."""
_CHARS_PER_TOKEN_BOUND = 16  # no token of real text spans more characters (as summarize)
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


def bytes_bound(role: str, content: str) -> int:
    """An upper bound of a message's tokens without a tokenizer: no BPE token is shorter
    than one byte, the role is one token and the framing three."""
    return len(content.encode()) + 4


def marker(elided: int, seq: int) -> str:
    return f"[… {elided} tokens elided; RAW read of message #{seq} has it in full …]"


def cut_to(m: StoredMessage, room: int, count: MessageCounter) -> StoredMessage | None:
    """``m`` shown in at most ``room`` tokens: its beginning and its end around a marker
    naming how many tokens were left out and the seq to read in full; None when not even
    the marker fits. The same input gives the same text.

    Counting is what costs (a long run of one character is slow to tokenize), so the
    length is found in a few counts: a first guess from the message's own characters per
    token, then proportional steps inside a bracket, stopping within 2 % of the room."""
    if m.token_count <= room:
        return m
    content = m.content
    wide = marker(10 ** len(str(m.token_count)) - 1, m.seq)  # the widest marker this message can need

    def parts(n: int) -> tuple[str, str]:
        return content[: n - n // 2], content[len(content) - n // 2:] if n // 2 else ""

    def assemble(n: int, elided: int) -> str:
        head, tail = parts(n)
        return "\n".join(p for p in (head, marker(elided, m.seq), tail) if p)

    base = count(m.role, wide)  # the marker alone, as wide as it can be
    if base > room:
        return None
    overhead = count(m.role, "")
    lo, hi = 0, min(len(content) - 1, _CHARS_PER_TOKEN_BOUND * (room + 1))
    lo_cost = base
    per_token = len(content) / max(1, m.token_count - overhead)  # characters per token of this message
    n = min(hi, int((room - base) * per_token))
    for _ in range(12):
        if n <= lo or n > hi:
            n = (lo + hi + 1) // 2
        if n <= lo:
            break
        head, tail = parts(n)
        cost = count(m.role, "\n".join(p for p in (head, wide, tail) if p))
        if cost <= room:
            lo, lo_cost = n, cost
            if cost >= room - max(2, room // 50):
                break
        else:
            hi = n - 1
        n = lo + int((n - lo) * (room - lo_cost) / max(1, cost - lo_cost)) if cost > lo_cost else hi
    head, tail = parts(lo)
    shown = count(m.role, head + tail) - overhead if lo else 0
    text = assemble(lo, max(0, m.token_count - overhead - shown))
    cost = count(m.role, text)
    while cost > room and lo > 0:  # a narrower marker re-tokenised differently: rare, step back
        lo = lo * 9 // 10
        head, tail = parts(lo)
        text = assemble(lo, max(0, m.token_count - overhead - (count(m.role, head + tail) - overhead if lo else 0)))
        cost = count(m.role, text)
    return m._replace(content=text, token_count=cost)


def context_view(
    state: InstanceState,
    budget: Budget,
    max_tokens: int | None = None,
    summary_role: str = "system",
    count: MessageCounter = bytes_bound,
) -> ContextView:
    """What a model should see of ``state``; ``max_tokens`` None or 0 means the budget B.

    ``count`` measures a cut newest message. The default (a byte bound: no tokenizer)
    never overstates the room, but prices the elision marker at ~75 instead of ~30
    tokens, so a tight view may be refused; the manager passes the real counter.

    Tool-call groups make the rules run on units (``engine/groups.py``). Finding them
    costs a pass over every message, so with one recent priority and no block cap the
    view is first computed on messages, and redone on units only when what it shows
    (or pins) calls tools or answers a call: otherwise no group can change the
    selection (a unit is never smaller nor younger than its members)."""
    if max_tokens is not None and max_tokens < 0:
        raise InvalidArgument("max_tokens", f"must be >= 0, got {max_tokens}")
    limit = budget.total if not max_tokens else min(budget.total, max_tokens)
    messages = state.messages  # oldest first, as every store returns them (InstanceState)
    levels = set(map(_priority, messages))
    one_level = len(levels - {PINNED_PRIORITY}) <= 1 and levels.isdisjoint(budget.block_caps)
    if one_level or not has_calls(messages):
        view = _view(state, budget, limit, max_tokens, summary_role, count, levels, check=one_level)
        if view is not None:
            return view
    view = _view(state, budget, limit, max_tokens, summary_role, count, levels, units=build_units(messages))
    assert view is not None  # only a checked message view gives up
    return view


def _view(
    state: InstanceState,
    budget: Budget,
    limit: int,
    max_tokens: int | None,
    summary_role: str,
    count: MessageCounter,
    levels: set[int],
    *,
    check: bool = False,
    units: list[Unit] | None = None,
) -> ContextView | None:
    """The view on messages (``units`` None) or on units. On messages with ``check``:
    None when what it would show touches a tool-call group (the caller redoes it on units)."""
    messages = state.messages
    recent: Sequence[StoredMessage] = ()
    recent_units: Sequence[Unit] = ()
    if units is not None:
        pinned_units, recent_units = split_pinned(units)
        pinned: Sequence[StoredMessage] = flatten(pinned_units)
    # StoredMessage.pinned spelled out: the property call doubles the cost of these passes,
    # and most conversations pin a system prompt.
    elif PINNED_PRIORITY in levels:
        pinned = [m for m in messages if m.effective_priority == PINNED_PRIORITY]
        recent = [m for m in messages if m.effective_priority != PINNED_PRIORITY]
    else:  # the common case: no copies
        pinned, recent = (), messages
    pinned_tokens = sum(map(_tokens, pinned))
    newest: StoredMessage | Unit | None = recent_units[-1] if recent_units else recent[-1] if recent else None
    need = 0  # the fewest tokens the newest turn can be shown in
    if newest is not None:
        need = newest.token_count
        summary_max = state.summary.token_count if state.summary is not None else 0
        if pinned_tokens + summary_max + need > limit:  # only then is the marker's cost needed
            need = min(need, least(newest, count))
    if pinned_tokens + need > limit:
        if limit < budget.total:
            raise InvalidArgument(
                "max_tokens",
                f"{max_tokens} is below the {pinned_tokens + need} tokens of pinned messages and the newest "
                "turn cut to its minimum; ask for at least that",
            )
        raise FailedPrecondition(
            f"pinned messages hold {pinned_tokens} tokens, too many for the budget of {budget.total}; "
            "raise the budget or clear the instance"
        )

    out = list(pinned)
    summary = state.summary
    summary_tokens = 0
    if (
        summary is not None
        and summary.content
        and summary.token_count <= min(budget.summary_cap, limit - pinned_tokens - need)
    ):
        out.append(summary_message(summary, summary_role))
        summary_tokens = summary.token_count

    kept: list[StoredMessage] = []
    if newest is not None:
        room = budget.recent_room(pinned_tokens, summary_tokens, limit)
        if units is not None:
            kept = recent_units_view(recent_units, room, budget.block_caps, budget.message_limit, count)
        else:
            kept = recent_view(recent, room, budget.block_caps, budget.message_limit, count)
            if check and (touches_groups(pinned) or touches_groups(kept) or touches_groups(recent[-1:])):
                return None
    out.extend(kept)
    stored_recent = sum(u.size for u in recent_units) if recent_units else len(recent)
    return ContextView(
        messages=tuple(out),
        token_count=pinned_tokens + summary_tokens + sum(map(_tokens, kept)),
        budget=limit,
        pinned_tokens=pinned_tokens,
        summary_tokens=summary_tokens,
        omitted=stored_recent - len(kept),
    )


def newest_room(newest: StoredMessage | Unit, room: int, block_caps: Mapping[int, int]) -> int:
    """The tokens the newest turn may show in: the recent room, within its block cap."""
    return max(0, min(room, block_caps.get(newest.effective_priority, room)))


def recent_view(
    recent: Sequence[StoredMessage],
    room: int,
    block_caps: Mapping[int, int],
    message_limit: int | None,
    count: MessageCounter,
) -> list[StoredMessage]:
    """The recent messages a view shows, oldest first: the newest (cut if it must be),
    then the older ones the eviction rule keeps in what it leaves."""
    newest = recent[-1]
    shown = cut_to(newest, newest_room(newest, room, block_caps), count)
    if shown is None:
        return []
    older = select_kept(recent[:-1], **older_caps(newest, shown.token_count, room, block_caps, message_limit))
    return [*older, shown]


def recent_units_view(
    recent: Sequence[Unit],
    room: int,
    block_caps: Mapping[int, int],
    message_limit: int | None,
    count: MessageCounter,
) -> list[StoredMessage]:
    """``recent_view`` on units: the newest unit (shown by ``show_unit``), then the older
    units the eviction rule keeps whole in what it leaves; their messages in seq order."""
    newest = recent[-1]
    shown = show_unit(newest, newest_room(newest, room, block_caps), count)
    if not shown:
        return []
    used = sum(map(_tokens, shown))
    caps = older_caps(newest, used, room, block_caps, message_limit, size=newest.size)
    return flatten([*select_kept_units(recent[:-1], **caps), Unit(newest.seq, 0, used, len(shown), tuple(shown))])


def older_caps(
    newest: StoredMessage | Unit,
    used: int,
    room: int,
    block_caps: Mapping[int, int],
    message_limit: int | None,
    size: int = 1,
) -> dict[str, Any]:
    """The eviction rule's caps for what is older than the newest turn (``size`` messages),
    once it holds ``used`` tokens."""
    caps = dict(block_caps)
    if newest.effective_priority in caps:
        caps[newest.effective_priority] = max(0, caps[newest.effective_priority] - used)
    return {
        "room": max(0, room - used),
        "block_caps": caps,
        "message_limit": None if message_limit is None else max(0, message_limit - size),
    }


# -- the newest unit when it is a tool-call group --------------------------------------

GROUP_MARKER = "[… {calls} and {results} elided ({tokens} tokens); RAW read of messages #{lo}–#{hi} has them in full …]"
"""What is left of a group too large for its room even with every result cut to its marker."""


def least(newest: StoredMessage | Unit, count: MessageCounter) -> int:
    """The fewest tokens the newest turn can be shown in (promise 3: it is always shown)."""
    if isinstance(newest, StoredMessage):
        return min(newest.token_count, count(newest.role, marker(newest.token_count, newest.seq)))
    if not newest.grouped:
        return least(newest.members[0], count)
    return min(newest.token_count, _collapse(newest, count).token_count)


def show_unit(unit: Unit, room: int, count: MessageCounter) -> list[StoredMessage]:
    """``unit`` shown in at most ``room`` tokens, its call never separated from its results.

    Whole when it fits. Otherwise the head (the assistant turn with the calls) stays whole
    and the room it leaves is shared by the results, max-min fair: each first gets its
    marker-only cut, then what is left goes equally to those still cut, a result smaller
    than its share being shown whole and leaving the rest to the others; each result is
    cut to its share (``cut_to``: beginning, marker, end). When the results' markers do
    not fit beside the head, the head's text is cut too (its calls stay whole: arguments
    are JSON and a cut would break them). When even that does not fit, the group is shown
    as one assistant message holding ``GROUP_MARKER`` (no calls, so no result is needed);
    RAW has every member in full. Empty when not even that fits."""
    if unit.token_count <= room:
        return list(unit.members)
    if not unit.grouped:
        cut = _cut(unit.members[0], room, count)
        return [cut] if cut is not None else []
    head, results = unit.members[0], unit.members[1:]
    mins = [_least_member(r, count) for r in results]
    left = room - head.token_count
    if left < sum(mins):
        shown_head = _cut(head, room - sum(mins), count)
        if shown_head is None:
            collapsed = _collapse(unit, count)
            return [collapsed] if collapsed.token_count <= room else []
        head, left = shown_head, sum(mins)
    shown = [head]
    for r, share in zip(results, fair_shares([r.token_count for r in results], mins, left), strict=True):
        cut = _cut(r, share, count)
        if cut is None:  # cannot happen: share >= the marker-only cut; kept safe
            collapsed = _collapse(unit, count)
            return [collapsed] if collapsed.token_count <= room else []
        shown.append(cut)
    return shown


def fair_shares(wants: Sequence[int], mins: Sequence[int], room: int) -> list[int]:
    """Each gets its minimum, then ``room``'s rest is shared max-min fair over what each
    still wants (deterministic; the sum never exceeds ``room`` when the minimums fit)."""
    give = list(mins)
    left = room - sum(mins)
    order = sorted(range(len(wants)), key=lambda i: (wants[i] - mins[i], i))
    for k, i in enumerate(order):
        g = max(0, min(wants[i] - mins[i], left // (len(order) - k)))
        give[i] += g
        left -= g
    return give


def _fixed(m: StoredMessage, count: MessageCounter) -> int:
    """Tokens of ``m`` besides its role and text content (calls, name, parts, extra): what a
    cut of its text cannot reduce."""
    if not (m.tool_calls or m.name or m.parts or m.extra):
        return 0
    return max(0, m.token_count - count(m.role, m.content))


def _least_member(m: StoredMessage, count: MessageCounter) -> int:
    return min(m.token_count, _fixed(m, count) + count(m.role, marker(10 ** len(str(m.token_count)) - 1, m.seq)))


def _cut(m: StoredMessage, room: int, count: MessageCounter) -> StoredMessage | None:
    """``cut_to`` for a message that may cost more than its text: the fixed part stays."""
    if m.token_count <= room:
        return m
    fixed = _fixed(m, count)
    if m.parts:
        return None  # parts are never cut
    cut = cut_to(m._replace(token_count=m.token_count - fixed), room - fixed, count)
    return None if cut is None else cut._replace(token_count=cut.token_count + fixed)


def _collapse(unit: Unit, count: MessageCounter) -> StoredMessage:
    head = unit.members[0]
    n, r = len(head.tool_calls), unit.size - 1
    text = GROUP_MARKER.format(
        calls=f"{n} tool call{'s' if n != 1 else ''}", results=f"{r} result{'s' if r != 1 else ''}",
        tokens=unit.token_count, lo=head.seq, hi=unit.seq,
    )
    return head._replace(content=text, tool_calls=(), parts=(), extra="", name="",
                         token_count=count(head.role, text))
