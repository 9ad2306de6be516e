"""Walk composed YAML nodes against the schema, keeping line numbers.

PyYAML's composed nodes carry ``start_mark.line``; validating them (rather than the
constructed Python objects) lets every problem name its file, line and field path,
and lets us see duplicate mapping keys that ``safe_load`` silently drops.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from memoryd.config.schema import ID_PATTERN, AnyOf, ListOf, Obj, Scalar, Type, type_label
from memoryd.config.templates import TemplateError, compile_template
from memoryd.privacy import compile_pattern

_TAG = "tag:yaml.org,2002:"
_ID = re.compile(ID_PATTERN)
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_DURATION = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|s|m|h|d))+")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


MAX_NODES = 200_000  # a config is small; more means aliases expanding exponentially ("billion laughs")


class TooManyNodes(Exception):
    """The document expands to more than MAX_NODES nodes; checking stops."""


class _Invalid:
    """Marker for a value that failed validation (its problem is already recorded)."""


INVALID: Any = _Invalid()


@dataclass(frozen=True, slots=True)
class Problem:
    file: str
    line: int | None  # 1-based
    path: str
    message: str

    def __str__(self) -> str:
        if self.line is None:
            return f"{self.file}: {self.path}: {self.message}"
        return f"{self.file}:{self.line}: {self.path}: {self.message}"


@dataclass(slots=True)
class Checker:
    """Validates one file; ``lines`` maps each field path seen to its 1-based line."""

    file: str
    problems: list[Problem]
    lines: dict[str, int] = field(default_factory=dict)
    nulls: set[str] = field(default_factory=set)  # paths given as explicit null (= not given)
    visits: int = 0
    _constructor: yaml.constructor.SafeConstructor = field(default_factory=yaml.constructor.SafeConstructor)

    def report(self, line: int | None, path: str, message: str) -> None:
        self.problems.append(Problem(self.file, line, path or "(root)", message))

    def line_of(self, path: str, fallback: int | None = None) -> int | None:
        return self.lines.get(path, fallback)

    def invalid(self, path: str, values: dict[str, Any], name: str) -> bool:
        """True when field ``name`` (at ``path``) was given but failed validation."""
        return path in self.lines and name not in values and path not in self.nulls

    def check(self, t: Type, node: yaml.Node, path: str) -> Any:
        self.visits += 1
        if self.visits > MAX_NODES:
            raise TooManyNodes(path)
        if isinstance(t, Obj):
            return self._obj(t, node, path)
        if isinstance(t, ListOf):
            return self._list(t, node, path)
        if isinstance(t, AnyOf):
            return self._any_of(t, node, path)
        return self._scalar(t, node, path)

    def _obj(self, t: Obj, node: yaml.Node, path: str) -> Any:
        line = _line(node)
        if not isinstance(node, yaml.MappingNode):
            self.report(line, path, f"expected a mapping, got {_describe(node)}")
            return INVALID
        out: dict[str, Any] = {}
        seen: dict[str, int] = {}
        nulls: set[str] = set()
        for key_node, value_node in self._pairs(node, path):
            if not (isinstance(key_node, yaml.ScalarNode) and key_node.tag == _TAG + "str"):
                self.report(_line(key_node), path, f"field names must be strings, got {_describe(key_node)}")
                continue
            name = key_node.value
            child = f"{path}.{name}" if path else name
            key_line = _line(key_node)
            if name in seen:
                self.report(key_line, child, f"duplicate field (first given on line {seen[name]})")
                continue
            seen[name] = key_line
            spec = t.get(name)
            if spec is None:
                self.report(key_line, child, _unknown_field(name, t.names()))
                continue
            self.lines[child] = key_line
            if _is_null(value_node):
                nulls.add(name)  # explicit null means "not given": the default applies
                self.nulls.add(child)
                continue
            value = self.check(spec.type, value_node, child)
            if value is not INVALID:
                out[name] = value
        for spec in t.fields:
            child = f"{path}.{spec.name}" if path else spec.name
            if spec.required and spec.name not in seen:
                self.report(line, child, "is required")
            elif spec.required and spec.name in nulls:
                self.report(seen[spec.name], child, "is required (got null)")
        return out

    def _pairs(self, node: yaml.MappingNode, path: str) -> list[tuple[yaml.Node, yaml.Node]]:
        """The mapping's own pairs, then those merged in with ``<<: *anchor`` that it does not override."""
        own = [(k, v) for k, v in node.value if k.tag != _TAG + "merge"]
        names = {k.value for k, _ in own if isinstance(k, yaml.ScalarNode)}
        for k, v in node.value:
            if k.tag != _TAG + "merge":
                continue
            sources = v.value if isinstance(v, yaml.SequenceNode) else [v]
            for source in sources:
                if not isinstance(source, yaml.MappingNode):
                    self.report(_line(source), path, f"a merge key (<<) needs a mapping, got {_describe(source)}")
                    continue
                for mk, mv in self._pairs(source, path):
                    if isinstance(mk, yaml.ScalarNode) and mk.value not in names:
                        names.add(mk.value)
                        own.append((mk, mv))
        return own

    def _list(self, t: ListOf, node: yaml.Node, path: str) -> Any:
        if not isinstance(node, yaml.SequenceNode):
            self.report(_line(node), path, f"expected a {t.label()}, got {_describe(node)}")
            return INVALID
        if t.non_empty and not node.value:
            self.report(_line(node), path, "must not be empty")
            return INVALID
        out: list[Any] = []  # invalid items stay in place as INVALID, so indices keep matching paths
        for i, item in enumerate(node.value):
            child = f"{path}[{i}]"
            self.lines[child] = _line(item)
            out.append(self.check(t.item, item, child))
        return out

    def _any_of(self, t: AnyOf, node: yaml.Node, path: str) -> Any:
        for variant in t.variants:
            if _accepts(variant, node):
                return self.check(variant, node, path)
        self.report(_line(node), path, f"expected {t.label()}, got {_describe(node)}")
        return INVALID

    def _scalar(self, t: Scalar, node: yaml.Node, path: str) -> Any:
        line = _line(node)
        if not _accepts(t, node):
            self.report(line, path, f"expected {_article(type_label(t))}, got {_describe(node)}")
            return INVALID
        assert isinstance(node, yaml.ScalarNode)
        value: Any
        if t.kind == "boolean":
            return self._constructor.construct_yaml_bool(node)
        if t.kind == "integer":
            value = self._constructor.construct_yaml_int(node)
        elif t.kind == "number":
            value = float(self._constructor.construct_yaml_float(node))
        elif t.kind == "duration":
            value = _duration(node, self._constructor)
            if value is None and t.never and node.value == "never":
                return None
            if value is None:
                self.report(line, path, f'invalid duration {node.value!r}; use seconds or e.g. "90s", '
                                        '"30m", "24h", "500ms"' + (' or "never"' if t.never else ""))
                return INVALID
        else:
            return self._text(t, node.value, line, path)
        if not t.in_range(value):
            self.report(line, path, f"must be {t.range_text()} (got {node.value})")
            return INVALID
        return value

    def _text(self, t: Scalar, text: str, line: int, path: str) -> Any:
        if t.kind == "enum" and text not in t.choices:
            self.report(line, path, f"must be one of {t.range_text()} (got {text!r})" + _suggest(text, t.choices))
            return INVALID
        if t.kind == "id" and not _ID.match(text):
            self.report(line, path, f"invalid id {text!r}: use letters, digits, '_', '.', '-' "
                                    "(start with a letter or digit, at most 128 characters)")
            return INVALID
        if t.kind == "template":
            try:
                compile_template(text)
            except TemplateError as exc:
                self.report(line, path, f"invalid key template {text!r}: {exc}")
                return INVALID
        if t.kind == "regex":
            try:
                compile_pattern(text)  # exactly as the redaction filter will compile it
            except ValueError as exc:
                self.report(line, path, str(exc))
                return INVALID
        return text


