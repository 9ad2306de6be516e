"""Request validation: every check names the field it rejects, and runs before any change."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from memoryd_client.v1 import memory_pb2 as pb

from memoryd.convert import ROLE_NAMES, part_from_pb, struct_to_dict, tool_calls_from_pb
from memoryd.errors import InvalidArgument, ResourceExhausted
from memoryd.models import NO_PARTS, NO_TOOL_CALLS, ContentPart, IncomingMessage, RefSpec, ToolCall
from memoryd.settings import Settings

MAX_CONTENT_TYPE = 128
MAX_IDEMPOTENCY_KEY = 256
MAX_METADATA_BYTES = 16_384
MAX_CHUNK = 10_000
#: The largest seq any store can assign (Redis INCR counts in a signed 64-bit integer).
MAX_SEQ = 2**63 - 1
#: Longest tool call id, tool_call_id and name (OpenAI and Anthropic ids are ~30 characters,
#: function names at most 64).
MAX_ID = 256
#: Largest inline media: a part's ``data``, or a ``data:`` URL. Memory is not a blob store:
#: larger media go by URL or provider file id (RESOURCE_EXHAUSTED, like any size limit).
MAX_INLINE_DATA_BYTES = 65_536
MAX_MIME_TYPE = 255
DETAILS = ("", "auto", "low", "high")


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
    """The batch as domain messages; refuses (naming the field) anything not storable as sent.

    Checks that need the instance (a tool result's call is earlier in the batch *or stored*;
    call ids unique in the instance) are the store's, atomically with the append."""
    if not msgs:
        raise InvalidArgument("messages", "at least one message is required")
    if len(msgs) > settings.max_batch_messages:
        raise ResourceExhausted(
            f"messages: {len(msgs)} messages exceed the limit of {settings.max_batch_messages} per call"
        )
    out = []
    call_ids: set[str] = set()
    for i, m in enumerate(msgs):  # field names are formatted only for an error
        role = ROLE_NAMES.get(m.role)
        if role is None:
            raise InvalidArgument(f"messages[{i}].role", "must be SYSTEM, USER, ASSISTANT, TOOL or DEVELOPER")
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
        if m.tool_calls or m.tool_call_id or m.name or m.parts or m.extra or role == "tool":
            out.append(_extended(i, m, role, priority, metadata, size, call_ids, settings))
            continue
        out.append(IncomingMessage(
            role=role, content=content, content_type=m.content_type or "text", priority=priority,
            metadata=metadata, persist=m.persist if m.HasField("persist") else True,
        ))
    return out


def _extended(
    i: int, m: pb.Message, role: str, priority: int | None, metadata: dict[str, str], size: int,
    call_ids: set[str], settings: Settings,
) -> IncomingMessage:
    """A message using issue 18's fields: tool calls, tool results, name, parts, extra.

    ``call_ids`` collects the batch's call ids (an id twice in one batch is refused here;
    an id already stored in the instance, by the store)."""
    at = f"messages[{i}]"
    calls: tuple[ToolCall, ...] = NO_TOOL_CALLS
    if m.tool_calls:
        if role != "assistant":
            raise InvalidArgument(f"{at}.tool_calls", "only an assistant message makes tool calls")
        calls = tool_calls_from_pb(m.tool_calls)
        for j, call in enumerate(calls):
            if not call.id:
                raise InvalidArgument(f"{at}.tool_calls[{j}].id", "required")
            if call.id in call_ids:
                raise InvalidArgument(f"{at}.tool_calls[{j}].id", "the batch has another call with this id")
            _short(f"{at}.tool_calls[{j}].id", call.id)
            if not call.name:
                raise InvalidArgument(f"{at}.tool_calls[{j}].name", "required")
            _short(f"{at}.tool_calls[{j}].name", call.name)
            call_ids.add(call.id)
            size += len(call.id.encode()) + len(call.name.encode()) + len(call.arguments.encode())
    if role == "tool":
        if not m.tool_call_id:
            raise InvalidArgument(f"{at}.tool_call_id", "required on a tool message (the id of the call it answers)")
        _short(f"{at}.tool_call_id", m.tool_call_id)
    elif m.tool_call_id:
        raise InvalidArgument(f"{at}.tool_call_id", "only a tool message answers a call")
    _short(f"{at}.name", m.name)
    size += len(m.tool_call_id.encode()) + len(m.name.encode())
    parts: tuple[ContentPart, ...] = NO_PARTS
    if m.parts:
        if m.content:
            raise InvalidArgument(f"{at}.parts", "set either content or parts, not both")
        parts = tuple(_part(f"{at}.parts[{k}]", p) for k, p in enumerate(m.parts))
        size += sum(_part_size(p) for p in parts)
    if m.extra:
        _json_object(f"{at}.extra", m.extra)
        size += len(m.extra.encode())
    if size > settings.max_message_bytes:
        raise ResourceExhausted(f"{at}: {size} bytes (content, parts, tool calls and extra) exceed the "
                                f"limit of {settings.max_message_bytes}")
    return IncomingMessage(
        role=role, content=m.content, content_type=m.content_type or "text", priority=priority,
        metadata=metadata, persist=m.persist if m.HasField("persist") else True,
        tool_calls=calls, tool_call_id=m.tool_call_id, name=m.name, parts=parts, extra=m.extra,
    )


