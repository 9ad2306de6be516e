"""Request validation: every check names the field it rejects, and runs before any change."""

from __future__ import annotations

from collections.abc import Sequence

from memoryd_client.v1 import memory_pb2 as pb

from memoryd.convert import ROLE_NAMES, struct_to_dict
from memoryd.errors import InvalidArgument, ResourceExhausted
from memoryd.models import IncomingMessage, RefSpec
from memoryd.settings import Settings

MAX_CONTENT_TYPE = 128
MAX_IDEMPOTENCY_KEY = 256
MAX_METADATA_BYTES = 16_384
MAX_CHUNK = 10_000
#: Seqs one DeleteMessages call may name.
MAX_DELETE_SEQS = 1_000
#: The largest seq any store can assign (Redis INCR counts in a signed 64-bit integer).
MAX_SEQ = 2**63 - 1


def ref(r: pb.MemoryRef, settings: Settings, field: str = "ref", *, present: bool = True) -> RefSpec:
    if not present:
        raise InvalidArgument(field, "required")
    if not r.memory_id:
        raise InvalidArgument(f"{field}.memory_id", "required")
    target = r.WhichOneof("target")
    if target == "key":  # emptiness and size: keys.validate_direct_key, at resolution
        return RefSpec(r.memory_id, r.key, None, {})
    if target == "agent":
        if not r.agent.agent_id:
            raise InvalidArgument(f"{field}.agent.agent_id", "required")
        return RefSpec(r.memory_id, None, r.agent.agent_id, struct_to_dict(r.agent.context))
    raise InvalidArgument(f"{field}.target", "set either key or agent")


def messages(msgs: Sequence[pb.Message], settings: Settings) -> list[IncomingMessage]:
    if not msgs:
        raise InvalidArgument("messages", "at least one message is required")
    if len(msgs) > settings.max_batch_messages:
        raise ResourceExhausted(
            f"messages: {len(msgs)} messages exceed the limit of {settings.max_batch_messages} per call"
        )
    out = []
    for i, m in enumerate(msgs):  # field names are formatted only for an error
        role = ROLE_NAMES.get(m.role)
        if role is None:
            raise InvalidArgument(f"messages[{i}].role", "must be SYSTEM, USER, ASSISTANT or TOOL")
        content = m.content
        size = len(content.encode("utf-8"))
        if size > settings.max_message_bytes:
            raise ResourceExhausted(
                f"messages[{i}].content: {size} bytes exceed the limit of {settings.max_message_bytes}"
            )
        if len(m.content_type) > MAX_CONTENT_TYPE:
            raise InvalidArgument(f"messages[{i}].content_type", f"longer than {MAX_CONTENT_TYPE} characters")
        priority = m.priority if m.HasField("priority") else None
        if priority is not None and priority < 0:
            raise InvalidArgument(f"messages[{i}].priority", "must be >= 0")
        metadata = dict(m.metadata)
        if metadata and sum(len(k.encode()) + len(v.encode()) for k, v in metadata.items()) > MAX_METADATA_BYTES:
            raise InvalidArgument(f"messages[{i}].metadata", f"larger than {MAX_METADATA_BYTES} bytes")
        out.append(IncomingMessage(
            role=role, content=content, content_type=m.content_type or "text", priority=priority,
            metadata=metadata, persist=m.persist if m.HasField("persist") else True,
        ))
    return out


def idempotency_key(key: str) -> str | None:
    if len(key) > MAX_IDEMPOTENCY_KEY:
        raise InvalidArgument("idempotency_key", f"longer than {MAX_IDEMPOTENCY_KEY} characters")
    return key or None


def read(req: pb.ReadRequest) -> None:
    if req.view not in (pb.READ_VIEW_UNSPECIFIED, pb.READ_VIEW_CONTEXT, pb.READ_VIEW_RAW, pb.READ_VIEW_HISTORY):
        raise InvalidArgument("view", "must be CONTEXT, RAW or HISTORY")
    if req.chunk_size > MAX_CHUNK:
        raise InvalidArgument("chunk_size", f"must be <= {MAX_CHUNK}")


def delete_seqs(seqs: Sequence[int]) -> list[int]:
    """DeleteMessages' seqs: at least one, none 0, at most ``MAX_DELETE_SEQS`` (one atomic
    store script deletes them all; a whole conversation is forgotten with Clear)."""
    if not seqs:
        raise InvalidArgument("seqs", "at least one seq is required")
    if len(seqs) > MAX_DELETE_SEQS:
        raise InvalidArgument("seqs", f"{len(seqs)} seqs exceed the limit of {MAX_DELETE_SEQS} per call")
    for i, s in enumerate(seqs):
        if s == 0:
            raise InvalidArgument(f"seqs[{i}]", "must be > 0 (seqs start at 1)")
    return [min(s, MAX_SEQ) for s in seqs]  # no message has a larger seq: the same, and storable


def after_seq(value: int) -> int:
    """``after_seq`` clamped to ``MAX_SEQ``: no message follows MAX_SEQ, so a larger value
    (up to the wire's 2^64-1) means the same (nothing), and every store sees a seq it can
    handle (Redis refuses a stream id past 2^64-1)."""
    return value if value <= MAX_SEQ else MAX_SEQ