def _accepts(t: Scalar | Obj, node: yaml.Node) -> bool:
    if isinstance(t, Obj):
        return isinstance(node, yaml.MappingNode)
    if not isinstance(node, yaml.ScalarNode):
        return False
    tag = node.tag.removeprefix(_TAG)
    if t.kind == "boolean":
        return tag == "bool"
    if t.kind == "integer":
        return tag == "int"
    if t.kind == "number":
        return tag in ("int", "float")
    if t.kind == "duration":
        return tag in ("int", "float", "str")
    return tag == "str"


def _duration(node: yaml.ScalarNode, constructor: yaml.constructor.SafeConstructor) -> float | None:
    tag = node.tag.removeprefix(_TAG)
    if tag == "int":
        return float(constructor.construct_yaml_int(node))
    if tag == "float":
        return float(constructor.construct_yaml_float(node))
    text = node.value.strip()
    if not _DURATION.fullmatch(text):
        return None
    return sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(text))


def _line(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1


def _is_null(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag == _TAG + "null"


def _describe(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    tag = node.tag.removeprefix(_TAG)
    names = {"str": "a string", "int": "an integer", "float": "a number", "bool": "a boolean",
             "null": "null", "timestamp": "a date"}
    text = names.get(tag, tag)
    return f"{text} {node.value!r}" if tag in ("str", "int", "float", "bool") else text


def _article(label: str) -> str:
    return ("an " if label[0] in "aeiou" else "a ") + label


def _suggest(name: str, known: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _unknown_field(name: str, known: tuple[str, ...]) -> str:
    hint = _suggest(name, known)
    return f"unknown field {name!r}" + (hint or f" (known fields: {', '.join(known)})")
