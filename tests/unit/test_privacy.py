"""Privacy policy: RE2 redaction (linear time, rejected patterns) and non-persistable messages."""

from __future__ import annotations

import re

import pytest

from memoryd.config.model import PrivacyPolicy
from memoryd.errors import ResourceExhausted
from memoryd.privacy import PrivacyFilter, compile_pattern

SSN = r"\b\d{3}-\d{2}-\d{4}\b"
CARD = r"\b(?:\d[ -]?){12,15}\d\b"  # 13..16 digits, optionally grouped by spaces or dashes


def flt(*patterns: str, types: tuple[str, ...] = (), replacement: str = "[REDACTED]") -> PrivacyFilter:
    return PrivacyFilter(PrivacyPolicy(
        redact_patterns=patterns, non_persistable_message_types=types, default_redaction_string=replacement,
    ))


def test_ssn_is_redacted_and_counted() -> None:
    out, n = flt(SSN).redact("my ssn is 123-45-6789, hers 987-65-4321.")
    assert out == "my ssn is [REDACTED], hers [REDACTED]."
    assert n == 2


def test_card_numbers_in_common_spellings_are_redacted() -> None:
    text = "visa 4111 1111 1111 1111, amex 378282246310005, mc 5555-5555-5555-4444; order 12345"
    out, n = flt(CARD).redact(text)
    assert out == "visa [REDACTED], amex [REDACTED], mc [REDACTED]; order 12345"
    assert n == 3


def test_user_pattern_with_custom_replacement() -> None:
    out, n = flt(r"(?i)api[_-]?key=\w+", replacement="<secret>").redact("call with API_KEY=abc123 now")
    assert (out, n) == ("call with <secret> now", 1)


def test_replacement_is_literal_text_not_a_template() -> None:
    out, _ = flt(r"(\d+)", replacement=r"\1 \g<0>").redact("pin 1234")
    assert out == r"pin \1 \g<0>"


def test_several_patterns_apply_together() -> None:
    out, n = flt(SSN, CARD).redact("ssn 123-45-6789 card 4111111111111111 ok")
    assert (out, n) == ("ssn [REDACTED] card [REDACTED] ok", 2)


def test_overlapping_matches_leave_no_part_of_either_match() -> None:
    # "\d{4}" alone would turn the SSN into "123-45-[REDACTED]"; with the union of matches
    # the whole SSN goes, whatever the order of the patterns.
    for patterns in ((r"\d{4}", SSN), (SSN, r"\d{4}")):
        out, n = flt(*patterns).redact("a 123-45-6789 b")
        assert (out, n) == ("a [REDACTED] b", 1)


def test_single_pattern_behaves_like_re_subn() -> None:
    text = "x1 22 333 a4b c55d"
    for pattern in (r"\d", r"\d+", r"[a-z]\d", r"\d*"):
        expected = re.subn(pattern, "#", text)
        ours = flt(pattern, replacement="#").redact(text)
        if pattern == r"\d*":  # empty matches replace nothing here (re inserts "#" between characters)
            expected = re.subn(r"\d+", "#", text)
        assert ours == expected, pattern


def test_non_ascii_content_survives_and_partial_characters_are_redacted_whole() -> None:
    out, n = flt(SSN).redact("numéro 123-45-6789 — ok ✓")
    assert (out, n) == ("numéro [REDACTED] — ok ✓", 1)
    # \C matches a single byte: the character it cuts in half is redacted entirely.
    out, n = flt(r"x\C").redact("axé!")
    assert (out, n) == ("a[REDACTED]!", 1)


def test_clean_content_is_returned_unchanged() -> None:
    content = "nothing sensitive here"
    out, n = flt(SSN, CARD).redact(content)
    assert out is content and n == 0
    assert flt().redact(content) == (content, 0)


def test_group_names_reused_across_patterns_still_work() -> None:
    out, n = flt(r"(?P<d>\d{3})-x", r"(?P<d>\d{2})-y").redact("111-x 22-y")
    assert (out, n) == ("[REDACTED] [REDACTED]", 2)


@pytest.mark.parametrize(("pattern", "reason"), [
    (r"(a)\1", "invalid escape sequence"),
    (r"(?=secret)\w+", "invalid perl operator"),
    (r"(?<!x)y", "invalid perl operator"),
    (r"(?!a)b", "invalid perl operator"),
])
def test_re2_rejects_backreferences_and_lookarounds_with_a_reason(pattern: str, reason: str) -> None:
    with pytest.raises(ValueError, match="does not compile with RE2") as info:
        compile_pattern(pattern)
    assert repr(pattern) in str(info.value) and reason in str(info.value)
    with pytest.raises(ValueError, match="no backreferences or lookarounds"):
        flt(SSN, pattern)


def test_catastrophic_backtracking_pattern_runs_linearly_on_100kb() -> None:
    # With Python's re, (a+)+$ on "a"*25 + "!" already takes seconds (exponential);
    # RE2 answers on 100 KB -- the test simply completes, and the result is right.
    f = flt(r"(a+)+$")
    no_match = "a" * 100_000 + "!"
    assert f.redact(no_match) == (no_match, 0)
    assert f.redact("a" * 100_000) == ("[REDACTED]", 1)
    assert f.redact("b" + "a" * 100_000) == ("b[REDACTED]", 1)


def test_explicit_persist_false_always_wins() -> None:
    assert flt().persistable("user", "text", False) is False
    assert flt().persistable("user", "text", None) is True
    assert flt().persistable("user", "text", True) is True


def test_listed_role_or_content_type_is_never_persisted() -> None:
    f = flt(types=("tool", "Payment_Card"))
    assert f.persistable("tool", "text", None) is False
    assert f.persistable("user", "payment_card", None) is False  # case-insensitive
    assert f.persistable("user", "text", None) is True
    # An explicit persist=True from a client cannot override the operator's policy.
    assert f.persistable("tool", "text", True) is False


def test_redacted_output_is_bounded_by_max_bytes() -> None:
    """Overlapping matches merge before the size is taken: the bound is on what would be stored."""
    f = PrivacyFilter(PrivacyPolicy(redact_patterns=(r"\d", r"\d\d")), max_bytes=25)
    assert f.redact_measured("a1b22c") == ("a[REDACTED]b[REDACTED]c", 2, 23)
    assert f.redact_measured("é1 22") == ("é[REDACTED] [REDACTED]", 2, 23)
    with pytest.raises(ResourceExhausted, match=r"32 bytes \(3 replacements\), over the limit of 25"):
        f.redact("1 2 3")
    assert PrivacyFilter(PrivacyPolicy(redact_patterns=(r"\d",))).redact("1 2 3")[1] == 3  # unbounded by default