def _short(field: str, value: str) -> None:
    if len(value) > MAX_ID:
        raise InvalidArgument(field, f"longer than {MAX_ID} characters")


def _part(at: str, wire: pb.ContentPart) -> ContentPart:
    part = part_from_pb(wire)
    if part is None:
        raise InvalidArgument(at, "set one of text, image or file")
    if part.kind == "text":
        return part
    at = f"{at}.{part.kind}"
    if not (part.url or part.file_id or part.data):
        raise InvalidArgument(at, "set one of url, file_id or data")
    inline = len(part.data) if part.data else len(part.url) if part.url.startswith("data:") else 0
    if inline > MAX_INLINE_DATA_BYTES:
        where = "data" if part.data else "url"
        raise ResourceExhausted(f"{at}.{where}: {inline} bytes of inline media exceed the limit of "
                                f"{MAX_INLINE_DATA_BYTES} (send larger media by URL or file id)")
    if part.detail not in DETAILS:
        raise InvalidArgument(f"{at}.detail", "must be auto, low or high (or empty)")
    if len(part.mime_type) > MAX_MIME_TYPE:
        raise InvalidArgument(f"{at}.mime_type", f"longer than {MAX_MIME_TYPE} characters")
    _short(f"{at}.filename", part.filename)
    _short(f"{at}.file_id", part.file_id)
    return part


def _part_size(p: ContentPart) -> int:
    if p.kind == "text":
        return len(p.text.encode())
    return (len(p.url.encode()) + len(p.file_id) + len(p.data) + len(p.mime_type) + len(p.detail)
            + len(p.filename.encode()))


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _json_object(field: str, text: str) -> None:
    try:
        value = json.loads(text, parse_constant=_refuse_constant)
    except ValueError as exc:  # JSONDecodeError included
        raise InvalidArgument(field, f"not JSON text ({str(exc)[:80]})") from None
    except RecursionError:
        raise InvalidArgument(field, "nested too deeply") from None
    if not isinstance(value, dict):
        raise InvalidArgument(field, "must be a JSON object ({...})")


def idempotency_key(key: str) -> str | None:
    if len(key) > MAX_IDEMPOTENCY_KEY:
        raise InvalidArgument("idempotency_key", f"longer than {MAX_IDEMPOTENCY_KEY} characters")
    return key or None


def read(req: pb.ReadRequest) -> None:
    if req.view not in (pb.READ_VIEW_UNSPECIFIED, pb.READ_VIEW_CONTEXT, pb.READ_VIEW_RAW):
        raise InvalidArgument("view", "must be CONTEXT or RAW")
    if req.chunk_size > MAX_CHUNK:
        raise InvalidArgument("chunk_size", f"must be <= {MAX_CHUNK}")


def after_seq(value: int) -> int:
    """``after_seq`` clamped to ``MAX_SEQ``: no message follows MAX_SEQ, so a larger value
    (up to the wire's 2^64-1) means the same (nothing), and every store sees a seq it can
    handle (Redis refuses a stream id past 2^64-1)."""
    return value if value <= MAX_SEQ else MAX_SEQ
