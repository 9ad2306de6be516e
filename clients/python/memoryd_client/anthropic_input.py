"""Anthropic Messages conversations -> messages ``append`` takes (the input side).

``from_anthropic(messages, system=...)`` turns a conversation in Anthropic's Messages format
(``system`` plus ``messages`` of ``user``/``assistant`` turns whose ``content`` is a string or
a list of blocks) into the OpenAI Chat message dicts ``append`` accepts, so an agent built on
Anthropic stores its conversation as it is and reads it back with ``to_anthropic``:

* ``system`` (a string or text blocks) -> one ``system`` message;
* ``text`` blocks -> the message's text (several, or text next to media: content parts);
* ``image`` blocks (``source`` of type ``url`` or ``base64``) -> image parts; ``document``
  blocks (``base64``, or a ``file`` id) -> file parts;
* an assistant turn's ``tool_use`` blocks -> ``tool_calls`` (``arguments`` is
  ``json.dumps(input)``: the JSON text of the input object);
* a user turn's ``tool_result`` blocks -> one ``tool`` message each, answering its
  ``tool_use_id``, before the turn's other content (Anthropic puts them first);
  ``is_error: true`` is kept in ``extra``;
* ``thinking`` / ``redacted_thinking`` blocks (extended thinking) -> kept byte for byte in
  the assistant message's ``extra`` under ``thinking_blocks``, and given back by
  ``to_anthropic`` in front of the turn's other blocks, as Anthropic requires with tool use.

Anything else (a block type memoryd does not know) is refused with ValueError naming where
it is, never stored half.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

THINKING_KEY = "thinking_blocks"  # the extra key keeping extended-thinking blocks
_THINKING = ("thinking", "redacted_thinking")


def from_anthropic(messages: Iterable[Mapping[str, Any]], system: str | Iterable[Mapping[str, Any]] | None = None,
                   ) -> list[dict[str, Any]]:
    """Anthropic ``system`` + ``messages`` as message dicts for ``append`` (OpenAI Chat form)."""
    out: list[dict[str, Any]] = []
    if system:
        text = system if isinstance(system, str) else "\n\n".join(
            _text_block(b, f"system[{i}]") for i, b in enumerate(system))
        out.append({"role": "system", "content": text})
    for i, m in enumerate(messages):
        role, content = m.get("role"), m.get("content")
        at = f"messages[{i}]"
        if role not in ("user", "assistant"):
            raise ValueError(f"{at}.role: must be user or assistant, got {role!r}")
        if isinstance(content, str):
            out.append({"role": role, "content": content})
            continue
        if not isinstance(content, list):
            raise ValueError(f"{at}.content: expected a string or a list of blocks, got {type(content).__name__}")
        out.extend(_assistant(content, at) if role == "assistant" else _user(content, at))
    return out


def _user(blocks: list[Any], at: str) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for j, b in enumerate(blocks):
        where = f"{at}.content[{j}]"
        kind = _kind(b, where)
        if kind == "tool_result":
            results.append(_tool_result(b, where))
        else:
            parts.append(_part(b, kind, where))
    rest = [{"role": "user", "content": _content(parts)}] if parts else []
    return results + rest


def _assistant(blocks: list[Any], at: str) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    calls: list[dict[str, Any]] = []
    thinking: list[Any] = []
    for j, b in enumerate(blocks):
        where = f"{at}.content[{j}]"
        kind = _kind(b, where)
        if kind == "tool_use":
            calls.append({"id": _str(b, "id", where), "type": "function",
                          "function": {"name": _str(b, "name", where),
                                       "arguments": json.dumps(b.get("input", {}), ensure_ascii=False)}})
        elif kind in _THINKING:
            thinking.append(dict(b))
        elif kind == "text":
            parts.append(_part(b, kind, where))
        else:
            raise ValueError(f"{where}.type: {kind!r} is not an assistant block memoryd stores")
    msg: dict[str, Any] = {"role": "assistant", "content": _content(parts) if parts else None}
    if calls:
        msg["tool_calls"] = calls
    if thinking:
        msg[THINKING_KEY] = thinking  # not a key memoryd models: append keeps it in extra
    return [msg]


def _tool_result(b: Mapping[str, Any], where: str) -> dict[str, Any]:
    content = b.get("content", "")
    if isinstance(content, list):  # text blocks (images in a result are refused: a tool message is text)
        content = "".join(_text_block(x, f"{where}.content[{k}]") for k, x in enumerate(content))
    elif not isinstance(content, str):
        raise ValueError(f"{where}.content: expected a string or text blocks, got {type(content).__name__}")
    msg: dict[str, Any] = {"role": "tool", "tool_call_id": _str(b, "tool_use_id", where), "content": content}
    if b.get("is_error"):
        msg["is_error"] = True  # kept in extra
    return msg


def _part(b: Mapping[str, Any], kind: str, where: str) -> dict[str, Any]:
    if kind == "text":
        return {"type": "text", "text": _str(b, "text", where)}
    if kind not in ("image", "document"):
        raise ValueError(f"{where}.type: unknown block type {kind!r}")
    source = b.get("source")
    if not isinstance(source, Mapping):
        raise ValueError(f"{where}.source: required for {kind} blocks")
    stype = source.get("type")
    if stype == "url":
        url = _str(source, "url", f"{where}.source")
    elif stype == "base64":
        url = f"data:{_str(source, 'media_type', f'{where}.source')};base64,{_str(source, 'data', f'{where}.source')}"
    elif stype == "file" and kind == "document":
        return {"type": "file", "file": {"file_id": _str(source, "file_id", f"{where}.source")}}
    else:
        raise ValueError(f"{where}.source.type: {stype!r} is not url or base64 (or file, for documents)")
    if kind == "image":
        return {"type": "image_url", "image_url": {"url": url}}
    if stype == "base64":
        return {"type": "file", "file": {"file_data": url, **({"filename": b["title"]} if b.get("title") else {})}}
    raise ValueError(f"{where}.source: a document by URL has no OpenAI file form; give it base64 or as a file id")


def _content(parts: list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    if len(parts) == 1 and parts[0]["type"] == "text":
        return str(parts[0]["text"])
    return parts


def _kind(b: Any, where: str) -> str:
    if not isinstance(b, Mapping) or not isinstance(b.get("type"), str):
        raise ValueError(f"{where}: expected a content block with a type")
    return str(b["type"])


def _text_block(b: Any, where: str) -> str:
    if _kind(b, where) != "text":
        raise ValueError(f"{where}.type: expected a text block, got {b.get('type')!r}")
    return _str(b, "text", where)


def _str(b: Mapping[str, Any], key: str, where: str) -> str:
    v = b.get(key)
    if not isinstance(v, str):
        raise ValueError(f"{where}.{key}: expected a string, got {type(v).__name__}")
    return v
