"""What OpenAI Chat Completions and Anthropic Messages accept as a history, as checks.

Written from the providers' documentation and the errors their APIs return; each rule
names its source. ``validate_openai`` / ``validate_anthropic`` raise ``ProviderRuleError``
naming the rule and the message index; ``pending_ok`` allows the newest group to still
wait for its results (an agent's running turn: it adds them before calling the model).

OpenAI Chat Completions (https://platform.openai.com/docs/api-reference/chat/create,
https://platform.openai.com/docs/guides/function-calling):

O1. ``role`` is one of system, developer, user, assistant, tool.
O2. A ``tool`` message must answer a call of the assistant message before it: "messages
    with role 'tool' must be a response to a preceding message with 'tool_calls'" (the
    API's 400, e.g. github.com/openai/openai-go/issues/43, simonw/llm#937). The tool
    messages of a turn follow its assistant message directly (only other tool messages
    between), and each has a ``tool_call_id`` naming one of its calls, once.
O3. "An assistant message with 'tool_calls' must be followed by tool messages responding
    to each 'tool_call_id'" (the API's 400, quoted in microsoft/promptflow#3130): before
    the next non-tool message every call is answered — except the trailing group when
    ``pending_ok``.
O4. ``tool_calls`` items are ``{"id", "type": "function", "function": {"name",
    "arguments"}}`` with string arguments; call ids unique in the history.
O5. Assistant ``content`` is required unless ``tool_calls`` is present (then it may be
    null); user, system, developer and tool messages have string or list content.
O6. Content parts: ``text`` (``text``), ``image_url`` (``image_url.url``), ``file``
    (``file.file_id`` or ``file.file_data``); tool messages take text only.
O7. ``name`` is not a field of tool messages (their ``tool_call_id`` names the call).

Anthropic Messages (https://docs.anthropic.com/en/api/messages,
https://docs.anthropic.com/en/docs/build-with-claude/tool-use):

A1. Roles are only user and assistant; system text goes in the ``system`` parameter.
A2. The first message is the user's; user and assistant turns alternate (consecutive
    turns of one role are refused by older API versions and merged by newer ones:
    memoryd merges them itself).
A3. Every ``tool_use`` block has its ``tool_result`` in the NEXT message: "`tool_use` ids
    were found without `tool_result` blocks immediately after … Each `tool_use` block must
    have a corresponding `tool_result` block in the next message" (the API's 400) —
    except, when ``pending_ok``, the trailing assistant turn and the trailing user turn
    holding the results its agent has so far.
A4. A ``tool_result`` answers a ``tool_use`` of the assistant message right before it:
    "unexpected `tool_use_id` found in `tool_result` blocks" / "tool_result block(s) must
    be immediately preceded by an assistant message with matching tool_use block(s)";
    tool_result blocks come first in the user content, any text after them (tool-use
    docs, "Handling tool use and tool results").
A5. "text content blocks must be non-empty" (the API's 400, anthropics/claude-code#59812).
A6. "all messages must have non-empty content except for the optional final assistant
    message" (the API's 400, anthropics/claude-code#6774, obsidian-smart-composer#156).
A7. ``tool_use.input`` is a JSON object; ids unique; block types the API defines
    (text, image, document, tool_use, tool_result); an image/document ``source`` is
    ``url``, ``base64`` (with ``media_type`` and ``data``) or ``file``.
A8. ``thinking`` / ``redacted_thinking`` blocks (extended thinking) appear only in assistant
    turns, before the turn's other blocks ("Extended thinking" docs, "Preserving thinking
    blocks": passed back unmodified, the assistant content starting with them).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class ProviderRuleError(AssertionError):
    """A history the provider would refuse; the message names the rule and the index."""


def _fail(rule: str, index: int, why: str) -> None:
    raise ProviderRuleError(f"{rule} at messages[{index}]: {why}")


_OPENAI_ROLES = {"system", "developer", "user", "assistant", "tool"}


def validate_openai(messages: Sequence[dict[str, Any]], *, pending_ok: bool = True) -> None:
    """Raise ProviderRuleError unless OpenAI Chat Completions accepts ``messages``."""
    open_calls: list[str] = []  # calls of the last assistant turn not answered yet
    open_at = -1
    seen_ids: set[str] = set()
    for i, m in enumerate(messages):
        role = m.get("role")
        if role not in _OPENAI_ROLES:
            _fail("O1", i, f"role {role!r}")
        if role == "tool":
            if "name" in m:
                _fail("O7", i, "name on a tool message")
            call_id = m.get("tool_call_id")
            if not isinstance(call_id, str) or call_id not in open_calls:
                _fail("O2", i, f"tool message answering {call_id!r}, not a pending call of the assistant before it")
            open_calls.remove(str(call_id))
            content = m.get("content")
            if not isinstance(content, str) and not (
                isinstance(content, list) and all(p.get("type") == "text" and isinstance(p.get("text"), str)
                                                  for p in content)):
                _fail("O6", i, "tool content must be text")
            continue
        if open_calls:
            _fail("O3", open_at, f"calls {open_calls} unanswered before messages[{i}] ({role})")
        open_calls, open_at = [], -1
        calls = m.get("tool_calls")
        if calls is not None:
            if role != "assistant" or not isinstance(calls, list) or not calls:
                _fail("O4", i, "tool_calls must be a non-empty list on an assistant message")
            for c in calls:
                fn = c.get("function") or {}
                if c.get("type") != "function" or not isinstance(c.get("id"), str) or not c["id"] \
                        or not isinstance(fn.get("name"), str) or not isinstance(fn.get("arguments"), str):
                    _fail("O4", i, f"malformed tool call {c!r}")
                if c["id"] in seen_ids:
                    _fail("O4", i, f"call id {c['id']!r} used twice")
                seen_ids.add(c["id"])
            open_calls, open_at = [c["id"] for c in calls], i
            if m.get("content") is not None:
                _check_openai_content(m["content"], i)
            continue
        if "content" not in m or m["content"] is None:
            _fail("O5", i, f"{role} message without content")
        _check_openai_content(m["content"], i)
    if open_calls and not pending_ok:
        _fail("O3", open_at, f"calls {open_calls} unanswered at the end")


def _check_openai_content(content: Any, i: int) -> None:
    if isinstance(content, str):
        return
    if not isinstance(content, list):
        _fail("O5", i, f"content of type {type(content).__name__}")
        return
    for p in content:
        kind = p.get("type")
        ok = (kind == "text" and isinstance(p.get("text"), str)) or (
            kind == "image_url" and isinstance((p.get("image_url") or {}).get("url"), str)) or (
            kind == "file" and bool({"file_id", "file_data"} & set(p.get("file") or {})))
        if not ok:
            _fail("O6", i, f"content part {p!r}")


_BLOCKS = {"text", "image", "document", "tool_use", "tool_result"}


def validate_anthropic(system: str, messages: Sequence[dict[str, Any]], *, pending_ok: bool = True) -> None:
    """Raise ProviderRuleError unless Anthropic Messages accepts ``system`` + ``messages``."""
    if not isinstance(system, str):
        _fail("A1", -1, "system must be text")
    if messages and messages[0].get("role") != "user":
        _fail("A2", 0, "the first message must be the user's")
    pending: list[str] = []  # tool_use ids of the previous assistant turn
    seen_ids: set[str] = set()
    for i, m in enumerate(messages):
        role = m.get("role")
        if role not in ("user", "assistant"):
            _fail("A1", i, f"role {role!r}")
        if i and messages[i - 1].get("role") == role:
            _fail("A2", i, f"two {role} turns in a row")
        content = m.get("content")
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        if not isinstance(blocks, list):
            _fail("A7", i, "content must be text or a list of blocks")
            return
        last = i == len(messages) - 1
        empty = not blocks or all(b.get("type") == "text" and not b.get("text") for b in blocks)
        if empty and not (last and role == "assistant"):
            _fail("A6", i, "empty content")
        results: list[str] = []
        text_seen = False
        uses: list[str] = []
        other_seen = False
        for b in blocks:
            kind = b.get("type")
            if kind in ("thinking", "redacted_thinking"):
                if role != "assistant" or other_seen:
                    _fail("A8", i, f"{kind} block outside the start of an assistant turn")
                continue
            other_seen = True
            if kind not in _BLOCKS:
                _fail("A7", i, f"block type {kind!r}")
            if kind == "text":
                if not isinstance(b.get("text"), str) or not b["text"]:
                    _fail("A5", i, "empty text block")
                text_seen = True
            elif kind in ("image", "document"):
                _check_source(b.get("source"), i)
                text_seen = True
            elif kind == "tool_use":
                if role != "assistant":
                    _fail("A7", i, "tool_use in a user turn")
                if not isinstance(b.get("input"), dict) or not b.get("id") or not isinstance(b.get("name"), str):
                    _fail("A7", i, f"malformed tool_use {b!r}")
                if b["id"] in seen_ids:
                    _fail("A7", i, f"tool_use id {b['id']!r} used twice")
                seen_ids.add(b["id"])
                uses.append(b["id"])
            else:  # tool_result
                if role != "user":
                    _fail("A4", i, "tool_result in an assistant turn")
                if text_seen:
                    _fail("A4", i, "tool_result after text: results come first")
                if b.get("tool_use_id") not in pending:
                    _fail("A4", i, f"tool_result for {b.get('tool_use_id')!r}, not a tool_use of the turn before")
                _check_result_content(b.get("content"), i)
                results.append(b["tool_use_id"])
        missing = [u for u in pending if u not in results]
        if missing and not (pending_ok and last and role == "user"):  # the pending turn's results so far
            _fail("A3", i - 1, f"tool_use {missing} without tool_result in the next message")
        pending = uses
    if pending and not pending_ok:
        _fail("A3", len(messages) - 1, f"tool_use {pending} unanswered at the end")


def _check_source(source: Any, i: int) -> None:
    ok = isinstance(source, dict) and (
        (source.get("type") == "url" and isinstance(source.get("url"), str))
        or (source.get("type") == "base64" and source.get("media_type") and isinstance(source.get("data"), str))
        or (source.get("type") == "file" and source.get("file_id")))
    if not ok:
        _fail("A7", i, f"media source {source!r}")


def _check_result_content(content: Any, i: int) -> None:
    if content is None or isinstance(content, str):
        return
    if not isinstance(content, list):
        _fail("A7", i, "tool_result content must be text or blocks")
    for b in content:
        if b.get("type") == "text" and not b.get("text"):
            _fail("A5", i, "empty text block in a tool_result")
