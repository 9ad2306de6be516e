"""Plain data passed between the manager, the engine and the stores.

No I/O and no protobuf here: the store and the engine speak these types; the servicer
converts them to and from the wire (``memoryd.convert``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import NamedTuple

ROLES = ("system", "user", "assistant", "tool", "developer")
PINNED_PRIORITY = 0
NO_METADATA: Mapping[str, str] = MappingProxyType({})  # a shared, read-only empty default


class ToolCall(NamedTuple):
    """One call an assistant message makes; ``arguments`` is the model's JSON text, byte for byte."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class ContentPart:
    """One part of a multi-part content: ``kind`` is "text", "image" or "file".

    Text parts use ``text``; media parts point at their bytes by ``url`` or ``file_id``, or
    hold small ``data`` inline."""

    kind: str
    text: str = ""
    url: str = ""
    file_id: str = ""
    data: bytes = b""
    mime_type: str = ""
    size_bytes: int = 0
    detail: str = ""
    width: int = 0
    height: int = 0
    filename: str = ""


NO_TOOL_CALLS: tuple[ToolCall, ...] = ()
NO_PARTS: tuple[ContentPart, ...] = ()


class Kind(StrEnum):
    MESSAGE = "message"
    SUMMARY = "summary"


@dataclass(frozen=True, slots=True)
class RefSpec:
    """A validated reference to an instance: exactly one of ``key`` and ``agent_id`` is set."""

    memory_id: str
    key: str | None
    agent_id: str | None
    context: dict[str, object]


@dataclass(frozen=True, slots=True)
class IncomingMessage:
    """A message as the client sent it, validated; not yet redacted or counted."""

    role: str
    content: str
    content_type: str
    priority: int | None
    metadata: dict[str, str]
    persist: bool
    tool_calls: tuple[ToolCall, ...] = NO_TOOL_CALLS
    tool_call_id: str = ""
    name: str = ""
    parts: tuple[ContentPart, ...] = NO_PARTS
    extra: str = ""


@dataclass(frozen=True, slots=True)
class NewMessage:
    """A message ready to store: validated, redacted and counted, seq not yet assigned."""

    role: str
    content: str
    content_type: str
    priority: int | None
    effective_priority: int
    token_count: int
    metadata: Mapping[str, str] = field(default_factory=dict)
    tool_calls: tuple[ToolCall, ...] = NO_TOOL_CALLS
    tool_call_id: str = ""
    name: str = ""
    parts: tuple[ContentPart, ...] = NO_PARTS
    extra: str = ""

    @property
    def pinned(self) -> bool:
        return self.effective_priority == PINNED_PRIORITY


class StoredMessage(NamedTuple):
    """A message as stored: seq and id are assigned by the store and never change.

    A named tuple rather than a frozen dataclass: a read by a daemon with nothing cached
    decodes every stored entry, and building a tuple costs a quarter of a frozen
    dataclass's ``__init__`` (which sets each of its 11 fields through
    ``object.__setattr__``); see docs/decisions.md, "Reading a large instance".
    """

    seq: int
    id: str
    role: str
    content: str
    content_type: str
    priority: int | None
    effective_priority: int
    token_count: int
    created_at_ms: int
    metadata: Mapping[str, str] = NO_METADATA
    kind: Kind = Kind.MESSAGE
    # Tool calls (assistant), the call a tool message answers, a participant/tool name,
    # multi-part content and opaque provider fields (JSON text): issue 18's message shape.
    tool_calls: tuple[ToolCall, ...] = NO_TOOL_CALLS
    tool_call_id: str = ""
    name: str = ""
    parts: tuple[ContentPart, ...] = NO_PARTS
    extra: str = ""
    # Set only on HISTORY reads: the message was folded out of the live context into the
    # instance's history (issue 19). Live messages (RAW, CONTEXT, every store read) say False.
    folded: bool = False

    @property
    def pinned(self) -> bool:
        return self.effective_priority == PINNED_PRIORITY


@dataclass(frozen=True, slots=True)
class Summary:
    """The rolling summary of flushed messages (one per instance)."""

    content: str
    token_count: int
    through_seq: int  # highest seq folded into it
    updated_at_ms: int


