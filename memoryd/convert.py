"""Conversions between the wire (memoryd.v1 protobuf) and memoryd.models."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from google.protobuf import struct_pb2
from google.protobuf.internal.containers import RepeatedCompositeFieldContainer
from memoryd_client.v1 import memory_pb2 as pb

from memoryd.models import ContentPart, InstanceMeta, Kind, StoredMessage, ToolCall

ROLE_NAMES: dict[pb.Role.ValueType, str] = {
    pb.ROLE_SYSTEM: "system",
    pb.ROLE_USER: "user",
    pb.ROLE_ASSISTANT: "assistant",
    pb.ROLE_TOOL: "tool",
    pb.ROLE_DEVELOPER: "developer",
}
ROLE_VALUES: dict[str, pb.Role.ValueType] = {name: value for value, name in ROLE_NAMES.items()}
_SUMMARY = Kind.SUMMARY  # enum members are slow to read from their class (and to hash)
_KIND_SUMMARY, _KIND_MESSAGE = pb.MESSAGE_KIND_SUMMARY, pb.MESSAGE_KIND_MESSAGE
_role_value, _ROLE_UNSPECIFIED = ROLE_VALUES.get, pb.ROLE_UNSPECIFIED
RepeatedMessages = RepeatedCompositeFieldContainer[pb.Message]
STRATEGIES = {"hybrid_summary": pb.FLUSH_STRATEGY_HYBRID_SUMMARY, "fifo": pb.FLUSH_STRATEGY_FIFO}
MODES = {"read-write": pb.ACCESS_MODE_READ_WRITE, "read-only": pb.ACCESS_MODE_READ_ONLY}


def message_to_pb(msg: StoredMessage) -> pb.Message:
    out = pb.Message()
    _fill(out, msg)
    return out


def add_messages(out: RepeatedMessages, messages: Iterable[StoredMessage]) -> None:
    """Append ``messages`` to a repeated Message field, built in place.

    Building each pb.Message and copying it into the response costs a third more per
    message, so reads fill their response here.
    """
    add = out.add
    for msg in messages:
        _fill(add(), msg)


def _fill(item: pb.Message, msg: StoredMessage) -> None:
    """The one mapping of a stored message onto the wire message.

    Unpacks the named tuple once (15% cheaper than one attribute read per field; a RAW read
    runs this for every message it sends). The fields of issue 18 (tool calls, parts, ...)
    cost one truthiness test each when empty, as they are on most messages."""
    (seq, message_id, role, content, content_type, priority, effective, tokens, ms, metadata, kind,
     tool_calls, tool_call_id, name, parts, extra) = msg[:16]
    item.role = _role_value(role, _ROLE_UNSPECIFIED)
    item.content = content
    item.content_type = content_type
    if priority is not None:
        item.priority = priority
    item.seq = seq
    item.id = message_id
    item.token_count = tokens
    item.kind = _KIND_SUMMARY if kind is _SUMMARY else _KIND_MESSAGE
    item.effective_priority = effective
    created = item.created_at  # one wrapper for the sub-message, not two
    created.seconds = ms // 1000
    created.nanos = (ms % 1000) * 1_000_000
    if metadata:
        item.metadata.update(metadata)
    if tool_calls:
        add_call = item.tool_calls.add
        for call_id, call_name, arguments in tool_calls:
            add_call(id=call_id, name=call_name, arguments=arguments)
    if tool_call_id:
        item.tool_call_id = tool_call_id
    if name:
        item.name = name
    if parts:
        _fill_parts(item, parts)
    if extra:
        item.extra = extra


def _fill_parts(item: pb.Message, parts: Iterable[ContentPart]) -> None:
    add = item.parts.add
    for p in parts:
        out = add()
        if p.kind == "text":
            out.text = p.text
            continue
        media = out.image if p.kind == "image" else out.file
        media.SetInParent()  # an image/file with every field at its default is still that kind
        if p.url:
            media.url = p.url
        if p.file_id:
            media.file_id = p.file_id
        if p.data:
            media.data = p.data
        if p.mime_type:
            media.mime_type = p.mime_type
        if p.size_bytes:
            media.size_bytes = p.size_bytes
        if p.detail:
            media.detail = p.detail
        if p.width:
            media.width = p.width
        if p.height:
            media.height = p.height
        if p.filename:
            media.filename = p.filename


def tool_calls_from_pb(calls: Iterable[pb.ToolCall]) -> tuple[ToolCall, ...]:
    return tuple(ToolCall(c.id, c.name, c.arguments) for c in calls)


def part_from_pb(part: pb.ContentPart) -> ContentPart | None:
    """The domain part of a wire part; None when no kind is set (validation refuses it)."""
    kind = part.WhichOneof("part")
    if kind == "text":
        return ContentPart("text", text=part.text)
    if kind is None:
        return None
    m = part.image if kind == "image" else part.file
    return ContentPart(kind, url=m.url, file_id=m.file_id, data=m.data, mime_type=m.mime_type,
                       size_bytes=m.size_bytes, detail=m.detail, width=m.width, height=m.height,
                       filename=m.filename)


def fill_stats(
    out: pb.InstanceStats, meta: InstanceMeta, *, instance_id: str, budget: int, strategy: str, encoding: str
) -> None:
    """Set ``out`` in place (a response's own field: building a message and passing it to
    the response's constructor would copy it)."""
    out.instance_id = instance_id
    out.message_count = meta.message_count
    out.token_count = meta.token_count
    out.pinned_tokens = meta.pinned_tokens
    out.summary_tokens = meta.summary_tokens
    out.recent_tokens = meta.recent_tokens
    out.budget_tokens = budget
    out.last_seq = meta.last_seq
    out.flush_count = meta.flush_count
    out.evicted = meta.evicted
    out.strategy = STRATEGIES.get(strategy, pb.FLUSH_STRATEGY_UNSPECIFIED)
    out.encoding = encoding
    if meta.last_flush_at_ms is not None:
        out.last_flush_at.FromMilliseconds(meta.last_flush_at_ms)


def struct_to_dict(value: struct_pb2.Struct) -> dict[str, Any]:
    """A Struct as plain Python values, numbers as floats (NaN and infinities included).

    Not json_format.MessageToDict: it raises ValueError on a non-finite number anywhere in
    the Struct, but a context value matters only where a key template uses it (and the
    template refuses a non-finite number, naming the field)."""
    return {k: _value(v) for k, v in value.fields.items()}


def _value(value: struct_pb2.Value) -> Any:
    kind = value.WhichOneof("kind")
    if kind == "number_value":
        return value.number_value
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "struct_value":
        return struct_to_dict(value.struct_value)
    if kind == "list_value":
        return [_value(v) for v in value.list_value.values]
    return None  # null_value, or no kind set


def dict_to_struct(value: dict[str, Any]) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(value)
    return out
