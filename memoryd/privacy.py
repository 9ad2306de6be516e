"""Privacy policy of one resource: redaction and non-persistable messages.

Redaction patterns run on every appended message, on the request path, over
client-controlled text: they are compiled with RE2, whose matching time is linear
in the input for every pattern, so no pattern (``(a+)+$`` included) can stall the
daemon. What RE2 cannot compile (backreferences, lookarounds) is rejected with the
reason; the configuration loader checks the same way at load time.

Redaction can also grow a message (a digit pattern replaced by ``[REDACTED]`` makes it ten times
larger), so its output is bounded too: beyond ``max_bytes`` it raises ResourceExhausted
before the output is built, and nothing is stored.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any, NamedTuple

import re2

from memoryd.config.model import PrivacyPolicy
from memoryd.errors import ResourceExhausted
from memoryd.models import ContentPart, ToolCall

Pattern = Any  # re2._Regexp (google-re2 ships no type information)

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # the error is reported through ValueError, not RE2's stderr logging


def compile_pattern(pattern: str) -> Pattern:
    """Compile ``pattern`` with RE2; ValueError says why RE2 refuses it."""
    try:
        return re2.compile(pattern, _OPTIONS)
    except re2.error as exc:
        detail = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        raise ValueError(
            f"pattern {pattern!r} does not compile with RE2 (no backreferences or lookarounds): {detail}"
        ) from None


def _whole_chars(data: bytes, start: int, end: int) -> tuple[int, int]:
    """Widen a byte span to whole UTF-8 characters (RE2's ``\\C`` can match half of one)."""
    while start > 0 and data[start] & 0xC0 == 0x80:
        start -= 1
    while end < len(data) and data[end] & 0xC0 == 0x80:
        end += 1
    return start, end


def _folded(names: Iterable[str]) -> frozenset[str]:
    return frozenset(n.casefold() for n in names)


class Redacted(NamedTuple):
    content: str
    replacements: int
    size: int  # bytes of ``content`` in UTF-8


class PrivacyFilter:
    """Applies a ``PrivacyPolicy``; build one per resource at startup (compiling is the costly part).

    Redaction semantics: every byte range that any pattern matches in the original
    content is replaced by ``default_redaction_string``; overlapping matches (from
    different patterns) merge into one replacement, so the result does not depend
    on the order of the patterns and no part of a match survives because another
    pattern matched first. With a single pattern the result equals ``re.subn``.
    Empty matches replace nothing. Matching runs on the UTF-8 bytes (RE2's native
    form); RE2's ``\\d``, ``\\w`` and ``\\b`` are ASCII-only, unlike Python's ``re``.
    """

    __slots__ = ("_any", "_excluded", "_max_bytes", "_patterns", "_replacement")

    def __init__(self, policy: PrivacyPolicy, max_bytes: int | None = None) -> None:
        """``max_bytes``: the largest redacted content allowed (the daemon's message size limit)."""
        self._max_bytes = max_bytes
        self._patterns: tuple[Pattern, ...] = tuple(compile_pattern(p) for p in policy.redact_patterns)
        self._replacement = policy.default_redaction_string.encode("utf-8")
        self._excluded = _folded(policy.non_persistable_message_types)
        # One combined scan answers "anything to redact?" for the common clean message;
        # it can fail to compile (e.g. a group name used in two patterns): then skip it.
        self._any: Pattern | None = None
        if len(self._patterns) > 1:
            try:
                self._any = compile_pattern("|".join(f"(?:{p})" for p in policy.redact_patterns))
            except ValueError:
                self._any = None

    @property
    def redacts(self) -> bool:
        return bool(self._patterns)

    def redact(self, content: str) -> tuple[str, int]:
        """Return the redacted content and the number of replacements made."""
        content, count, _ = self.redact_measured(content)
        return content, count

    def redact_measured(self, content: str) -> Redacted:
        """Redact, and give the output's size; ResourceExhausted if it exceeds ``max_bytes``."""
        if not self._patterns or not content:
            return Redacted(content, 0, len(content.encode("utf-8")))
        data = content.encode("utf-8")
        if self._any is not None and self._any.search(data) is None:
            return Redacted(content, 0, len(data))
        spans: list[tuple[int, int]] = []
        for pattern in self._patterns:
            for match in pattern.finditer(data):
                start, end = match.span()
                if end > start:
                    spans.append(_whole_chars(data, start, end))
        if not spans:
            return Redacted(content, 0, len(data))
        spans.sort()
        merged: list[tuple[int, int]] = []
        cur_start, cur_end = spans[0]
        for start, end in spans[1:]:
            if start < cur_end:  # overlaps the current range: extend it
                cur_end = max(cur_end, end)
                continue
            merged.append((cur_start, cur_end))
            cur_start, cur_end = start, end
        merged.append((cur_start, cur_end))
        size = len(data) + len(merged) * len(self._replacement) - sum(end - start for start, end in merged)
        if self._max_bytes is not None and size > self._max_bytes:
            raise ResourceExhausted(
                f"redaction makes it {size} bytes ({len(merged)} replacements), over the limit of {self._max_bytes}"
            )
        out: list[bytes] = []
        cursor = 0
        for start, end in merged:
            out += (data[cursor:start], self._replacement)
            cursor = end
        out.append(data[cursor:])
        return Redacted(b"".join(out).decode("utf-8"), len(merged), size)

    def redact_json(self, text: str) -> Redacted:
        """Redact the string values of JSON text (keys and structure are kept, so the result
        is still the same JSON shape); text that is not JSON is redacted as plain text.

        Values are matched decoded, so an escape (``\\u0040``) cannot hide a match. Nothing
        replaced: the original text, byte for byte; else compact JSON."""
        if not self._patterns or not text:
            return Redacted(text, 0, len(text.encode("utf-8")))
        try:
            value = json.loads(text)
        except (ValueError, RecursionError):
            return self.redact_measured(text)
        count = 0

        def walk(v: Any) -> Any:
            nonlocal count
            if isinstance(v, str):
                out, n, _ = self.redact_measured(v)
                count += n
                return out
            if isinstance(v, list):
                return [walk(x) for x in v]
            if isinstance(v, dict):
                return {k: walk(x) for k, x in v.items()}
            return v

        redacted = walk(value)
        if not count:
            return Redacted(text, 0, len(text.encode("utf-8")))
        out = json.dumps(redacted, ensure_ascii=False, separators=(",", ":"))
        size = len(out.encode("utf-8"))
        if self._max_bytes is not None and size > self._max_bytes:
            raise ResourceExhausted(f"redaction makes it {size} bytes, over the limit of {self._max_bytes}")
        return Redacted(out, count, size)

    def redact_fields(
        self, tool_calls: Sequence[ToolCall], parts: Sequence[ContentPart], extra: str
    ) -> tuple[tuple[ToolCall, ...], tuple[ContentPart, ...], str, int, int]:
        """Redact what of issue 18's fields is text a person or model wrote: tool call
        arguments and ``extra`` (as JSON: ``redact_json``) and text parts. Ids, names, URLs,
        file ids and inline media are not redacted. Returns the fields, the replacements
        made and the bytes of the redacted texts."""
        count = size = 0
        calls = []
        for call in tool_calls:
            args, n, b = self.redact_json(call.arguments)
            count, size = count + n, size + b
            calls.append(call if args is call.arguments else call._replace(arguments=args))
        new_parts = []
        for p in parts:
            if p.kind == "text":
                text, n, b = self.redact_measured(p.text)
                count, size = count + n, size + b
                if n:
                    p = replace(p, text=text)
            new_parts.append(p)
        extra, n, b = self.redact_json(extra)
        return tuple(calls), tuple(new_parts), extra, count + n, size + b

    def persistable(self, role: str, content_type: str, explicit: bool | None) -> bool:
        """Whether a message may be stored.

        An explicit ``persist=False`` from the client always wins. Otherwise a role or
        content type listed in ``non_persistable_message_types`` (case-insensitive) is
        never stored -- an explicit ``persist=True`` cannot override the operator's policy.
        """
        if explicit is False:
            return False
        if not self._excluded:
            return True
        return role.casefold() not in self._excluded and content_type.casefold() not in self._excluded
