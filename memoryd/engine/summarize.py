"""Rule-based, deterministic, extractive summary of folded messages (promises 4 and 6).

Format (one line per item, whitespace inside a message collapsed to single spaces)::

    Summary of earlier conversation (through message #120):
    - (… messages #1–#40 omitted: A-48213; 12 Baker Street; bob@example.com …)
    - user #41: My order A-48213 never arrived; can you resend it to 12 Baker Street?
    - assistant #42: Resent A-48213 today, tracking 1Z999AA1.
    ...

A tool-call group (an assistant turn with calls and the tool messages answering them,
always folded whole) is one entry naming every member::

    - assistant #12 called get_order(id="A-48213") → tool #13: {"status": "shipped", …}

its calls rendered ``name(key=value, …)`` from their JSON arguments (the raw text when
it is not a JSON object), each result's salient span after `` → tool #seq: ``. "→" in
the spans themselves is written "->", so the line parses back unambiguously.

Every folded message stays named: as an entry (``- role #seq: span``), in a group entry,
or inside an omission line stating the seq range it stands for and the facts it held. The first line
states the highest seq covered. Each fold appends one entry per folded message holding
its most salient span (``salient``: sentences with numbers, identifiers, codes, emails,
URLs, phone numbers, amounts, dates, addresses, names, questions and decisions come
before filler), then, when the text is over ``cap`` tokens, compresses from the oldest
end: (1) entries are shortened to their most salient 160, 80, then 40 characters,
oldest first; (2) the oldest items but the newest entry are merged into one omission
line that keeps their seq range and facts; (3) that line's newest facts are dropped;
(4) then the newest entry is merged in too, and facts dropped again. A cap too small for the
header and one bare omission line gives "" (the configuration refuses such caps:
MIN_SUMMARY_TOKENS).

Costs are estimated line by line (``count`` of each line) and the result is verified
with ``count`` of the whole text, so it always fits; the same input gives the same text.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import pairwise

from memoryd.models import StoredMessage, ToolCall

HEADER_PREFIX = "Summary of earlier conversation"
ELLIPSIS = "…"
ENTRY_CHARS = 240
"""The most characters a new entry's span gets."""
WIDTHS = (160, 80, 40)
"""Successive lengths older entries are shortened to before being merged."""
MAX_FACTS = 48
"""Facts an omission line keeps at most (its oldest)."""
_SCAN_CHARS = 4000
"""Only a message's first and last characters are searched for its span and facts, so a
huge message costs no more than a long one."""

_MERGE_SCAN_CHARS = 32_000
"""Characters of a huge fold's oldest messages searched for facts, at most, so that a
3,000-message fold costs about what a 100-message one does."""

Counter = Callable[[str], int]

_HEADER = re.compile(r"^" + re.escape(HEADER_PREFIX) + r" \(through message #(\d+)\):$")
_ENTRY = re.compile(r"^- (\w+) #(\d+): (.*)$")
_GROUP = re.compile(r"^- (\w+) #(\d+) (.*)$")  # tried after _ENTRY: no colon after the seq
_RESULT_SEP = re.compile(r" → tool #(\d+): ")
_OMISSION = re.compile(r"^- \(… messages? #(\d+)(?:–#(\d+))? omitted(?:: (.*))? …\)$")
_FACT_PATTERNS = (
    r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+",  # email
    r"https?://[^\s;)\]]+",  # URL
    r"\+?\(?\d[\d ().-]{6,}\d",  # phone-like
    r"[$€£¥]\s?\d[\d,.]*\d|\d[\d,.]*\s?(?:USD|EUR|GBP|dollars|euros)\b",  # amount
    r"\d{4}-\d{2}-\d{2}|\d{1,2}/\d{1,2}/\d{2,4}",  # date
    r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)[a-z]*\.? \d{1,2}(?:st|nd|rd|th)?(?:,? \d{4})?",
    r"\d+ (?:[A-Z][a-z]+ ){1,3}(?:Street|St|Avenue|Ave|Road|Rd|Lane|Ln|Boulevard|Blvd|Drive|Dr|Way|Place|Pl)\b",
    r"\b[A-Za-z]+(?:-[A-Za-z]+)*-?\d(?:[\w-]*\w)?|\b\d(?:[\w-]*\w)?",  # numbers, identifiers, codes
    r"\b[A-Z][a-z]+(?: [A-Z][a-z]+)+",  # multi-word proper names
    r"(?<=[a-z,;] )[A-Z][a-z]{2,}\b",  # a capitalised word inside a sentence: a name
)
_FACT = re.compile("|".join(f"(?:{p})" for p in _FACT_PATTERNS))
_SENTENCE = re.compile(r"(?<=[.!?])\s+")
_DECISION = re.compile(r"\b(?:decid|agree|confirm|approv|cancel|refund|resen|ship|deliver|schedul|chang|"
                       r"will|must)", re.I)
