"""Key templates: ``support-{{ .workflow.input.conversationId }}``, lookups only.

A template is parsed once (at load time) into literal parts and dotted lookups. The
grammar is deliberately the plain-lookup subset of Go templates: no pipes, functions,
keywords, variables, comments or whitespace trimming, so rendering can never execute
anything and the load-time check is complete. Rendering refuses a missing, null, empty
or non-scalar value, because an empty segment would merge tenants' instances.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from memoryd.errors import InvalidArgument
from memoryd.keys import sanitize_key

#: Lookups a template may use; ``workflow.input`` takes any sub-path.
ALLOWED_LOOKUPS = (
    "workflow.id",
    "workflow.input.<name>[.<name>...]",
    "user.id",
    "session.id",
    "project.id",
    "agent.id",
    "timestamp",
)
_FIXED_PATHS = frozenset(
    {("workflow", "id"), ("user", "id"), ("session", "id"), ("project", "id"), ("agent", "id"), ("timestamp",)}
)
_LOOKUP = re.compile(r"\.[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")
_HINT = "only plain lookups like {{ .workflow.input.conversationId }} are supported"
DEFAULT_FIELD_PREFIX = "ref.agent.context"


class TemplateError(ValueError):
    """A key template that does not parse or uses more than plain lookups."""


@dataclass(frozen=True, slots=True)
class Lookup:
    """One ``{{ .a.b }}`` action: the path into the context."""

    path: tuple[str, ...]

    @property
    def dotted(self) -> str:
        return ".".join(self.path)


@dataclass(frozen=True, slots=True)
class CompiledTemplate:
    """A parsed template: literal strings and lookups, in order."""

    source: str
    parts: tuple[str | Lookup, ...]

    @property
    def lookups(self) -> tuple[Lookup, ...]:
        return tuple(p for p in self.parts if isinstance(p, Lookup))

    @property
    def uses_workflow_id(self) -> bool:
        """True when the key is workflow-scoped (EndWorkflow deletes such instances)."""
        return any(p.path == ("workflow", "id") for p in self.lookups)

    def render(self, context: Mapping[str, Any], field_prefix: str = DEFAULT_FIELD_PREFIX) -> str:
        """The raw (unsanitised) key; InvalidArgument naming the variable if one is unusable."""
        out: list[str] = []
        for part in self.parts:
            out.append(part if isinstance(part, str) else _value(context, part, field_prefix))
        return "".join(out)

    def render_key(self, context: Mapping[str, Any], field_prefix: str = DEFAULT_FIELD_PREFIX) -> str:
        """The rendered key, sanitised for storage (``memoryd.keys.sanitize_key``)."""
        return sanitize_key(self.render(context, field_prefix))


def lookup_text(
    context: Mapping[str, Any], path: tuple[str, ...], field_prefix: str = DEFAULT_FIELD_PREFIX
) -> str:
    """The text one lookup renders to (e.g. the workflow id of a workflow-scoped key)."""
    return _value(context, Lookup(path), field_prefix)


def _value(context: Mapping[str, Any], lookup: Lookup, field_prefix: str) -> str:
    field = f"{field_prefix}.{lookup.dotted}"
    node: Any = context
    for name in lookup.path:
        if not isinstance(node, Mapping) or name not in node:
            raise InvalidArgument(field, f"template variable {lookup.dotted} is missing from the context")
        node = node[name]
    return _scalar_text(node, field, lookup.dotted)


def _scalar_text(value: Any, field: str, var: str) -> str:
    """Text of a scalar as Go templates would print it; Struct numbers are floats."""
    if value is None:
        raise InvalidArgument(field, f"template variable {var} is null")
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidArgument(field, f"template variable {var} is not a finite number")
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, str):
        if value == "":
            raise InvalidArgument(field, f"template variable {var} is an empty string")
        return value
    kind = "an object" if isinstance(value, Mapping) else f"a {type(value).__name__}"
    raise InvalidArgument(field, f"template variable {var} is {kind}, not a string, number or bool")


@lru_cache(maxsize=4096)
def compile_template(source: str) -> CompiledTemplate:
    """Parse ``source`` (cached: the loader parses every template once at load time)."""
    if not isinstance(source, str):
        raise TemplateError("a key template must be a string")
    if source.strip() == "":
        raise TemplateError("the key template is empty")
    parts: list[str | Lookup] = []
    pos = 0
    while pos < len(source):
        start = source.find("{{", pos)
        literal = source[pos:] if start < 0 else source[pos:start]
        _check_literal(literal, pos)
        if literal:
            parts.append(literal)
        if start < 0:
            break
        end = source.find("}}", start + 2)
        if end < 0:
            raise TemplateError(f"unclosed '{{{{' at column {start + 1}")
        inner = source[start + 2 : end]
        if "{" in inner:
            raise TemplateError(f"unbalanced braces in the action at column {start + 1}")
        parts.append(_parse_action(inner, start + 1))
        pos = end + 2
    return CompiledTemplate(source=source, parts=tuple(parts))


def _check_literal(text: str, offset: int) -> None:
    for i, ch in enumerate(text):
        if ch in "{}":
            raise TemplateError(f"unbalanced brace {ch!r} at column {offset + i + 1}")


def _parse_action(inner: str, column: int) -> Lookup:
    where = f"in the action at column {column}"
    if inner.startswith("-") or inner.endswith("-"):
        raise TemplateError(f"whitespace trimming ({{{{- -}}}}) is not supported {where}")
    text = inner.strip()
    if not text:
        raise TemplateError(f"empty action {{{{ }}}} {where}")
    if "|" in text:
        raise TemplateError(f"pipes are not supported {where}; {_HINT}")
    if text.startswith("/*"):
        raise TemplateError(f"comments are not supported {where}")
    if text == ".":
        raise TemplateError(f"empty lookup '.' {where}; name a variable such as .workflow.id")
    if "(" in text or not text.startswith("."):
        raise TemplateError(f"function calls, keywords and variables are not supported {where}; {_HINT}")
    if not _LOOKUP.fullmatch(text):
        raise TemplateError(f"invalid lookup {text!r} {where}; {_HINT}")
    path = tuple(text[1:].split("."))
    if not _allowed(path):
        allowed = ", ".join(ALLOWED_LOOKUPS)
        raise TemplateError(f"unknown template variable {text!r} {where}; allowed: {allowed}")
    return Lookup(path)


def _allowed(path: tuple[str, ...]) -> bool:
    return path in _FIXED_PATHS or (len(path) >= 3 and path[:2] == ("workflow", "input"))
