"""Encoding of messages, counters and idempotency records in Redis.

A stream entry has one field per attribute, in this order: ``t`` token_count and ``p``
effective priority (the scripts' counter arithmetic reads these two), ``c``
created_at_ms (set by the script from the server clock), ``i`` id, ``r`` role, ``x``
content, ``y`` content_type, ``q`` priority ("" when unset), ``m`` metadata as JSON
("" when empty) and ``k`` the rest of the message (tool calls, tool_call_id, name, parts,
extra) as one compact JSON object ("" when none is set, and absent from entries written
before those fields existed). Decoding is a few ``bytes.decode``/``int`` calls per entry and JSON only
for non-empty metadata and extensions, half the cost of one JSON blob per entry (``json.loads`` has a
fixed cost); bench/bench_redis_store.py, "encoding", measures both.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from typing import Any

from memoryd.models import (
    NO_METADATA,
    AppendedRef,
    ContentPart,
    InstanceMeta,
    Kind,
    NewMessage,
    StoredMessage,
    Summary,
    ToolCall,
)
from memoryd.store.calls import BatchCalls
from memoryd.store.redis.layout import ENTRY_FIELDS, META_FIELDS

_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
_loads = json.loads
_new_message = tuple.__new__
_MESSAGE = Kind.MESSAGE  # read once: an enum member read from its class is slow in 3.11


# message_args' order: the entry's fields less ``c`` (the script writes the server time there).
_ARGS = ("t", "p", "i", "r", "x", "y", "q", "m", "k")
if tuple(f for f in ENTRY_FIELDS if f != "c") != _ARGS:
    raise ImportError("codec.message_args no longer matches layout.ENTRY_FIELDS")
# Where decode_entry finds each field in an XRANGE entry's flat [name, value, ...] list.
_AT = {name: 2 * i + 1 for i, name in enumerate(ENTRY_FIELDS)}


def message_args(msg: NewMessage, message_id: str) -> tuple[int, int, str, str, str, str, str, str, str]:
    """The 9 values the append script takes per message, in ``_ARGS`` order (``scripts.APPEND``)."""
    return (
        msg.token_count,
        msg.effective_priority,
        message_id,
        msg.role,
        msg.content,
        msg.content_type,
        "" if msg.priority is None else str(msg.priority),
        _dumps(dict(msg.metadata)) if msg.metadata else "",
        encode_extensions(msg),
    )


def call_args(calls: BatchCalls) -> list[Any]:
    """The append script's tail (``scripts.APPEND``): answered ids, then new (id, position) pairs."""
    out: list[Any] = [len(calls.answers), *(call_id for call_id, _ in calls.answers), len(calls.new)]
    for call_id, pos, _ in calls.new:
        out += (call_id, pos)
    return out


def encode_extensions(msg: NewMessage | StoredMessage) -> str:
    """The ``k`` field: only the fields that are set, under one-letter names ("" when none is)."""
    calls, call_id, name, parts, extra = msg.tool_calls, msg.tool_call_id, msg.name, msg.parts, msg.extra
    if not (calls or call_id or name or parts or extra):
        return ""
    out: dict[str, Any] = {}
    if calls:
        out["c"] = [list(c) for c in calls]
    if call_id:
        out["a"] = call_id
    if name:
        out["n"] = name
    if parts:
        out["p"] = [_part_json(p) for p in parts]
    if extra:
        out["e"] = extra
    return _dumps(out)


# ContentPart attribute -> its key in ``k`` JSON (kind is "k"; data is base64 text).
_PART_KEYS = (("text", "t"), ("url", "u"), ("file_id", "f"), ("mime_type", "m"), ("size_bytes", "s"),
              ("detail", "d"), ("width", "w"), ("height", "h"), ("filename", "n"))


def _part_json(p: ContentPart) -> dict[str, Any]:
    out: dict[str, Any] = {"k": p.kind}
    for attr, key in _PART_KEYS:
        value = getattr(p, attr)
        if value:
            out[key] = value
    if p.data:
        out["b"] = base64.b64encode(p.data).decode("ascii")
    return out


def _part(d: dict[str, Any]) -> ContentPart:
    kwargs = {attr: d[key] for attr, key in _PART_KEYS if key in d}
    if "b" in d:
        kwargs["data"] = base64.b64decode(d["b"])
    return ContentPart(d["k"], **kwargs)


