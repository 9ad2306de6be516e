"""Issue 18 through the real gRPC API, on the embedded store and on Redis: messages with
tool calls, tool results, names, content parts and ``extra`` are stored byte for byte,
counted as the tokens they hold, and refused (naming the field, storing nothing) when they
break a rule of docs/api.md, "Messages".
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from typing import Any

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from memoryd_client import AsyncMemoryClient, MemorydClientError, pb
from openai.types.chat import ChatCompletionMessage

from memoryd import tokens
from memoryd.config.model import MemoryResource, PrivacyPolicy, Project, TokenCounting
from memoryd.models import ContentPart, ToolCall
from memoryd.validation import MAX_INLINE_DATA_BYTES
from tests.message_strategies import json_object_text, parts, short_id, text, tool_call
from tests.support import RunningServer, running_server

MEM = "default"


def key() -> str:
    return f"k-{uuid.uuid4().hex[:12]}"


async def raw(c: AsyncMemoryClient, k: str) -> list[pb.Message]:
    return await c.read_all(MEM, key=k, view="raw")


def as_openai(m: pb.Message) -> dict[str, Any]:
    """The test's own reading of a stored message as an OpenAI dict (not memoryd_client's
    converters: this checks the fields, those are tested on their own)."""
    role = {pb.ROLE_SYSTEM: "system", pb.ROLE_USER: "user", pb.ROLE_ASSISTANT: "assistant",
            pb.ROLE_TOOL: "tool", pb.ROLE_DEVELOPER: "developer"}[m.role]
    out: dict[str, Any] = {"role": role}
    if m.parts:
        out["content"] = [_part(p) for p in m.parts]
    elif m.content or not m.tool_calls:
        out["content"] = m.content
    if m.name:
        out["name"] = m.name
    if m.tool_call_id:
        out["tool_call_id"] = m.tool_call_id
    if m.tool_calls:
        out["tool_calls"] = [{"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                             for c in m.tool_calls]
    if m.extra:
        out |= json.loads(m.extra)
    return out


def _part(p: pb.ContentPart) -> dict[str, Any]:
    kind = p.WhichOneof("part")
    if kind == "text":
        return {"type": "text", "text": p.text}
    if kind == "image":
        image: dict[str, Any] = {"url": p.image.url}
        if p.image.detail:
            image["detail"] = p.image.detail
        return {"type": "image_url", "image_url": image}
    f: dict[str, Any] = {"file_id": p.file.file_id}
    if p.file.filename:
        f["filename"] = p.file.filename
    return {"type": "file", "file": f}


def no_nones(d: Any) -> Any:
    if isinstance(d, dict):
        return {k: no_nones(v) for k, v in d.items() if v is not None}
    if isinstance(d, list):
        return [no_nones(v) for v in d]
    return d


async def test_openai_sdk_messages_come_back_with_every_field(server: RunningServer) -> None:
    calling = ChatCompletionMessage.model_validate({
        "role": "assistant", "content": None, "refusal": None, "annotations": [],
        "tool_calls": [
            {"id": "call_A1", "type": "function", "function": {"name": "get_order", "arguments": '{"id": "A-48213"}'}},
            {"id": "call_B2", "type": "function", "function": {"name": "get_weather",
                                                                "arguments": '{"city":"Zürich", "unit" : "°C"}'}},
        ],
    })
    answer = ChatCompletionMessage.model_validate({
        "role": "assistant", "content": "Shipped; 12 °C in Zürich.", "refusal": None,
        "annotations": [{"type": "url_citation", "url_citation": {"url": "https://x.test", "title": "t",
                                                                    "start_index": 0, "end_index": 3}}],
    })
    conversation: list[Any] = [
        {"role": "developer", "content": "Answer briefly."},
        {"role": "system", "content": "You are a support agent.", "name": "policy"},
        {"role": "user", "name": "ana", "content": [
            {"type": "text", "text": "Where is order A-48213? See the photo:"},
            {"type": "image_url", "image_url": {"url": "https://img.test/p.png", "detail": "low"}},
            {"type": "file", "file": {"file_id": "file-abc", "filename": "invoice.pdf"}},
        ]},
        calling.model_dump(),  # every key, None values included, as the SDK produces it
        {"role": "tool", "tool_call_id": "call_A1", "content": '{"status": "shipped"}'},
        {"role": "tool", "tool_call_id": "call_B2", "content": [{"type": "text", "text": "12 °C"}]},
        answer,  # the SDK object itself
    ]
    k = key()
    async with server.client() as c:
        await c.append(MEM, conversation, key=k)
        got = [as_openai(m) for m in await raw(c, k)]
    expected = [no_nones(m.model_dump() if isinstance(m, ChatCompletionMessage) else m) for m in conversation]
    assert got == expected
    assert got[3]["tool_calls"][1]["function"]["arguments"] == '{"city":"Zürich", "unit" : "°C"}'  # byte for byte


async def test_the_developer_role_is_pinned_like_system(server: RunningServer) -> None:
    async with server.client() as c:
        await c.append(MEM, [{"role": "developer", "content": "rules"}, {"role": "user", "content": "hi"}], key=key())
        k = key()
        await c.append(MEM, [{"role": "developer", "content": "rules"}], key=k)
        [m] = await raw(c, k)
    assert m.role == pb.ROLE_DEVELOPER and m.effective_priority == 0


async def test_a_2kb_arguments_string_is_counted_as_the_tokens_it_holds(server: RunningServer) -> None:
    args = json.dumps({"query": " ".join(f"order-{i} status shipped to Zürich" for i in range(60))})[:2048]
    assert len(args) == 2048
    k = key()
    async with server.client() as c:
        await c.append(MEM, [
            {"role": "assistant", "content": "checking",
             "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "search", "arguments": args}}]},
            {"role": "assistant", "content": "checking"},
        ], key=k)
        with_call, without = await raw(c, k)
    enc = tokens.get_encoding(tokens.DEFAULT_ENCODING)  # the default resource's encoding (no model)
    held = len(enc.encode_ordinary(args))
    assert held > 400  # 2 KB of text, not "4 tokens of metadata"
    assert with_call.token_count - without.token_count == (
        held + len(enc.encode_ordinary("search")) + tokens.TOOL_CALL_OVERHEAD)


def _calls(*ids: str) -> dict[str, Any]:
    return {"role": "assistant", "content": None,
            "tool_calls": [{"id": i, "type": "function", "function": {"name": "f", "arguments": "{}"}} for i in ids]}


INVALID = grpc.StatusCode.INVALID_ARGUMENT
EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED
CASES: list[tuple[str, list[Any], grpc.StatusCode, str]] = [
    ("tool without tool_call_id", [{"role": "user", "content": "q"}, pb.Message(role=pb.ROLE_TOOL, content="r")],
     INVALID, "messages[1].tool_call_id"),
    ("result for an unknown call", [_calls("c1"), {"role": "tool", "tool_call_id": "c1", "content": "ok"},
                                    {"role": "tool", "tool_call_id": "zz", "content": "?"}],
     INVALID, "messages[2].tool_call_id"),
    ("result before its call", [{"role": "tool", "tool_call_id": "c1", "content": "?"}, _calls("c1")],
     INVALID, "messages[0].tool_call_id"),
    ("tool_calls on a user message", [pb.Message(role=pb.ROLE_USER, content="x",
                                                  tool_calls=[pb.ToolCall(id="c", name="f")])],
     INVALID, "messages[0].tool_calls"),
    ("empty call id", [_calls("")], INVALID, "messages[0].tool_calls[0].id"),
    ("empty function name", [pb.Message(role=pb.ROLE_ASSISTANT, tool_calls=[pb.ToolCall(id="c")])],
     INVALID, "messages[0].tool_calls[0].name"),
    ("duplicate call id", [_calls("c1"), _calls("c2", "c1")], INVALID, "messages[1].tool_calls[1].id"),
    ("tool_call_id on a user message", [{"role": "user", "content": "x", "tool_call_id": "c"}],
     INVALID, "messages[0].tool_call_id"),
    ("parts and content", [pb.Message(role=pb.ROLE_USER, content="x", parts=[pb.ContentPart(text="y")])],
     INVALID, "messages[0].parts"),
    ("a part of no kind", [pb.Message(role=pb.ROLE_USER, parts=[pb.ContentPart(text="y"), pb.ContentPart()])],
     INVALID, "messages[0].parts[1]"),
    ("an image of nothing", [pb.Message(role=pb.ROLE_USER, parts=[pb.ContentPart(image=pb.MediaRef(detail="low"))])],
     INVALID, "messages[0].parts[0].image"),
    ("a bad detail", [pb.Message(role=pb.ROLE_USER, parts=[pb.ContentPart(image=pb.MediaRef(url="u", detail="max"))])],
     INVALID, "messages[0].parts[0].image.detail"),
    ("inline data over the limit",
     [pb.Message(role=pb.ROLE_USER, parts=[pb.ContentPart(file=pb.MediaRef(data=b"x" * (MAX_INLINE_DATA_BYTES + 1)))])],
     EXHAUSTED, "messages[0].parts[0].file.data"),
    ("a data: URL over the limit",
     [{"role": "user", "content": [{"type": "image_url",
                                    "image_url": {"url": "data:image/png;base64," + "A" * MAX_INLINE_DATA_BYTES}}]}],
     EXHAUSTED, "messages[0].parts[0].image.url"),
    ("extra that is an array", [pb.Message(role=pb.ROLE_USER, content="x", extra="[1]")], INVALID,
     "messages[0].extra"),
    ("extra that is not JSON", [pb.Message(role=pb.ROLE_USER, content="x", extra="{'a': 1}")], INVALID,
     "messages[0].extra"),
    ("extra with NaN", [pb.Message(role=pb.ROLE_USER, content="x", extra='{"a": NaN}')], INVALID,
     "messages[0].extra"),
    ("arguments over the message size limit", [_calls("c1") | {"tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "x" * 1_048_577}}]}],
     EXHAUSTED, "messages[0]"),
]


@pytest.mark.parametrize(("batch", "code", "field"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
async def test_each_rule_refuses_with_its_status_and_field_and_stores_nothing(
    server: RunningServer, batch: list[Any], code: grpc.StatusCode, field: str,
) -> None:
    k = key()
    async with server.client() as c:
        await c.append(MEM, [{"role": "user", "content": "before"}], key=k)
        with pytest.raises(MemorydClientError) as err:
            await c.append(MEM, [{"role": "user", "content": "in the batch"}, *batch], key=k)
        assert [m.content for m in await raw(c, k)] == ["before"]
        assert (await c.stats(MEM, key=k)).message_count == 1
    assert err.value.code == code
    shifted = re.sub(r"^messages\[(\d+)\]", lambda m: f"messages[{int(m[1]) + 1}]", field)  # one message before
    assert re.match(re.escape(shifted) + "[: ]", err.value.details), err.value.details


async def test_the_refused_field_is_named_by_its_index_in_the_request(server: RunningServer) -> None:
    """A message that is not persisted still counts in the request's numbering (the store sees
    a shorter batch)."""
    k = key()
    async with server.client() as c:
        with pytest.raises(MemorydClientError) as err:
            await c.append(MEM, [{"role": "user", "content": "secret", "persist": False},
                                 {"role": "tool", "tool_call_id": "nowhere", "content": "x"}], key=k)
        assert await raw(c, k) == []
    assert err.value.code == INVALID and err.value.details.startswith("messages[1].tool_call_id:")


async def test_racing_a_result_and_its_call_never_stores_an_orphan(server: RunningServer) -> None:
    async with server.client() as c:
        for _ in range(5):
            k = key()
            out = await asyncio.gather(
                c.append(MEM, [{"role": "tool", "tool_call_id": "c1", "content": "r"}], key=k),
                c.append(MEM, [_calls("c1")], key=k), c.append(MEM, [_calls("c1")], key=k),
                return_exceptions=True)
            stored = await raw(c, k)
            assert sum(1 for m in stored if m.tool_calls) == 1
            assert [m.role for m in stored][-1:] == ([pb.ROLE_TOOL] if not isinstance(out[0], Exception)
                                                     else [pb.ROLE_ASSISTANT])
            assert all(isinstance(o, MemorydClientError) and o.code == INVALID for o in out if isinstance(o, Exception))


def to_pb(role: str, content: str, calls: tuple[ToolCall, ...], name: str, parts_: tuple[ContentPart, ...],
          extra: str) -> pb.Message:
    m = pb.Message(role={"user": pb.ROLE_USER, "assistant": pb.ROLE_ASSISTANT, "system": pb.ROLE_SYSTEM,
                         "developer": pb.ROLE_DEVELOPER}[role], content="" if parts_ else content, name=name,
                   extra=extra)
    if role == "assistant":
        m.tool_calls.extend(pb.ToolCall(id=c.id, name=c.name, arguments=c.arguments) for c in calls)
    for p in parts_:
        if p.kind == "text":
            m.parts.add(text=p.text)
            continue
        media = pb.MediaRef(url=p.url, file_id=p.file_id, data=p.data, mime_type=p.mime_type, size_bytes=p.size_bytes,
                            detail=p.detail, width=p.width, height=p.height, filename=p.filename)
        m.parts.add(image=media) if p.kind == "image" else m.parts.add(file=media)
    return m


wire_message = st.builds(to_pb, st.sampled_from(["user", "assistant", "system", "developer"]), text,
                         st.lists(tool_call, max_size=3, unique_by=lambda c: c.id).map(tuple),
                         st.just("") | short_id, st.just(()) | parts, st.just("") | json_object_text())
CALLER_FIELDS = ("role", "content", "tool_calls", "tool_call_id", "name", "parts", "extra", "metadata")


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=st.lists(wire_message, min_size=1, max_size=3))
async def test_every_field_round_trips_byte_exact_on_raw(server: RunningServer, batch: list[pb.Message]) -> None:
    ids = [c.id for m in batch for c in m.tool_calls]
    if len(ids) != len(set(ids)):
        for i, m in enumerate(batch):
            for j, call in enumerate(m.tool_calls):
                call.id = f"{i}-{j}"
    if ids:
        batch.append(pb.Message(role=pb.ROLE_TOOL, tool_call_id=batch_first_call(batch), content="résultat ✓"))
    k = key()
    async with server.client() as c:
        await c.append(MEM, batch, key=k)
        got = await raw(c, k)
    strip = [pb.Message(**{f: getattr(m, f) for f in CALLER_FIELDS if f != "metadata"}) for m in got]
    assert [s.SerializeToString(deterministic=True) for s in strip] == [
        pb.Message(**{f: getattr(m, f) for f in CALLER_FIELDS if f != "metadata"}).SerializeToString(deterministic=True)
        for m in batch]


def batch_first_call(batch: list[pb.Message]) -> str:
    return next(c.id for m in batch for c in m.tool_calls)


async def test_redaction_covers_arguments_text_parts_and_extra_values() -> None:
    res = MemoryResource(id=MEM, max_tokens=100_000,
                         privacy_policy=PrivacyPolicy(redact_patterns=(r"\d{3}-\d{2}-\d{4}",)))
    async with running_server(Project(id="p", resources={MEM: res}, agents={})) as srv, srv.client() as c:
        k = key()
        resp = await c.append(MEM, [
            {"role": "user", "content": [{"type": "text", "text": "my ssn is 123-45-6789"}],
             "audio": {"id": "123-45-6789"}},
            {**_calls(), "tool_calls": [{"id": "c1", "type": "function",
                                         "function": {"name": "lookup", "arguments": '{"ssn": "123\\u002d45-6789"}'}}]},
        ], key=k)
        got = await raw(c, k)
    assert [r.redactions for r in resp.results] == [2, 1]
    assert got[0].parts[0].text == "my ssn is [REDACTED]"
    assert json.loads(got[0].extra) == {"audio": {"id": "[REDACTED]"}}
    assert json.loads(got[1].tool_calls[0].arguments) == {"ssn": "[REDACTED]"}


async def test_extra_is_counted_only_when_the_resource_sends_it_to_the_model() -> None:
    extra = json.dumps({"refusal": "I can not help with that request, sorry."})
    counted = []
    for sent in (False, True):
        res = MemoryResource(id=MEM, max_tokens=100_000, token_counting=TokenCounting(count_extra=sent))
        async with running_server(Project(id="p", resources={MEM: res}, agents={})) as srv, srv.client() as c:
            resp = await c.append(MEM, [pb.Message(role=pb.ROLE_ASSISTANT, content="no", extra=extra)], key=key())
            counted.append(resp.results[0].token_count)
    enc = tokens.get_encoding(tokens.DEFAULT_ENCODING)
    assert counted[1] - counted[0] == len(enc.encode_ordinary(extra))
