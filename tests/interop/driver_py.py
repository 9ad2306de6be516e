"""Python side of the interop protocol (the Node and Go drivers speak the same one).

One JSON command per line on stdin, one JSON reply per line on stdout (``watch`` streams one
line per event, then ``{"done": true}``). Replies are ``{"ok": {...}}`` or ``{"error": {code,
name, details, kind}}``. uint64 values travel as decimal strings, content as UTF-8 hex, so
three JSON encoders can never disagree on escaping. In-process use: ``handle(client, cmd, out)``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

from memoryd_client import Agent, MemoryClient, MemorydClientError, pb

Json = dict[str, Any]
ROLES = {"system": pb.ROLE_SYSTEM, "user": pb.ROLE_USER, "assistant": pb.ROLE_ASSISTANT, "tool": pb.ROLE_TOOL,
         "developer": pb.ROLE_DEVELOPER}
MEDIA_TEXT = ("url", "file_id", "mime_type", "detail", "filename")


def hexed(s: str) -> str:
    return s.encode("utf-8").hex()


def unhexed(h: str) -> str:
    return bytes.fromhex(h).decode("utf-8")


def media(r: pb.MediaRef) -> Json:
    return {**{k: getattr(r, k) for k in MEDIA_TEXT}, "data_hex": r.data.hex(), "size_bytes": str(r.size_bytes),
            "width": r.width, "height": r.height}


def part(p: pb.ContentPart) -> Json:
    kind = p.WhichOneof("part")
    if kind == "text":
        return {"text_hex": hexed(p.text)}
    return {str(kind): media(getattr(p, str(kind)))}


def message(m: pb.Message) -> Json:
    return {
        "seq": str(m.seq), "id": m.id, "role": int(m.role), "content_hex": hexed(m.content),
        "content_type": m.content_type, "metadata": dict(sorted(m.metadata.items())),
        "priority": m.priority if m.HasField("priority") else None, "token_count": m.token_count,
        "kind": int(m.kind), "effective_priority": m.effective_priority,
        "created_at": f"{m.created_at.seconds}.{m.created_at.nanos:09d}" if m.HasField("created_at") else None,
        "tool_calls": [{"id": t.id, "name": t.name, "arguments_hex": hexed(t.arguments)} for t in m.tool_calls],
        "tool_call_id": m.tool_call_id, "name": m.name, "parts": [part(p) for p in m.parts],
        "extra_hex": hexed(m.extra),
    }


def target(ref: Json) -> dict[str, Any]:
    if "agent" in ref:
        return {"agent": Agent(ref["agent"]["id"], ref["agent"].get("context", {}))}
    return {"key": ref["key"]}


def _media(j: Json) -> pb.MediaRef:
    return pb.MediaRef(**{k: j.get(k, "") for k in MEDIA_TEXT}, data=bytes.fromhex(j.get("data_hex", "")),
                       size_bytes=int(j.get("size_bytes", "0")), width=j.get("width", 0), height=j.get("height", 0))


def _part(j: Json) -> pb.ContentPart:
    if "text_hex" in j:
        return pb.ContentPart(text=unhexed(j["text_hex"]))
    if "image" in j:
        return pb.ContentPart(image=_media(j["image"]))
    return pb.ContentPart(file=_media(j["file"]))


def _append_message(m: Json) -> dict[str, Any] | pb.Message:
    if any(k in m for k in ("tool_calls", "tool_call_id", "name", "parts", "extra_hex")) or m["role"] == "developer":
        # The new fields go in as a pb.Message, which the client takes as it is.
        out = pb.Message(role=ROLES[m["role"]], content=unhexed(m["content_hex"]),
                         content_type=m.get("content_type", ""), metadata=m.get("metadata", {}),
                         tool_calls=[pb.ToolCall(id=t["id"], name=t["name"], arguments=unhexed(t["arguments_hex"]))
                                     for t in m.get("tool_calls", [])],
                         tool_call_id=m.get("tool_call_id", ""), name=m.get("name", ""),
                         parts=[_part(p) for p in m.get("parts", [])], extra=unhexed(m.get("extra_hex", "")))
        if m.get("priority") is not None:
            out.priority = m["priority"]
        return out
    plain = {"role": m["role"], "content": unhexed(m["content_hex"])}
    plain.update({k: m[k] for k in ("content_type", "priority", "metadata") if k in m})
    return plain


def handle(c: MemoryClient, cmd: Json, out: Callable[[Json], None]) -> None:
    op, memory = cmd["op"], cmd.get("memory", "")
    try:
        if op == "append":
            r = c.append(memory, [_append_message(m) for m in cmd["messages"]], **target(cmd["ref"]),
                         idempotency_key=cmd.get("idempotency_key") or None)
            out({"ok": {"results": [{"seq": str(x.seq), "id": x.id, "token_count": x.token_count,
                                     "persisted": x.persisted, "effective_priority": x.effective_priority}
                                    for x in r.results], "replayed": r.replayed}})
        elif op == "read":
            ms = c.read_all(memory, **target(cmd["ref"]), view=cmd.get("view", "raw"),
                            after_seq=cmd.get("after_seq", 0), limit=cmd.get("limit", 0),
                            max_tokens=cmd.get("max_tokens", 0), chunk_size=cmd.get("chunk_size", 0))
            out({"ok": {"messages": [message(m) for m in ms]}})
        elif op == "append_openai":
            r = c.append(memory, json.loads(cmd["messages_json"]), **target(cmd["ref"]))
            out({"ok": {"results": [{"seq": str(x.seq), "id": x.id, "token_count": x.token_count}
                                    for x in r.results], "replayed": r.replayed}})
        elif op == "append_anthropic":  # Python only: from_anthropic has no Node/Go counterpart
            from memoryd_client import from_anthropic

            r = c.append(memory, from_anthropic(json.loads(cmd["messages_json"]), system=cmd.get("system")),
                         **target(cmd["ref"]))
            out({"ok": {"results": [{"seq": str(x.seq)} for x in r.results]}})
        elif op == "read_openai":
            from memoryd_client import to_openai  # type: ignore[attr-defined,unused-ignore]  # issue 18 (h-groups)

            ms = c.read_all(memory, **target(cmd["ref"]), view=cmd.get("view", "context"),
                            max_tokens=cmd.get("max_tokens", 0))
            out({"ok": {"messages_json": json.dumps(to_openai(ms), ensure_ascii=False)}})
        elif op == "stats":
            s = c.stats(memory, **target(cmd["ref"]))
            out({"ok": {"instance_id": s.instance_id, "message_count": str(s.message_count),
                        "token_count": str(s.token_count), "last_seq": str(s.last_seq)}})
        elif op == "clear":
            out({"ok": {"removed": str(c.clear(memory, **target(cmd["ref"])))}})
        elif op == "resolve":
            r = c.resolve_agent(Agent(cmd["agent"]["id"], cmd["agent"].get("context", {})))
            out({"ok": {"level": int(r.level), "references": [
                {"memory_id": x.memory_id, "mode": int(x.mode), "key_template": x.key_template, "key": x.key,
                 "instance_id": x.instance_id} for x in r.references]}})
        elif op == "watch":
            seen = 0
            for ev in c.watch(memory, **target(cmd["ref"]), after_seq=cmd.get("after_seq", 0)):
                kind = ev.WhichOneof("event")
                if kind == "appended":
                    out({"event": "appended", "messages": [message(m) for m in ev.appended.messages]})
                    seen += len(ev.appended.messages)
                elif kind == "flushed":
                    out({"event": "flushed", "removed_seqs": [str(s) for s in ev.flushed.removed_seqs]})
                else:
                    out({"event": "cleared"})
                if seen >= cmd["count"]:
                    break
            out({"done": True})
        else:
            raise ValueError(f"unknown op {op!r}")
    except MemorydClientError as err:
        out({"error": {"code": err.code.value[0], "name": err.code.name, "details": err.details,
                       "kind": type(err).__name__}})


def main() -> int:
    def write(j: Json) -> None:
        sys.stdout.write(json.dumps(j, ensure_ascii=False) + "\n")
        sys.stdout.flush()

    with MemoryClient(sys.argv[1]) as c:
        for line in sys.stdin:
            if line.strip():
                handle(c, json.loads(line), write)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
