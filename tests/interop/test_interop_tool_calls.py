"""Tool calls, content parts, name and extra across Python, Node and Go (issue 18): what one client
appends every client reads back byte for byte, an OpenAI conversation appended as it is by any
client reads back from every client as the same OpenAI history, and at any budget the three
clients' OpenAI conversions (Python ``to_openai``, Node ``toOpenAI``, Go ``ToOpenAI``) agree."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.interop.conftest import LANGS, Driver, Json
from tests.interop.test_interop import agent_ref, all_read, conversation
from tests.support import REPO

pytestmark = pytest.mark.timeout(900)

MEMORY = "customer-support-context"
OPENAI_CONVERSATION: list[Json] = json.loads(
    (REPO / "tests" / "interop" / "openai_conversation.json").read_text(encoding="utf-8"))
# Arguments and extra as a model writes them: odd spacing, escapes, non-ASCII; stored byte for byte.
ARGS_ORDER = '{ "id" : "A-48213",\n  "note": "naïve \\u00e9 🚀", "n": 1.50 }'
ARGS_ETA = '{"id":"A-48213","tz":"Europe/Paris"}'
EXTRA = '{"reasoning": {"id": "rs_1"},  "ünï": "🧠", "n": 1.50}'
MEDIA_DEFAULTS = {"url": "", "file_id": "", "data_hex": "", "mime_type": "", "size_bytes": "0", "detail": "",
                  "width": 0, "height": 0, "filename": ""}
ROLE = {"system": 1, "user": 2, "assistant": 3, "tool": 4, "developer": 5}


def hexed(s: str) -> str:
    return s.encode("utf-8").hex()


def group_batch(tag: str) -> list[Json]:
    """A developer message, a user turn with parts, an assistant turn with two parallel calls and
    extra, both results (one as parts, one named), and the final answer."""
    c1, c2 = f"call_{tag}_order", f"call_{tag}_eta"
    return [
        {"role": "developer", "content_hex": hexed("Be brief. Use the tools.")},
        {"role": "user", "content_hex": "", "name": "ana", "parts": [
            {"text_hex": hexed("Where is order A-48213? 📦")},
            {"image": {"url": "https://example.com/box.png", "detail": "high", "mime_type": "image/png",
                       "width": 640, "height": 480, "size_bytes": "12345"}},
            {"image": {"data_hex": "89504e470d0a1a0a", "mime_type": "image/png"}},
            {"file": {"file_id": "file-abc", "filename": "invoice.pdf", "mime_type": "application/pdf"}},
        ]},
        {"role": "assistant", "content_hex": "", "extra_hex": hexed(EXTRA), "tool_calls": [
            {"id": c1, "name": "get_order", "arguments_hex": hexed(ARGS_ORDER)},
            {"id": c2, "name": "get_eta", "arguments_hex": hexed(ARGS_ETA)},
        ]},
        {"role": "tool", "content_hex": hexed('{"status": "shipped", "carrier": "DHL"}'), "tool_call_id": c1,
         "name": "get_order"},
        {"role": "tool", "content_hex": "", "tool_call_id": c2, "parts": [{"text_hex": hexed("tomorrow 10–12 ⏰")}]},
        {"role": "assistant", "content_hex": hexed("It ships with DHL and arrives tomorrow.")},
    ]


def as_read(sent: Json) -> Json:
    """The new fields of a sent message as every driver reports them back (defaults filled in)."""
    parts = [p if "text_hex" in p else {k: {**MEDIA_DEFAULTS, **v} for k, v in p.items()}
             for p in sent.get("parts", [])]
    return {"role": ROLE[sent["role"]], "content_hex": sent["content_hex"], "tool_calls": sent.get("tool_calls", []),
            "tool_call_id": sent.get("tool_call_id", ""), "name": sent.get("name", ""), "parts": parts,
            "extra_hex": sent.get("extra_hex", "")}


def read_openai(d: Driver, ref: Json, **kw: Any) -> list[Json]:
    reply = d.ok({"op": "read_openai", "memory": MEMORY, "ref": ref, **kw})
    history: list[Json] = json.loads(reply["messages_json"])
    return history


def assert_openai_accepts(history: list[Json]) -> None:
    """OpenAI Chat Completions: "messages with role 'tool' must be a response to a preceding
    message with 'tool_calls'", and an assistant turn's calls are answered before the next
    non-tool message (all but the newest, pending, group)."""
    open_calls: set[str] = set()
    for i, m in enumerate(history):
        if m["role"] == "tool":
            assert m["tool_call_id"] in open_calls, f"#{i}: tool result without its call: {m}"
            open_calls.discard(m["tool_call_id"])
            continue
        assert not open_calls, f"#{i}: calls {sorted(open_calls)} unanswered before a {m['role']} message"
        open_calls = {c["id"] for c in m.get("tool_calls", [])}


@pytest.mark.parametrize("writer", LANGS)
def test_tool_call_groups_from_one_language_read_byte_exact_by_every_language(
    drivers: dict[str, Driver], writer: str
) -> None:
    ref = agent_ref("resolution-agent", conversation(f"groups-{writer}"))
    batch = group_batch(writer)
    sent = drivers[writer].ok({"op": "append", "memory": MEMORY, "ref": ref, "messages": batch})
    got = all_read(drivers, MEMORY, ref)  # the three readers agree on every field
    assert [r["seq"] for r in sent["results"]] == [m["seq"] for m in got]
    assert [{k: m[k] for k in as_read(b)} for m, b in zip(got, batch, strict=True)] == [as_read(b) for b in batch]
    assert bytes.fromhex(got[2]["tool_calls"][0]["arguments_hex"]).decode() == ARGS_ORDER
    assert bytes.fromhex(got[2]["extra_hex"]).decode() == EXTRA


@pytest.mark.parametrize("writer", LANGS)
def test_openai_conversation_from_one_language_is_the_same_openai_history_in_every_language(
    drivers: dict[str, Driver], writer: str
) -> None:
    ref = agent_ref("intake-agent", conversation(f"openai-{writer}"))
    drivers[writer].ok({"op": "append_openai", "memory": MEMORY, "ref": ref,
                        "messages_json": json.dumps(OPENAI_CONVERSATION)})
    all_read(drivers, MEMORY, ref)
    for lang, d in drivers.items():
        for view in ("raw", "context"):
            assert read_openai(d, ref, view=view) == OPENAI_CONVERSATION, (lang, view)


def test_an_anthropic_conversation_reads_as_the_same_openai_history_in_every_language(
    drivers: dict[str, Driver],
) -> None:
    """Stored by Python's from_anthropic: extended-thinking blocks and is_error ride in extra for
    to_anthropic, and no language sends them to OpenAI."""
    from tests.service.test_provider_histories import ANTHROPIC_MESSAGES, ANTHROPIC_SYSTEM

    ref = agent_ref("intake-agent", conversation("anthropic"))
    drivers["python"].ok({"op": "append_anthropic", "memory": MEMORY, "ref": ref, "system": ANTHROPIC_SYSTEM,
                          "messages_json": json.dumps(ANTHROPIC_MESSAGES)})
    all_read(drivers, MEMORY, ref)
    histories = {lang: read_openai(d, ref, view="raw") for lang, d in drivers.items()}
    assert histories["node"] == histories["python"] and histories["go"] == histories["python"]
    assert_openai_accepts(histories["python"])
    assert not any("thinking_blocks" in m or "is_error" in m for m in histories["python"])


def test_every_language_converts_a_budgeted_context_to_the_same_openai_history(drivers: dict[str, Driver]) -> None:
    ref = agent_ref("resolution-agent", conversation("openai-budget"))
    for turn, lang in enumerate(LANGS * 2):  # six groups, each written by another client
        drivers[lang].ok({"op": "append", "memory": MEMORY, "ref": ref, "messages": group_batch(f"{lang}{turn}")})
    full = read_openai(drivers["python"], ref)
    assert_openai_accepts(full)
    for budget in (0, 100, 150, 300, 600, 1200):
        histories = {lang: read_openai(d, ref, max_tokens=budget) for lang, d in drivers.items()}
        assert histories["node"] == histories["python"], budget
        assert histories["go"] == histories["python"], budget
        assert_openai_accepts(histories["python"])
