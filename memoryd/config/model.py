"""Typed, validated, defaulted configuration: what the rest of the daemon reads.

The YAML loader (``memoryd.config.loader``) produces these from the one schema
(``memoryd.config.schema``); nothing else constructs them from user input.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

AccessMode = Literal["read-write", "read-only"]
DirectAccess = Literal["read-write", "read-only", "deny"]
FlushType = Literal["hybrid_summary", "fifo"]
OversizePolicy = Literal["truncate", "reject"]


@dataclass(frozen=True, slots=True)
class TokenAllocation:
    """Shares of the budget B per tier; they sum to 1."""

    system: float
    short_term: float
    long_term: float


@dataclass(frozen=True, slots=True)
class PriorityBlock:
    """Content types that get ``priority``; ``max_tokens`` caps that priority level."""

    priority: int
    content_types: tuple[str, ...]
    max_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class FlushingStrategy:
    type: FlushType = "hybrid_summary"
    summarize_threshold: float = 0.8
    summary_tokens: int = 500
    summarize_oldest_percent: float = 30.0


BULK_TIMEOUT_FACTOR = 20  # a bulk read may take this many per-call timeouts ...
BULK_TIMEOUT_MIN_S = 10.0  # ... and at least this long


@dataclass(frozen=True, slots=True)
class CircuitBreaker:
    """The Redis store's breaker (``store/redis/breaker.py``): per-call timeout, consecutive
    failures that open it, seconds until a trial, and the timeout of bulk reads (None:
    ``max(BULK_TIMEOUT_MIN_S, BULK_TIMEOUT_FACTOR * timeout_s)``). The one settings type of
    the breaker, configured per resource and combined by ``cli.breaker_settings``."""

    timeout_s: float = 0.5
    max_failures: int = 5
    reset_timeout_s: float = 10.0
    bulk_timeout_s: float | None = None

    @property
    def bulk_timeout(self) -> float:
        if self.bulk_timeout_s is not None:
            return max(self.bulk_timeout_s, self.timeout_s)
        return max(BULK_TIMEOUT_MIN_S, BULK_TIMEOUT_FACTOR * self.timeout_s)


@dataclass(frozen=True, slots=True)
class Persistence:
    type: Literal["redis", "embedded"] | None = None  # None: whatever the daemon runs on
    ttl_s: float | None = 86400.0
    circuit_breaker: CircuitBreaker = field(default_factory=CircuitBreaker)


@dataclass(frozen=True, slots=True)
class PrivacyPolicy:
    redact_patterns: tuple[str, ...] = ()
    non_persistable_message_types: tuple[str, ...] = ()
    default_redaction_string: str = "[REDACTED]"


@dataclass(frozen=True, slots=True)
class TokenCounting:
    """What media and opaque fields cost where no tokenizer can measure them (memoryd.tokens)."""

    image_tokens: int = 765  # an image of unknown size at high detail: 1024 x 1024's cost
    file_tokens: int = 1000
    count_extra: bool = False  # whether a message's ``extra`` JSON is sent to the model


@dataclass(frozen=True, slots=True)
class MemoryResource:
    """One memory resource with every field defaulted."""

    id: str
    description: str = ""
    type: Literal["token_based"] = "token_based"
    max_tokens: int | None = None
    max_context_ratio: float | None = None
    model: str | None = None
    message_limit: int | None = None
    default_priority: int = 5
    token_allocation: TokenAllocation | None = None
    priority_blocks: tuple[PriorityBlock, ...] = ()
    flushing_strategy: FlushingStrategy = field(default_factory=FlushingStrategy)
    persistence: Persistence = field(default_factory=Persistence)
    privacy_policy: PrivacyPolicy = field(default_factory=PrivacyPolicy)
    direct_access: DirectAccess = "read-write"
    oversize: OversizePolicy = "truncate"
    token_counting: TokenCounting = field(default_factory=TokenCounting)


@dataclass(frozen=True, slots=True)
class MemoryReference:
    """An agent's reference to a memory: resolved level, mode and key template."""

    memory_id: str
    mode: AccessMode
    key_template: str


@dataclass(frozen=True, slots=True)
class Agent:
    id: str
    level: int  # 0 stateless, 1 single, 2 multi, 3 advanced
    references: tuple[MemoryReference, ...] = ()


@dataclass(frozen=True, slots=True)
class Project:
    id: str
    resources: dict[str, MemoryResource]
    agents: dict[str, Agent]
    source: str = "<built-in>"


DEFAULT_RESOURCE_ID = "default"


def default_project() -> Project:
    """The built-in project served when no --config is given: one resource, direct keys."""
    res = MemoryResource(id=DEFAULT_RESOURCE_ID, description="built-in default memory", max_tokens=8000)
    return Project(id="default", resources={res.id: res}, agents={})


def effective_settings(resource: MemoryResource) -> dict[str, Any]:
    """Every setting of ``resource`` after defaults, named as in the YAML (durations in seconds)."""
    fs, ps, pp = resource.flushing_strategy, resource.persistence, resource.privacy_policy
    cb = ps.circuit_breaker
    ta = resource.token_allocation
    return {
        "id": resource.id,
        "description": resource.description,
        "type": resource.type,
        "max_tokens": resource.max_tokens,
        "max_context_ratio": resource.max_context_ratio,
        "model": resource.model,
        "message_limit": resource.message_limit,
        "default_priority": resource.default_priority,
        "token_allocation": None if ta is None else {
            "system": ta.system, "short_term": ta.short_term, "long_term": ta.long_term,
        },
        "priority_blocks": [
            {"priority": b.priority, "content_types": list(b.content_types), "max_tokens": b.max_tokens}
            for b in resource.priority_blocks
        ],
        "flushing_strategy": {
            "type": fs.type,
            "summarize_threshold": fs.summarize_threshold,
            "summary_tokens": fs.summary_tokens,
            "summarize_oldest_percent": fs.summarize_oldest_percent,
        },
        "persistence": {
            "type": ps.type,
            "ttl": ps.ttl_s,
            "circuit_breaker": {
                "timeout": cb.timeout_s, "max_failures": cb.max_failures, "reset_timeout": cb.reset_timeout_s,
            },
        },
        "privacy_policy": {
            "redact_patterns": list(pp.redact_patterns),
            "non_persistable_message_types": list(pp.non_persistable_message_types),
            "default_redaction_string": pp.default_redaction_string,
        },
        "oversize": resource.oversize,
        "access": {"direct": resource.direct_access},
        "token_counting": {
            "image_tokens": resource.token_counting.image_tokens,
            "file_tokens": resource.token_counting.file_tokens,
            "count_extra": resource.token_counting.count_extra,
        },
    }
