"""OpenAI Chat Completions messages -> memoryd messages (the input side of ``append``).

``append`` accepts, besides memoryd's own dict form, a message exactly as the OpenAI SDK
produces or takes it: ``{"role", "content": str | None | [parts], "name", "tool_calls":
[{"id", "type": "function", "function": {"name", "arguments"}}], "tool_call_id", ...}``
(or the SDK's pydantic object itself). What memoryd models becomes its fields; every other
key (``refusal``, ``audio``, ``annotations``, ...) is kept in ``extra`` as JSON and comes
back byte for byte. Keys whose value is None carry nothing and are dropped. What memoryd
cannot represent faithfully is refused with ValueError, never stored half: audio parts,
refusal parts and non-function tool calls.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any

from memoryd_client.v1 import memory_pb2 as pb

ROLES = {"system": pb.ROLE_SYSTEM, "user": pb.ROLE_USER, "assistant": pb.ROLE_ASSISTANT, "tool": pb.ROLE_TOOL,
         "developer": pb.ROLE_DEVELOPER}
#: memoryd's own keys of the dict form (not provider fields).
MEMORYD_KEYS = frozenset(("content_type", "priority", "metadata", "persist"))
#: OpenAI keys memoryd models; every other key goes to ``extra``.
MODELED_KEYS = frozenset(("role", "content", "name", "tool_calls", "tool_call_id"))


def message_from_openai(m: Mapping[str, Any] | Any) -> pb.Message:
    """One OpenAI Chat message (a dict, or an SDK object with ``model_dump``) as a pb.Message.

    memoryd's own keys (``content_type``, ``priority``, ``metadata``, ``persist``) may be
    given alongside. ValueError names the key it cannot take."""
    if not isinstance(m, Mapping):
        dump = getattr(m, "model_dump", None)
        if not callable(dump):
            raise TypeError(f"expected a message dict or an OpenAI SDK message, got {type(m).__name__}")
        m = dump(exclude_none=True)
    data = {k: v for k, v in m.items() if v is not None}
    role = data.pop("role", None)
    if role not in ROLES:
        raise ValueError(f"role: must be one of {', '.join(ROLES)}, got {role!r}")
    out = pb.Message(role=ROLES[role])
    content = data.pop("content", None)
    if isinstance(content, str):
        out.content = content
    elif isinstance(content, list):
        for i, part in enumerate(content):
            _add_part(out, part, f"content[{i}]")
    elif content is not None:
        raise ValueError(f"content: expected a string, None or a list of parts, got {type(content).__name__}")
    if "name" in data:
        out.name = _string(data.pop("name"), "name")
    if "tool_call_id" in data:
        out.tool_call_id = _string(data.pop("tool_call_id"), "tool_call_id")
    for j, call in enumerate(data.pop("tool_calls", None) or ()):
        out.tool_calls.append(_tool_call(call, f"tool_calls[{j}]"))
    take_memoryd_keys(out, data)
    if data:
        try:
            out.extra = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{', '.join(sorted(data))}: not JSON-serialisable ({exc})") from None
    return out


def take_memoryd_keys(out: pb.Message, data: dict[str, Any]) -> None:
    """Move memoryd's own keys (``MEMORYD_KEYS``) from ``data`` onto ``out``; a None priority is unset."""
    if "content_type" in data:
        out.content_type = data.pop("content_type")
    if data.get("priority") is not None:
        out.priority = data.pop("priority")
    data.pop("priority", None)
    if "persist" in data:
        out.persist = bool(data.pop("persist"))
    out.metadata.update(data.pop("metadata", {}) or {})


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{where}: expected a string, got {type(value).__name__}")
    return value


def _tool_call(call: Mapping[str, Any], where: str) -> pb.ToolCall:
    kind = call.get("type", "function")
    if kind != "function":
        raise ValueError(f"{where}.type: memoryd stores function tool calls only, got {kind!r}")
    fn = call.get("function") or {}
    arguments = fn.get("arguments", "")
    if not isinstance(arguments, str):  # the SDK always gives the model's JSON text
        raise ValueError(f"{where}.function.arguments: expected the JSON text, got {type(arguments).__name__}")
    return pb.ToolCall(id=_string(call.get("id", ""), f"{where}.id"),
                       name=_string(fn.get("name", ""), f"{where}.function.name"), arguments=arguments)


def _add_part(out: pb.Message, part: Mapping[str, Any], where: str) -> None:
    kind = part.get("type") if isinstance(part, Mapping) else None
    if kind == "text":
        out.parts.add(text=_string(part.get("text", ""), f"{where}.text"))
    elif kind == "image_url":
        image = part.get("image_url") or {}
        media = pb.MediaRef(url=_string(image.get("url", ""), f"{where}.image_url.url"))
        if image.get("detail"):
            media.detail = image["detail"]
        out.parts.add(image=media)
    elif kind == "file":
        f = part.get("file") or {}
        media = pb.MediaRef()
        if f.get("file_id"):
            media.file_id = f["file_id"]
        if f.get("filename"):
            media.filename = f["filename"]
        if f.get("file_data"):
            media.data, mime = _file_data(f["file_data"], f"{where}.file.file_data")
            if mime:
                media.mime_type = mime
        out.parts.add(file=media)
    elif kind in ("input_audio", "refusal"):
        raise ValueError(f"{where}: memoryd does not store {kind} parts (text, image_url and file only)")
    else:
        raise ValueError(f"{where}.type: unknown content part type {kind!r} (text, image_url or file)")


def _file_data(value: Any, where: str) -> tuple[bytes, str]:
    """OpenAI's ``file_data``: base64, or a ``data:<mime>;base64,...`` URL -> (bytes, mime)."""
    text = _string(value, where)
    mime = ""
    if text.startswith("data:"):
        header, _, text = text.partition(",")
        mime = header[5:].split(";", 1)[0]
    try:
        return base64.b64decode(text, validate=True), mime
    except (binascii.Error, ValueError):
        raise ValueError(f"{where}: not base64") from None
