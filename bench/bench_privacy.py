"""Redaction cost: RE2 (memoryd.privacy) vs Python's backtracking ``re``.

Two tables:
1. catastrophic patterns (``(a+)+$``, ``(?:a|aa)+b``) on inputs that make Python's
   ``re`` backtrack exponentially; RE2 stays linear, up to 1 MB;
2. the per-message cost of a realistic policy (SSN, card number, a user pattern)
   on a ~430-byte chat message, clean and with two matches.

Run: ``.venv/bin/python bench/bench_privacy.py`` (results in bench/README.md, "Privacy").
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

from memoryd.config.model import PrivacyPolicy
from memoryd.privacy import PrivacyFilter

CATASTROPHIC = r"(a+)+$"
POLICY = (r"\b\d{3}-\d{2}-\d{4}\b", r"\b(?:\d[ -]?){12,15}\d\b", r"(?i)api[_-]?key=\w+")
CLEAN = ("Thanks for reaching out about your order. I checked the shipment status and it left our "
         "warehouse yesterday; the carrier estimates delivery within three business days. If it does "
         "not arrive by Friday, reply here and I will open a claim with the carrier and send a "
         "replacement right away. Is there anything else I can help you with today regarding the "
         "account settings, invoices or the mobile app?")
DIRTY = CLEAN[:200] + " ssn 123-45-6789 card 4111 1111 1111 1111 " + CLEAN[200:]


def best_of(fn: Callable[[], object], repeat: int, number: int = 1) -> float:
    """Best wall time of one call, in seconds."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        best = min(best, (time.perf_counter() - start) / number)
    return best


def fmt(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.1f} µs"


def catastrophic(pattern: str, no_match: Callable[[int], str], match: Callable[[int], str]) -> None:
    """Python re on the failing input (exponential) vs RE2 on failing and fully matching inputs."""
    rx = re.compile(pattern)
    f = PrivacyFilter(PrivacyPolicy(redact_patterns=(pattern,)))
    print(f"### `{pattern}`: no match `{no_match(3)}...`, full match `{match(3)}...`\n")
    print("| n | Python `re`, no match | RE2, no match | RE2, full match (redacts all n) |")
    print("|---:|---:|---:|---:|")
    for n in (16, 18, 20, 22, 24, 1_000, 100_000, 1_000_000):
        bad, good = no_match(n), match(n)
        assert f.redact(bad) == (bad, 0) and f.redact(good) == ("[REDACTED]", 1)
        py = fmt(best_of(lambda t=bad: rx.search(t), 3)) if n <= 24 else "(not run: ~2^n)"
        miss = best_of(lambda t=bad: f.redact(t), 5)
        hit = best_of(lambda t=good: f.redact(t), 5)
        print(f"| {n:,} | {py} | {fmt(miss)} | {fmt(hit)} |")
    print()


def per_message() -> None:
    f = PrivacyFilter(PrivacyPolicy(redact_patterns=POLICY))
    rxs = [re.compile(p) for p in POLICY]

    def python_re(text: str) -> tuple[str, int]:
        total = 0
        for rx in rxs:
            text, n = rx.subn("[REDACTED]", text)
            total += n
        return text, total

    print(f"### A 3-pattern policy on one chat message ({len(CLEAN)} / {len(DIRTY)} bytes)\n")
    print("| message | Python `re` (sequential subn) | RE2 (`PrivacyFilter.redact`) | redactions |")
    print("|---|---:|---:|---:|")
    for name, text in (("clean", CLEAN), ("2 matches", DIRTY)):
        _, n = f.redact(text)
        py = best_of(lambda t=text: python_re(t), 7, 2000)
        ours = best_of(lambda t=text: f.redact(t), 7, 2000)
        print(f"| {name} | {fmt(py)} | {fmt(ours)} | {n} |")
    print()


if __name__ == "__main__":
    catastrophic(CATASTROPHIC, lambda n: "a" * n + "!", lambda n: "a" * n)
    catastrophic(r"(?:a|aa)+b", lambda n: "a" * n, lambda n: "a" * n + "b")
    per_message()