def decode_extensions(raw: bytes | str) -> tuple[tuple[ToolCall, ...], str, str, tuple[ContentPart, ...], str]:
    """The ``k`` field back to (tool_calls, tool_call_id, name, parts, extra)."""
    d = _loads(raw)
    return (
        tuple(ToolCall(*c) for c in d.get("c", ())),
        d.get("a", ""),
        d.get("n", ""),
        tuple(_part(p) for p in d.get("p", ())),
        d.get("e", ""),
    )


def record_tail(ids: Sequence[str], messages: Sequence[NewMessage]) -> bytes:
    """What an idempotency record keeps besides first seq and time: [[id, tokens, priority], ...].

    Formatted directly (ids are hex, the rest integers): half the cost of json.dumps on
    the append path; ``parse_record`` reads it back with json.loads.
    """
    items = ",".join(f'["{i}",{m.token_count},{m.effective_priority}]' for i, m in zip(ids, messages, strict=True))
    return f"[{items}]".encode()


def parse_record(record: bytes) -> tuple[AppendedRef, ...]:
    """``<first seq>:<ms>:<digest>:<tail>``, or ``<first seq>:<ms>:<tail>`` as written before
    batch digests (the tail is JSON that holds no colon)."""
    first, created, tail = record.split(b":", 2)
    if not tail.startswith(b"["):
        tail = tail.split(b":", 1)[1]
    first_seq, created_ms = int(first), int(created)
    return tuple(
        AppendedRef(seq=first_seq + i, id=mid, token_count=tok, effective_priority=prio, created_at_ms=created_ms)
        for i, (mid, tok, prio) in enumerate(_loads(tail))
    )


def decode_entry(
    entry: Sequence[Any], _t: int = _AT["t"], _p: int = _AT["p"], _c: int = _AT["c"], _i: int = _AT["i"],
    _r: int = _AT["r"], _x: int = _AT["x"], _y: int = _AT["y"], _q: int = _AT["q"], _m: int = _AT["m"],
    _k: int = _AT["k"],
) -> StoredMessage:
    """One XRANGE entry: ``[b"<seq>-0", [b"t", tok, b"p", prio, ...]]``, fields in ``ENTRY_FIELDS`` order.

    The positions come from ``layout.ENTRY_FIELDS`` and are bound as defaults (local reads
    are cheaper than a module-global per field). Built with ``tuple.__new__`` in
    field order: the named tuple's keyword ``__new__`` costs about as much again as all the
    decoding (a cold read decodes every entry)."""
    entry_id, f = entry[0], entry[1]
    priority, metadata = f[_q], f[_m]
    ext = f[_k] if len(f) > _k else None  # None: written before the ``k`` field existed
    return _new_message(StoredMessage, (
        int(entry_id[:-2]),  # seq
        f[_i].decode(),  # id
        f[_r].decode(),  # role
        f[_x].decode(),  # content
        f[_y].decode(),  # content_type
        int(priority) if priority else None,  # priority
        int(f[_p]),  # effective_priority
        int(f[_t]),  # token_count
        int(f[_c]),  # created_at_ms
        _loads(metadata) if metadata else NO_METADATA,  # metadata
        _MESSAGE,  # kind
    ) + (decode_extensions(ext) if ext else _NO_EXTENSIONS))  # tool_calls, tool_call_id, name, parts, extra


_NO_EXTENSIONS = tuple(StoredMessage._field_defaults[f] for f in StoredMessage._fields[11:])


def _int(v: Any) -> int:
    return 0 if v is None else int(v)


def decode_meta(values: Sequence[Any]) -> InstanceMeta:
    """The HMGET reply of ``layout.META_FIELDS`` (missing fields are None)."""
    v = dict(zip(META_FIELDS, values, strict=True))  # every field but these two is a count
    last_flush, epoch = v.pop("last_flush_at_ms"), v.pop("epoch")
    return InstanceMeta(
        **{name: 0 if x is None else int(x) for name, x in v.items()},
        last_flush_at_ms=None if last_flush is None else int(last_flush),
        epoch="" if epoch is None else epoch.decode(),
    )


def decode_summary(values: Sequence[Any]) -> Summary | None:
    content, tokens, through, updated = values
    if content is None:
        return None
    return Summary(
        content=content.decode(),
        token_count=_int(tokens),
        through_seq=_int(through),
        updated_at_ms=_int(updated),
    )
