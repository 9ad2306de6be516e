"""The one declarative schema of the project YAML.

``memoryd.config.checker`` validates YAML nodes against it and
``scripts/gen_config_docs.py`` renders ``docs/configuration.md`` from it, so the
documentation cannot drift from what the loader accepts. Defaults live here; the
loader fills every absent field from ``Field.default``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

ScalarKind = Literal["string", "integer", "number", "boolean", "duration", "enum", "id", "template", "regex"]

#: Resource, agent and project ids (also used in storage key names, so no ':' '{' '}' '/').
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
#: Budget used when a resource gives neither max_tokens nor max_context_ratio.
DEFAULT_MAX_TOKENS = 4000
#: Tolerance for token_allocation summing to 1.
ALLOCATION_TOLERANCE = 0.001
MAX_PRIORITY = 1000


@dataclass(frozen=True, slots=True)
class Scalar:
    kind: ScalarKind
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: bool = False
    exclusive_maximum: bool = False
    choices: tuple[str, ...] = ()
    never: bool = False  # duration only: the word "never" means no expiry (None)

    def label(self) -> str:
        return {
            "string": "string",
            "integer": "integer",
            "number": "number",
            "boolean": "boolean",
            "duration": "duration",
            "enum": "string",
            "id": "id",
            "template": "key template",
            "regex": "RE2 pattern",
        }[self.kind]

    def range_text(self) -> str:
        if self.choices:
            return ", ".join(f"`{c}`" for c in self.choices)
        if self.kind == "id":
            return f"`{ID_PATTERN}`"
        lo, hi = self.minimum, self.maximum
        parts = []
        if lo is not None:
            parts.append(f"{'>' if self.exclusive_minimum else '≥'} {_num(lo)}")
        if hi is not None:
            parts.append(f"{'<' if self.exclusive_maximum else '≤'} {_num(hi)}")
        text = " and ".join(parts)
        if self.never:
            text += " or `never`"
        return text

    def in_range(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        lo, hi = self.minimum, self.maximum
        if lo is not None and (value <= lo if self.exclusive_minimum else value < lo):
            return False
        return not (hi is not None and (value >= hi if self.exclusive_maximum else value > hi))


@dataclass(frozen=True, slots=True)
class ListOf:
    item: Type
    non_empty: bool = False

    def label(self) -> str:
        item = self.item
        labels = [type_label(v) for v in item.variants] if isinstance(item, AnyOf) else [type_label(item)]
        return "list of " + " or ".join(label + "s" for label in labels)


@dataclass(frozen=True, slots=True)
class Obj:
    fields: tuple[Field, ...]

    def label(self) -> str:
        return "mapping"

    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)

    def get(self, name: str) -> Field | None:
        return next((f for f in self.fields if f.name == name), None)


@dataclass(frozen=True, slots=True)
class AnyOf:
    """One of several shapes, told apart by the YAML node (string, bool, mapping, list)."""

    variants: tuple[Scalar | Obj, ...]

    def label(self) -> str:
        return " or ".join(type_label(v) for v in self.variants)


Type = Scalar | ListOf | Obj | AnyOf


def type_label(t: Type) -> str:
    return t.label()


@dataclass(frozen=True, slots=True)
class Field:
    name: str
    type: Type
    description: str
    default: Any = None  # the loader's value when absent (None: unset)
    required: bool = False
    example: str | None = None  # YAML, as written in a file
    default_doc: str | None = None  # how the docs show the default, when not just `default`


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else str(v)


def _int(lo: float | None = None, hi: float | None = None) -> Scalar:
    return Scalar("integer", minimum=lo, maximum=hi)


def _ratio(*, exclusive_zero: bool) -> Scalar:
    return Scalar("number", minimum=0, maximum=1, exclusive_minimum=exclusive_zero)


_STRINGS = ListOf(Scalar("string"))
_POSITIVE_DURATION = Scalar("duration", minimum=0, exclusive_minimum=True)

TOKEN_ALLOCATION = Obj(
    (
        Field("system", _ratio(exclusive_zero=False), "Share of the budget for pinned (priority 0) messages.",
              required=True, example="0.1"),
        Field("short_term", _ratio(exclusive_zero=False), "Share of the budget for recent messages.",
              required=True, example="0.6"),
        Field("long_term", _ratio(exclusive_zero=False), "Share of the budget for the rolling summary.",
              required=True, example="0.3"),
    )
)

PRIORITY_BLOCK = Obj(
    (
        Field("priority", _int(0, MAX_PRIORITY),
              "Priority given to these content types; 0 is pinned (never evicted), higher numbers "
              "are evicted first. Unique within the resource.", required=True, example="1"),
        Field("content_types", ListOf(Scalar("string"), non_empty=True),
              "Message content types that get this priority; a type may appear in one block only.",
              required=True, example="[instructions, user_profile]"),
        Field("max_tokens", _int(1),
              "Cap on the tokens kept at this priority level; at least 64 for priorities > 0 (room for the "
              "newest message cut to fit). At priority 0 it is the pinned cap and must leave 64 tokens next "
              "to the summary.", example="800"),
    )
)

FLUSHING_STRATEGY = Obj(
    (
        Field("type", Scalar("enum", choices=("hybrid_summary", "fifo")),
              "`hybrid_summary` folds the oldest messages into a rule-based summary; `fifo` only evicts.",
              default="hybrid_summary", example="hybrid_summary"),
        Field("summarize_threshold", _ratio(exclusive_zero=True),
              "Fraction of the budget at which a background flush starts.", default=0.8, example="0.8"),
        Field("summary_tokens", _int(1),
              "Token budget of the summary; at least 64 under `hybrid_summary`, and it must leave 64 tokens "
              "of the budget for recent turns (docs/tokens-and-budget.md, the promises).",
              default=500, example="500"),
        Field("summarize_oldest_percent", Scalar("number", minimum=0, maximum=100, exclusive_minimum=True),
              "Percent of the recent messages (oldest first) folded into the summary per flush.",
              default=30.0, example="30"),
    )
)

CIRCUIT_BREAKER = Obj(
    (
        Field("timeout", _POSITIVE_DURATION, "Per-operation store timeout.", default=0.5,
              example='"500ms"', default_doc="`500ms`"),
        Field("max_failures", _int(1), "Consecutive failures that open the breaker.", default=5, example="5"),
        Field("reset_timeout", _POSITIVE_DURATION, "How long the breaker stays open before a trial call.",
              default=10.0, example='"10s"', default_doc="`10s`"),
    )
)

PERSISTENCE = Obj(
    (
        Field("type", Scalar("enum", choices=("redis", "embedded")),
              "Store for this resource. Unset: the daemon's store (Redis with `--redis-url`, else "
              "embedded). `embedded` keeps it in process even on Redis (not shared between pods); "
              "`redis` makes `serve` refuse to start without `--redis-url`.",
              example="redis", default_doc="unset"),
        Field("ttl", Scalar("duration", minimum=0, exclusive_minimum=True, never=True),
              "Idle time after which an instance expires; every write refreshes it. `never` disables expiry.",
              default=86400.0, example='"24h"', default_doc="`24h`"),
        Field("circuit_breaker", CIRCUIT_BREAKER, "Store circuit breaker."),
    )
)

PRIVACY_POLICY = Obj(
    (
        Field("redact_patterns", ListOf(Scalar("regex")),
              "Patterns replaced by `default_redaction_string` before storing. RE2 syntax: no "
              "backreferences or lookarounds, so matching is linear-time.", default=(),
              example=r"['\b\d{3}-\d{2}-\d{4}\b']"),
        Field("non_persistable_message_types", _STRINGS,
              "Content types that are never stored (the append reports them as not persisted).",
              default=(), example="[payment_card]"),
        Field("default_redaction_string", Scalar("string"), "Replacement text for redacted matches.",
              default="[REDACTED]", example='"[REDACTED]"'),
    )
)

ACCESS = Obj(
    (
        Field("direct", Scalar("enum", choices=("read-write", "read-only", "deny")),
              "Whether clients may address instances by a direct key instead of through an agent "
              "reference. Default `read-write`: the daemon is a pod-local sidecar, so its callers "
              "are already trusted; lock it down with `read-only` or `deny` when agent references "
              "must be the only way in.", default="read-write", example="deny"),
    )
)

TOKEN_COUNTING = Obj(
    (
        Field("image_tokens", _int(0),
              "Tokens of an image whose width and height are not given (at `low` detail an image "
              "costs 85; with its size, OpenAI's tile formula applies).", default=765, example="765"),
        Field("file_tokens", _int(0), "Tokens of a file (document) part.", default=1000, example="1500"),
        Field("count_extra", Scalar("boolean"),
              "Whether a message's `extra` JSON is sent to the model (and so counted as tokens).",
              default=False, example="true"),
    )
)

RESOURCE_FIELDS: tuple[Field, ...] = (
    Field("id", Scalar("id"), "Resource id that agents reference; unique across all files.",
          required=True, example="customer-support-context"),
    Field("description", Scalar("string"), "Free text for people.", default="",
          example='"Shared support conversation"'),
    Field("type", Scalar("enum", choices=("token_based",)), "Memory type.", default="token_based",
          example="token_based"),
    Field("max_tokens", _int(1),
          "Token budget B of every instance. Give this or `max_context_ratio`, not both.",
          example="4000", default_doc=f"`{DEFAULT_MAX_TOKENS}` when `max_context_ratio` is not given"),
    Field("max_context_ratio", _ratio(exclusive_zero=True),
          "Budget as a fraction of `model`'s context window (requires `model`).", example="0.5",
          default_doc="unset"),
    Field("model", Scalar("string"),
          "Model whose tokenizer counts tokens and whose context window `max_context_ratio` uses.",
          example="gpt-4o", default_doc="unset (the daemon's default encoding)"),
    Field("message_limit", _int(1), "Most messages kept (besides the summary).", example="200",
          default_doc="unset (no limit)"),
    Field("default_priority", _int(1, MAX_PRIORITY),
          "Priority of a non-system message whose content type is in no priority block and that "
          "carries no explicit priority.", default=5, example="5"),
    Field("token_allocation", TOKEN_ALLOCATION,
          "Shares of the budget per tier; all three are required and sum to 1 (±0.001).",
          default_doc="unset (tiers bounded by B only)"),
    Field("priority_blocks", ListOf(PRIORITY_BLOCK), "Priorities by content type.", default=()),
    Field("flushing_strategy", FLUSHING_STRATEGY, "When and how an instance is compacted."),
    Field("oversize", Scalar("enum", choices=("truncate", "reject")),
          "A message larger than its room in a context view: `truncate` stores it whole and shows it cut "
          "(beginning, end and a marker naming its seq); `reject` refuses the batch (RESOURCE_EXHAUSTED).",
          default="truncate", example="reject"),
    Field("persistence", PERSISTENCE, "Storage settings."),
    Field("privacy_policy", PRIVACY_POLICY, "Redaction and messages that are never stored."),
    Field("access", ACCESS, "Access to instances without an agent reference."),
    Field("token_counting", TOKEN_COUNTING,
          "What tool calls, images, files and `extra` cost (docs/tokens-and-budget.md, \"What a message costs\")."),
)

RESOURCE_MARKER_DOC = "Marks the file as a memory resource."
RESOURCE_FILE = Obj(
    (Field("resource", Scalar("enum", choices=("memory",)), RESOURCE_MARKER_DOC, required=True,
           example="memory"), *RESOURCE_FIELDS)
)
INLINE_RESOURCE = Obj(
    (Field("resource", Scalar("enum", choices=("memory",)), RESOURCE_MARKER_DOC + " Optional inline.",
           example="memory"), *RESOURCE_FIELDS)
)

REFERENCE = Obj(
    (
        Field("id", Scalar("id"), "Memory resource id.", required=True, example="user-preferences"),
        Field("mode", Scalar("enum", choices=("read-write", "read-only")),
              "Access through this reference; writes through a read-only reference are refused.",
              default="read-write", example="read-only"),
        Field("key", Scalar("template"), "Key template of the instance.", required=True,
              example='"prefs-{{ .workflow.input.userId }}"'),
    )
)

AGENT = Obj(
    (
        Field("id", Scalar("id"), "Agent id; unique in the project.", required=True, example="intake-agent"),
        Field("description", Scalar("string"), "Free text for people.", default="",
              example='"Collects the customer issue"'),
        Field("memory", AnyOf((Scalar("id"), Scalar("boolean"))),
              "Level 1: a memory id. Level 2: `true` together with a list of ids in `memories`. "
              "`false` or absent: a stateless agent.", example="customer-support-context",
              default_doc="unset (stateless unless `memories` is a list of mappings)"),
        Field("memories", ListOf(AnyOf((Scalar("id"), REFERENCE)), non_empty=True),
              "Level 2: a list of memory ids (needs `memory: true` and `memory_key`). Level 3: a list "
              "of references `{id, mode, key}`. Do not mix the two forms.",
              example="[customer-support-context, user-preferences]"),
        Field("memory_key", Scalar("template"), "Key template for Level 1 and Level 2 references.",
              example='"support-{{ .workflow.input.conversationId }}"'),
    )
)

PROJECT_FILE = Obj(
    (
        Field("project", Scalar("id"), "Project id; namespaces every storage key.", required=True,
              example="support-demo"),
        Field("memories", ListOf(INLINE_RESOURCE),
              "Memory resources defined inline (more come from `memories/*.yaml`).", default=()),
        Field("agents", ListOf(AGENT), "Agents and their memory references.", default=()),
    )
)