_FILLER = re.compile(r"^(?:hi|hello|hey|thanks|thank you|ok|okay|sure|great|good|yes|no)\b", re.I)


@dataclass(slots=True)
class _Entry:
    seq: int
    role: str
    text: str
    results: list[tuple[int, str]] | None = None  # a group: ``text`` holds its calls, these its results

    def line(self) -> str:
        if self.results is None:
            return f"- {self.role} #{self.seq}: {self.text}"
        return f"- {self.role} #{self.seq} {self.text}" + "".join(f" → tool #{s}: {t}" for s, t in self.results)

    def width(self) -> int:
        return len(self.text) + sum(len(t) for _s, t in self.results or ())

    def shorten(self, width: int) -> None:
        if self.results is None:
            self.text = shorten(self.text, width)
            return
        each = max(20, width // (1 + len(self.results)))
        self.text = shorten(self.text, each)
        self.results = [(s, shorten(t, each)) for s, t in self.results]


@dataclass(slots=True)
class _Omission:
    lo: int
    hi: int
    facts: list[str] = field(default_factory=list)

    def line(self) -> str:
        what = f"message #{self.lo}" if self.lo == self.hi else f"messages #{self.lo}–#{self.hi}"
        held = f": {'; '.join(self.facts)}" if self.facts else ""
        return f"- ({ELLIPSIS} {what} omitted{held} {ELLIPSIS})"


_Item = _Entry | _Omission


def _one_line(text: str) -> str:
    return " ".join(text.split())


def header(through_seq: int) -> str:
    return f"{HEADER_PREFIX} (through message #{through_seq}):"


_MAYBE_FACT = re.compile(r"[\d@$€£¥]|://|\S [A-Z][a-z]")


@lru_cache(maxsize=8192)
def facts(text: str) -> tuple[str, ...]:
    """The concrete facts of ``text``, in order of appearance, each once (cached: a fold
    scores the same sentences at every width, and the next fold parses them again)."""
    out: list[str] = []
    if not _MAYBE_FACT.search(text):  # filler: no digit, no @, no currency, no name (fast path)
        return ()
    for m in _FACT.finditer(text):
        fact = m.group(0).strip(" .,;")
        if len(fact) >= 2 and ";" not in fact and fact not in out:
            out.append(fact)
    return tuple(out)


@lru_cache(maxsize=8192)
def _score(sentence: str) -> int:
    """Facts first (a sentence holding one beats any without), then questions and decisions."""
    score = 10 * len(facts(sentence))
    if sentence.rstrip().endswith("?"):
        score += 2
    if _DECISION.search(sentence):
        score += 2
    if _FILLER.match(sentence):
        score -= 2
    return score


def shorten(text: str, width: int) -> str:
    """``salient(text, width)``, followed by the facts of ``text`` it could not hold, so
    that a shortened entry still carries every fact it had (as far as ``width`` allows)."""
    short = salient(text, width)
    missing = [f for f in facts(text) if f not in short]
    if not missing:
        return short
    tail = f" {ELLIPSIS} {'; '.join(missing)}"
    if len(tail) > width // 2:
        return "; ".join(facts(text))[:width]
    return salient(text, width - len(tail)) + tail


def salient(text: str, width: int) -> str:
    """The most salient span of ``text`` (one line) in at most ``width`` characters:
    its best sentences in their order, joined by "…" where sentences were skipped."""
    if len(text) <= width:
        return text
    if len(text) > 2 * _SCAN_CHARS:
        text = text[:_SCAN_CHARS] + f" {ELLIPSIS} " + text[-_SCAN_CHARS:]
    sentences = _SENTENCE.split(text)
    scores = [_score(x) for x in sentences]
    ranked = sorted(range(len(sentences)), key=lambda i: (-scores[i], i))
    chosen: list[int] = []
    used = 0
    for i in ranked:
        extra = len(sentences[i]) + (2 if chosen else 0)
        if used + extra <= width and (scores[i] > 0 or not chosen):
            chosen.append(i)
            used += extra
        elif not chosen:  # the best sentence alone is too long: a window around its first fact
            return _window(sentences[i], width)
    chosen.sort()
    parts = [sentences[chosen[0]]]
    for prev, i in pairwise(chosen):
        parts.append(("" if i == prev + 1 else f"{ELLIPSIS} ") + sentences[i])
    return " ".join(parts)[:width]


def _window(sentence: str, width: int) -> str:
    """At most ``width`` characters of ``sentence`` around its first fact ("…" where cut),
    followed by the facts the window could not hold."""
    fs = facts(sentence)
    tail = ""
    for _ in range(3):  # the tail shortens the window, which may drop another fact: settle
        room = width - len(tail)
        if room < 12:
            return "; ".join(fs)[:width]
        found = _FACT.search(sentence)
        start = 0 if found is None or found.end() <= room - 2 else max(0, found.start() - room // 4)
        end = start + room - 2
        window = (ELLIPSIS if start else "") + sentence[start:end] + (ELLIPSIS if end < len(sentence) else "")
        missing = [f for f in fs if f not in window]
        new_tail = f" {ELLIPSIS} {'; '.join(missing)}" if missing else ""
        if new_tail == tail:
            break
        tail = new_tail
    return (window + tail)[:width]


def _parse(previous: str | None) -> tuple[list[_Item], int]:
    """The items of an earlier summary and the highest seq it covers."""
    if not previous:
        return [], 0
    first, _sep, body = previous.partition("\n")
    m = _HEADER.match(first)
    if m is None:
        return [_note(previous, 0)], 0
    through = int(m.group(1))
    items: list[_Item] = []
    for line in body.splitlines():
        if e := _ENTRY.match(line):
            items.append(_Entry(int(e.group(2)), e.group(1), e.group(3)))
        elif o := _OMISSION.match(line):
            lo = int(o.group(1))
            items.append(_Omission(lo, int(o.group(2) or lo), o.group(3).split("; ") if o.group(3) else []))
        elif g := _GROUP.match(line):
            calls, *rest = _RESULT_SEP.split(g.group(3))
            results = [(int(rest[i]), rest[i + 1]) for i in range(0, len(rest) - 1, 2)]
            items.append(_Entry(int(g.group(2)), g.group(1), calls, results))
        elif line.strip():
            return [_note(body, through)], through  # not ours: its text becomes an omission line's facts
    return items, through


def _note(text: str, through: int) -> _Omission:
    """An earlier summary not written in this format (e.g. by the agent's own model, via
    ApplyFlush): an omission line for messages #1 to its ``through`` (0: unknown, fixed
    by the caller) whose facts are its sentences, so it shrinks from its end."""
    return _Omission(1, through, [x for x in _SENTENCE.split(_one_line(text)) if x][:MAX_FACTS])


def _range(item: _Item) -> tuple[int, int]:
    if isinstance(item, _Entry):
        return item.seq, max([item.seq, *(s for s, _t in item.results or ())])
    return item.lo, item.hi


def _facts_of(item: _Item) -> Sequence[str]:
    if isinstance(item, _Omission):
        return item.facts
    if not item.results:
        return facts(item.text)
    out = list(facts(item.text))
    for _s, t in item.results:
        out += [f for f in facts(t) if f not in out]
    return out


def _call_text(call: ToolCall) -> str:
    """``name(key=value, …)`` from a call's JSON arguments; ``name(raw text)`` otherwise."""
    try:
        args = json.loads(call.arguments) if call.arguments.strip() else {}
    except ValueError:
        args = None
    if isinstance(args, dict):
        inner = ", ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in args.items())
    else:
        inner = call.arguments
    return f"{call.name}({inner})"


def _clean(text: str, width: int, grouped: bool = True) -> str:
    line = _one_line(_scanned(text))
    return shorten(line.replace("→", "->") if grouped else line, width)


def _scanned(content: str) -> str:
    if len(content) > 2 * _SCAN_CHARS:
        return content[:_SCAN_CHARS] + f" {ELLIPSIS} " + content[-_SCAN_CHARS:]
    return content


def _entries(span: Sequence[StoredMessage]) -> list[_Entry]:
    """One entry per folded message, one per tool-call group (at its head's place)."""
    out: list[_Entry] = []
    owner: dict[str, _Entry] = {}
    answers: dict[int, list[StoredMessage]] = {}
    for m in span:
        if m.tool_calls:
            e = _Entry(m.seq, m.role, "", [])
            answers[m.seq] = []
            for call in m.tool_calls:
                owner[call.id] = e
            out.append(e)
        elif m.role == "tool" and m.tool_call_id in owner:
            answers[owner[m.tool_call_id].seq].append(m)
        else:
            out.append(_Entry(m.seq, m.role, _clean(m.content, ENTRY_CHARS, grouped=False)))
    heads = {m.seq: m for m in span if m.tool_calls}
    for e in out:
        if e.results is None:
            continue
        head, results = heads[e.seq], answers[e.seq]
        each = max(40, ENTRY_CHARS // (1 + len(results)))
        calls = "called " + ", ".join(_call_text(c) for c in head.tool_calls)
        said = _one_line(head.content)
        e.text = _clean(f"{said} — {calls}" if said else calls, max(each, ENTRY_CHARS // 2))
        e.results = [(r.seq, _clean(r.content, each)) for r in results]
    return out


def _merge(a: _Item, b: _Item) -> _Omission:
    """One omission line standing for ``a`` and ``b`` (consecutive, ``a`` older)."""
    (lo_a, hi_a), (lo_b, hi_b) = _range(a), _range(b)
    kept = list(_facts_of(a))
    for f in _facts_of(b) if len(kept) < MAX_FACTS else ():
        if f not in kept and len(kept) < MAX_FACTS:
            kept.append(f)
    return _Omission(min(lo_a, lo_b), max(hi_a, hi_b), kept[:MAX_FACTS])


def summarize(previous: str | None, span: Sequence[StoredMessage], cap: int, count: Counter) -> str:
    """A summary of ``previous`` + ``span`` (oldest first) costing at most ``cap`` tokens."""
    if not span:
        raise ValueError("summarize needs at least one message to fold")
    items, prev_through = _parse(previous)
    if items and isinstance(items[0], _Omission) and items[0].hi == 0:  # a note of unknown range
        items[0].hi = max(1, span[0].seq - 1)
    head = header(max(prev_through, max(m.seq for m in span)))
    if cap <= 0 or count(head) > cap:
        return ""
    most = max(1, cap // 6)  # every line costs at least ~6 tokens: merge what could never fit
    overflow = len(items) + len(span) - most
    if overflow > 0:  # a huge fold: the oldest go straight into one omission line
        older: list[_Item | StoredMessage] = [*items, *span]
        merged = _merge(older[0], older[0]) if not isinstance(older[0], StoredMessage) else \
            _Omission(older[0].seq, older[0].seq)
        scan = _MERGE_SCAN_CHARS
        for item in older[: overflow + 1]:
            if isinstance(item, StoredMessage):
                merged.lo, merged.hi = min(merged.lo, item.seq), max(merged.hi, item.seq)
                if scan > 0 and len(merged.facts) < MAX_FACTS:
                    text = item.content[: min(scan, _SCAN_CHARS)]
                    scan -= len(text)
                    merged = _merge(merged, _Entry(item.seq, item.role, text))
            else:
                merged = _merge(merged, item)
        rest = older[overflow + 1:]
        items = [merged, *(i for i in rest if not isinstance(i, StoredMessage))]
        span = [m for m in rest if isinstance(m, StoredMessage)]
    items.extend(_entries(span))

    base = count("")
    costs = [count(i.line()) - base + 1 for i in items]
    budget = cap - count(head)

    def fits() -> str | None:
        if sum(costs) > budget + 1:
            return None
        text = "\n".join([head, *(i.line() for i in items)])
        return text if count(text) <= cap else None

    if (done := fits()) is not None:
        return done
    for width in WIDTHS:  # 1. shorten entries, oldest first
        for k, item in enumerate(items):
            if isinstance(item, _Entry) and item.width() > width:
                item.shorten(width)
                costs[k] = count(item.line()) - base + 1
                if (done := fits()) is not None:
                    return done
    for keep in (2, 1):  # 2. merge the oldest items into an omission line, 3. drop its newest facts
        while len(items) > keep:
            first = _merge(items[0], items[1])
            items[:2] = [first]
            costs[:2] = [count(first.line()) - base + 1]
            if (done := fits()) is not None:
                return done
        if not isinstance(items[0], _Omission):
            items[0] = _merge(items[0], items[0])
        only = items[0]
        assert isinstance(only, _Omission)
        while only.facts:
            if len(only.facts) == 1:
                only.facts.clear()
            else:
                del only.facts[max(1, len(only.facts) * 3 // 4):]
            costs[0] = count(only.line()) - base + 1
            if (done := fits()) is not None:
                return done
    return ""
