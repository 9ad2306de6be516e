"""Checks of the context promises (docs/tokens-and-budget.md, "The promises") shared by
the engine's property tests and the API tests: they read only what a user sees."""

from __future__ import annotations

import re

HEADER = re.compile(r"^Summary of earlier conversation \(through message #(\d+)\):$")
ENTRY = re.compile(r"^- \w+ #(\d+): ")
GROUP = re.compile(r"^- \w+ #(\d+) ")  # a tool-call group: its results follow as " → tool #N: "
RESULT = re.compile(r" → tool #(\d+): ")
OMISSION = re.compile(r"^- \(… messages? #(\d+)(?:–#(\d+))? omitted")
MARKER = re.compile(r"\[… (\d+) tokens elided; RAW read of message #(\d+) has it in full …\]")


def through_seq(summary: str) -> int:
    """The highest seq the summary says it covers (its first line)."""
    m = HEADER.match(summary.partition("\n")[0])
    assert m, f"summary without its header line: {summary[:80]!r}"
    return int(m.group(1))


def named(summary: str) -> tuple[set[int], list[tuple[int, int]]]:
    """Seqs the summary names as entries, and the seq ranges of its omission lines."""
    entries: set[int] = set()
    ranges: list[tuple[int, int]] = []
    for line in summary.splitlines()[1:]:
        if m := ENTRY.match(line):
            entries.add(int(m.group(1)))
        elif m := GROUP.match(line):
            entries.add(int(m.group(1)))
            entries.update(int(s) for s in RESULT.findall(line))
        elif m := OMISSION.match(line):
            lo = int(m.group(1))
            ranges.append((lo, int(m.group(2) or lo)))
    return entries, ranges


def covers(summary: str, seq: int) -> bool:
    """Promise 4: ``seq`` is within the summary's range and named by an entry or an omission line."""
    if not summary or seq > through_seq(summary):
        return False
    entries, ranges = named(summary)
    return seq in entries or any(lo <= seq <= hi for lo, hi in ranges)


def unaccounted(acked: set[int], stored: set[int], summary: str) -> set[int]:
    """Acknowledged seqs neither stored nor folded into the summary (promise 4: must be empty)."""
    return {s for s in acked - stored if not covers(summary, s)}


def is_cut_of(shown: str, full: str, seq: int) -> bool:
    """Promise 5: ``shown`` is ``full`` itself, or its beginning and end around the marker naming ``seq``."""
    if shown == full:
        return True
    m = MARKER.search(shown)
    if not m or int(m.group(2)) != seq:
        return False
    head, tail = shown[: m.start()].rstrip("\n"), shown[m.end():].lstrip("\n")
    return full.startswith(head) and full.endswith(tail) and len(head) + len(tail) < len(full)
