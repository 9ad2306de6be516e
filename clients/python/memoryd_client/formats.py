"""Read messages as provider histories: ``to_openai`` (Chat Completions) and ``to_anthropic``
(Messages). The Node (``toOpenAI``) and Go (``ToOpenAI``) clients follow the same rules.

Both take the ``pb.Message`` objects a read returns (RAW or CONTEXT, oldest first) and
always return a history the provider accepts (docs/tokens-and-budget.md, promise 8):

* the summary (kind SUMMARY) and ``system``/``developer`` messages: OpenAI keeps them as
  messages (the summary as ``system``); Anthropic joins them, in order, with blank lines,
  into the returned system text;
* an assistant message with ``tool_calls`` is followed at once by its results, in call
  order, even when other messages were appended between them (those come after);
* a call with no result, in a group that is not the last thing in the history (an agent
  that stopped mid-call while the conversation went on), is answered with
  ``NO_RESULT``; the newest group still waiting for its results is left as it is;
* a tool message whose call is not in the input (an orphan: its call was deleted or
  left out) is dropped, never sent without its call; a second result for the same call
  is dropped too;
* Anthropic: tool calls become ``tool_use`` blocks (``input`` = the arguments parsed as a
  JSON object; ``{}`` for empty arguments; ``{"arguments": <text>}`` when they are not
  a JSON object), results ``tool_result`` blocks in ONE user message right after the
  call, before any other user text; consecutive messages of one role are merged, empty
  text is never sent as a block, messages left empty are dropped, and a history that
  would start with the assistant starts with a user message ``ANTHROPIC_OPENER``;
* content parts: OpenAI ``text`` / ``image_url`` / ``file``; Anthropic ``text`` /
  ``image`` / ``document`` (sources by URL, file id or base64 data);
* OpenAI: ``name`` is kept (not on tool messages); ``extra`` (a JSON object) adds its
  keys that the converter does not produce itself.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Sequence
from typing import Any

from memoryd_client.v1 import memory_pb2 as pb

NO_RESULT = "[no result recorded]"
"""Content of the placeholder answering a call whose result was never stored."""
ANTHROPIC_OPENER = "(continued)"
"""The user turn put before a history that would start with the assistant (Anthropic's
first message must be the user's)."""

_ROLES = {pb.ROLE_SYSTEM: "system", pb.ROLE_USER: "user", pb.ROLE_ASSISTANT: "assistant",
          pb.ROLE_TOOL: "tool", pb.ROLE_DEVELOPER: "developer"}


def _role(m: pb.Message) -> str:
    return _ROLES.get(m.role, "user")


def _plan(messages: Sequence[pb.Message]) -> list[tuple[pb.Message, list[tuple[pb.ToolCall, pb.Message | None]]]]:
    """Messages in output order, each assistant turn with calls paired with its results
    (None: unanswered). Orphan and duplicate results are left out; a trailing pending
    group keeps its unanswered calls as None (the caller leaves them open)."""
    owner: dict[str, int] = {}
    for i, m in enumerate(messages):
        for call in m.tool_calls:
            owner[call.id] = i
    results: dict[str, pb.Message] = {}
    for i, m in enumerate(messages):
        if m.role == pb.ROLE_TOOL and owner.get(m.tool_call_id, len(messages)) < i:
            results.setdefault(m.tool_call_id, m)
    out: list[tuple[pb.Message, list[tuple[pb.ToolCall, pb.Message | None]]]] = []
    for m in messages:
        if m.role == pb.ROLE_TOOL:
            continue  # emitted with its call, or an orphan / duplicate: never alone
        calls = [(c, results.get(c.id)) for c in m.tool_calls] if m.tool_calls else []
        out.append((m, calls))
    return out


def _trailing(plan: list[tuple[pb.Message, list[tuple[pb.ToolCall, pb.Message | None]]]], i: int) -> bool:
    """True when entry ``i`` is the last message of the history: its open calls may wait."""
    return i == len(plan) - 1


def _text(m: pb.Message) -> str:
    if m.parts:
        return "\n".join(p.text for p in m.parts if p.WhichOneof("part") == "text")
    return m.content


# -- OpenAI Chat Completions ---------------------------------------------------------------

def _media_url(ref: pb.MediaRef) -> str:
    if ref.url:
        return ref.url
    return f"data:{ref.mime_type or 'application/octet-stream'};base64,{base64.b64encode(ref.data).decode()}"


def _openai_part(part: pb.ContentPart) -> dict[str, Any]:
    kind = part.WhichOneof("part")
    if kind == "text":
        return {"type": "text", "text": part.text}
    ref = part.image if kind == "image" else part.file
    if kind == "image" and (ref.url or ref.data):
        image: dict[str, Any] = {"url": _media_url(ref)}
        if ref.detail:
            image["detail"] = ref.detail
        return {"type": "image_url", "image_url": image}
    file: dict[str, Any] = {"file_id": ref.file_id} if ref.file_id else {"file_data": _media_url(ref)}
    if ref.filename:
        file["filename"] = ref.filename
    return {"type": "file", "file": file}


def _openai_content(m: pb.Message) -> str | list[dict[str, Any]]:
    if m.parts:
        return [_openai_part(p) for p in m.parts]
    return m.content


ANTHROPIC_ONLY = frozenset(("thinking_blocks", "is_error"))
"""``extra`` keys ``from_anthropic`` keeps for ``to_anthropic``; never sent to OpenAI."""


def _with_extra(out: dict[str, Any], m: pb.Message) -> dict[str, Any]:
    if m.extra:
        try:
            extra = json.loads(m.extra)
        except ValueError:
            extra = None
        if isinstance(extra, dict):
            for key, value in extra.items():
                if key not in ANTHROPIC_ONLY:
                    out.setdefault(key, value)
    return out


def to_openai(messages: Iterable[pb.Message]) -> list[dict[str, Any]]:
    """``messages`` (a read's, oldest first) as OpenAI Chat Completions message dicts."""
    plan = _plan(list(messages))
    out: list[dict[str, Any]] = []
    for i, (m, calls) in enumerate(plan):
        if m.kind == pb.MESSAGE_KIND_SUMMARY:
            out.append({"role": "system", "content": m.content})
            continue
        role = _role(m)
        item: dict[str, Any] = {"role": role}
        if calls:
            content = _openai_content(m)
            item["content"] = content if content else None
            item["tool_calls"] = [
                {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                for c, _r in calls
            ]
        else:
            item["content"] = _openai_content(m)
        if m.name:
            item["name"] = m.name
        out.append(_with_extra(item, m))
        for call, result in calls:
            if result is not None:
                answer = {"role": "tool", "tool_call_id": call.id, "content": _tool_text(result)}
                out.append(_with_extra(answer, result))
            elif not _trailing(plan, i):
                out.append({"role": "tool", "tool_call_id": call.id, "content": NO_RESULT})
    return out


def _tool_text(m: pb.Message) -> str:
    """A result's content as text (OpenAI tool messages take text): text parts joined, media named."""
    if not m.parts:
        return m.content
    texts = []
    for p in m.parts:
        kind = p.WhichOneof("part")
        if kind == "text":
            texts.append(p.text)
        else:
            ref = p.image if kind == "image" else p.file
            texts.append(f"[{kind}: {ref.url or ref.file_id or ref.filename or ref.mime_type}]")
    return "\n".join(texts)


# -- Anthropic Messages --------------------------------------------------------------------

def _source(ref: pb.MediaRef) -> dict[str, Any]:
    if ref.file_id:
        return {"type": "file", "file_id": ref.file_id}
    if ref.url and not ref.url.startswith("data:"):
        return {"type": "url", "url": ref.url}
    if ref.url:  # data:<mime>;base64,<data>
        head, _sep, data = ref.url.partition(",")
        mime = head[5:].split(";")[0] or ref.mime_type
        return {"type": "base64", "media_type": mime, "data": data}
    return {"type": "base64", "media_type": ref.mime_type, "data": base64.b64encode(ref.data).decode()}


def _anthropic_blocks(m: pb.Message) -> list[dict[str, Any]]:
    if not m.parts:
        return [{"type": "text", "text": m.content}] if m.content else []
    out: list[dict[str, Any]] = []
    for p in m.parts:
        kind = p.WhichOneof("part")
        if kind == "text":
            if p.text:
                out.append({"type": "text", "text": p.text})
        elif kind == "image":
            out.append({"type": "image", "source": _source(p.image)})
        elif kind == "file":
            out.append({"type": "document", "source": _source(p.file)})
    return out


def _input(arguments: str) -> dict[str, Any]:
    if not arguments.strip():
        return {}
    try:
        value = json.loads(arguments)
    except ValueError:
        value = None
    return value if isinstance(value, dict) else {"arguments": arguments}


def to_anthropic(messages: Iterable[pb.Message]) -> tuple[str, list[dict[str, Any]]]:
    """``messages`` (a read's, oldest first) as ``(system_text, messages)`` for Anthropic Messages."""
    plan = _plan(list(messages))
    system: list[str] = []
    turns: list[dict[str, Any]] = []

    def add(role: str, blocks: list[dict[str, Any]]) -> None:
        if not blocks:
            return
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})

    for i, (m, calls) in enumerate(plan):
        role = _role(m)
        if m.kind == pb.MESSAGE_KIND_SUMMARY or role in ("system", "developer"):
            if text := _text(m):
                system.append(text)
            continue
        blocks = _anthropic_blocks(m)
        if role == "assistant":
            blocks = _thinking(m) + blocks  # extended thinking first, as Anthropic requires with tool use
            blocks += [{"type": "tool_use", "id": c.id, "name": c.name, "input": _input(c.arguments)}
                       for c, _r in calls]
            add("assistant", blocks)
            answers: list[dict[str, Any]] = []
            for call, result in calls:
                if result is not None:
                    answers.append(_tool_result(call.id, result))
                elif not _trailing(plan, i):
                    answers.append({"type": "tool_result", "tool_use_id": call.id, "content": NO_RESULT})
            if answers:
                turns.append({"role": "user", "content": answers})  # never merged into an earlier user turn
        else:
            add("user", blocks)
    if turns and turns[0]["role"] != "user":
        turns.insert(0, {"role": "user", "content": [{"type": "text", "text": ANTHROPIC_OPENER}]})
    return "\n\n".join(system), turns


def _extra(m: pb.Message) -> dict[str, Any]:
    if not m.extra:
        return {}
    try:
        value = json.loads(m.extra)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _thinking(m: pb.Message) -> list[dict[str, Any]]:
    """Extended-thinking blocks ``from_anthropic`` kept in ``extra`` (``thinking_blocks``)."""
    blocks = _extra(m).get("thinking_blocks")
    return [dict(b) for b in blocks if isinstance(b, dict)] if isinstance(blocks, list) else []


def _tool_result(call_id: str, m: pb.Message) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": call_id}
    if _extra(m).get("is_error") is True:
        block["is_error"] = True
    content: list[dict[str, Any]] = []
    for b in _anthropic_blocks(m):
        if b["type"] in ("text", "image", "document"):
            content.append(b)
    if content:
        block["content"] = content if m.parts else content[0]["text"]
    return block