@dataclass(frozen=True, slots=True)
class InstanceMeta:
    """Counters of one instance; maintained atomically with the content."""

    message_count: int = 0
    pinned_tokens: int = 0
    recent_tokens: int = 0
    summary_tokens: int = 0
    last_seq: int = 0
    flush_count: int = 0
    last_flush_at_ms: int | None = None
    fence: int = 0
    evicted: int = 0  # messages dropped by flushes without being folded (fifo)
    # The instance's identity: set when it is created, new whenever it is wiped (Clear, TTL
    # expiry, EndWorkflow) and created again; "" while it does not exist. Seqs restart at 1
    # in a new incarnation, so a seq or a counter alone cannot tell two incarnations apart.
    epoch: str = ""
    # Folded messages kept in the instance's history (not counting live ones), and those the
    # history cap (``persistence.max_history_messages``) dropped since the instance was created.
    history_messages: int = 0
    history_dropped: int = 0
    summary_through_seq: int = 0  # the highest seq the current summary covers (0: no summary)
    # DeleteMessages calls that deleted something: a read cache re-validates against it, since
    # a delete, unlike a flush, does not move flush_count.
    delete_count: int = 0

    @property
    def token_count(self) -> int:
        return self.pinned_tokens + self.recent_tokens + self.summary_tokens


@dataclass(frozen=True, slots=True)
class InstanceState:
    """Everything the engine needs to plan: counters, summary and stored messages.

    ``messages`` are oldest first (ascending seq), as every store returns them; the
    engine relies on that order and does not sort."""

    meta: InstanceMeta
    summary: Summary | None
    messages: tuple[StoredMessage, ...]


@dataclass(frozen=True, slots=True)
class TailState:
    """What a context view needs of an instance, read without its whole length (``tail_state``).

    Counters, summary, every pinned message and a suffix of the non-pinned ones (the newest,
    oldest first). ``priorities`` counts the stored non-pinned messages per effective priority
    (only priorities that have messages), from counters kept with the content: how many
    messages the suffix leaves out, and whether the instance has one non-pinned priority, are
    known without reading them (docs/redis.md, "Reads")."""

    meta: InstanceMeta
    summary: Summary | None
    pinned: tuple[StoredMessage, ...]
    recent: tuple[StoredMessage, ...]
    priorities: Mapping[int, int]

    @property
    def recent_total(self) -> int:
        """Non-pinned messages stored (``recent`` holds the newest of them)."""
        return sum(self.priorities.values())

    @property
    def complete(self) -> bool:
        """Whether ``recent`` is every stored non-pinned message."""
        return len(self.recent) >= self.recent_total

    def as_state(self) -> InstanceState:
        """The pinned and the suffix messages as one state, oldest first (the engine's input)."""
        if not self.pinned:
            messages = self.recent
        elif not self.recent:
            messages = self.pinned
        else:
            messages = tuple(sorted((*self.pinned, *self.recent), key=_seq_of))
        return InstanceState(meta=self.meta, summary=self.summary, messages=messages)


def _seq_of(m: StoredMessage) -> int:
    return m.seq


@dataclass(frozen=True, slots=True)
class AppendedRef:
    """What an append assigned to one message; remembered for idempotent replays."""

    seq: int
    id: str
    token_count: int
    effective_priority: int
    created_at_ms: int


@dataclass(frozen=True, slots=True)
class AppendOutcome:
    refs: tuple[AppendedRef, ...]
    meta: InstanceMeta
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class FlushPlan:
    """Exact seqs to delete and the summary to write (None: keep the current one)."""

    strategy: str
    remove_seqs: tuple[int, ...]
    summary: Summary | None
    tokens_before: int
    tokens_after: int
    # The incarnation the plan was made from (``InstanceMeta.epoch``): apply_flush refuses it
    # for any other, so a plan can never remove the messages of a re-created instance.
    epoch: str = ""
    # The fold count (``InstanceMeta.flush_count``) the plan was made at, or None: apply_flush
    # then refuses it (FoldedMeanwhile) if any other fold happened since (external folds).
    flush_count: int | None = None


@dataclass(frozen=True, slots=True)
class HistoryPolicy:
    """What a fold does with the messages it takes out of the live context (per resource:
    ``persistence.history`` and ``persistence.max_history_messages``)."""

    keep: bool = True
    max_messages: int = 0  # 0: no cap; beyond it the oldest (lowest seq) history is dropped


KEEP_ALL_HISTORY = HistoryPolicy()


@dataclass(frozen=True, slots=True)
class DeleteOutcome:
    deleted_seqs: tuple[int, ...]  # ascending; seqs that were not stored are not listed
    meta: InstanceMeta


@dataclass(frozen=True, slots=True)
class FlushOutcome:
    removed_seqs: tuple[int, ...]  # what was really removed (a concurrent clear may shrink it)
    meta: InstanceMeta
