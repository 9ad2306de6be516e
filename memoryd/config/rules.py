"""The configuration's cross-field rules: what no single field's schema can check.

Each rule reads a validated mapping (``Entry``: its values, its field path, and the
checker that knows every field's line) and reports problems with file, line and field,
like the schema's own checks. The loader runs them before anything is built.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from memoryd.config.checker import INVALID, Checker
from memoryd.config.schema import ALLOCATION_TOLERANCE, FLUSHING_STRATEGY, PERSISTENCE, Obj
from memoryd.tokens import context_window


@dataclass(frozen=True, slots=True)
class Entry:
    """A validated mapping, where it came from, and the checker holding its lines."""

    values: dict[str, Any]
    base: str  # field path of the mapping ("" for a whole resource file)
    checker: Checker

    def path(self, *names: str) -> str:
        return ".".join(n for n in (self.base, *names) if n).replace(".[", "[")

    def line(self, *names: str) -> int | None:
        return self.checker.line_of(self.path(*names), self.checker.line_of(self.base))

    def report(self, names: tuple[str, ...], message: str, line: int | None = None) -> None:
        self.checker.report(line if line is not None else self.line(*names), self.path(*names), message)

    def where(self) -> str:
        return f"{self.checker.file}:{self.line('id')}"


def get(schema: Obj, values: dict[str, Any], name: str) -> Any:
    spec = schema.get(name)
    assert spec is not None, name
    return values.get(name, spec.default)


def check_resource_fields(e: Entry) -> None:
    v = e.values
    if "max_tokens" in v and "max_context_ratio" in v:
        e.report(("max_context_ratio",), "give max_tokens or max_context_ratio, not both")
    if "max_context_ratio" in v and "model" not in v:
        e.report(("max_context_ratio",), "max_context_ratio needs `model` (whose context window it scales)")
    elif "max_context_ratio" in v and context_window(v["model"]) is None:
        e.report(("model",), f"the context window of model {v['model']!r} is unknown, so max_context_ratio "
                             "cannot be applied; give max_tokens instead")
    allocation = v.get("token_allocation", {})
    if len(allocation) == 3:
        total = sum(allocation.values())
        if abs(total - 1.0) > ALLOCATION_TOLERANCE:
            e.report(("token_allocation",), f"system + short_term + long_term must sum to 1 "
                                            f"(±{ALLOCATION_TOLERANCE}), got {total:g}")
    check_blocks(e)
    persistence = v.get("persistence", {})
    drop = isinstance(persistence, dict) and get(PERSISTENCE, persistence, "history") == "drop"
    if drop and "max_history_messages" in persistence:
        e.report(("persistence", "max_history_messages"),
                 "max_history_messages applies only to history: keep (history: drop keeps none)")
    flushing = v.get("flushing_strategy", {})
    strategy = get(FLUSHING_STRATEGY, flushing, "type")
    if "external_timeout" in flushing and strategy != "external":
        e.report(("flushing_strategy", "external_timeout"), f"applies to type: external only (type is {strategy})",
                 line=e.line("flushing_strategy", "external_timeout"))
    if strategy in ("hybrid_summary", "external"):
        if allocation.get("long_term") == 0:
            e.report(("token_allocation", "long_term"),
                     f"{strategy} needs room for the summary: long_term must be > 0 (or use fifo)")
        summary = get(FLUSHING_STRATEGY, flushing, "summary_tokens")
        if "max_tokens" in v and summary >= v["max_tokens"]:
            given = "" if "summary_tokens" in flushing else ", the default"
            e.report(("flushing_strategy", "summary_tokens"),
                     f"summary_tokens ({summary}{given}) must be smaller than max_tokens ({v['max_tokens']}); "
                     "lower summary_tokens or use type: fifo",
                     line=e.line("flushing_strategy", "summary_tokens") if "summary_tokens" in flushing
                     else e.line("max_tokens"))


def check_blocks(e: Entry) -> None:
    priorities: dict[int, int] = {}
    content_types: dict[str, int] = {}
    for i, block in enumerate(e.values.get("priority_blocks", ())):
        if block is INVALID:
            continue
        where = f"priority_blocks[{i}]"
        priority = block.get("priority")
        if priority is not None:
            if priority in priorities:
                e.report((where, "priority"),
                         f"duplicate priority {priority} (also in priority_blocks[{priorities[priority]}])")
            priorities.setdefault(priority, i)
        for ct in block.get("content_types", ()):
            if ct is INVALID:
                continue
            if ct in content_types and content_types[ct] != i:
                e.report((where, "content_types"),
                         f"content type {ct!r} is already in priority_blocks[{content_types[ct]}]")
            content_types.setdefault(ct, i)
