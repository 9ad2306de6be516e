"""Hostile input gets a documented status, never UNKNOWN or INTERNAL; a refused call stores
nothing; the daemon keeps serving. Raw bodies go through a real server on a plain channel
(``request_serializer=None``), so undecodable bytes reach the daemon as sent."""

from __future__ import annotations

import contextlib
import math
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from memoryd_client.v1 import memory_pb2 as pb

from memoryd.config.model import Agent, MemoryReference, MemoryResource, Project
from memoryd.errors import MemorydError
from memoryd.status import details
from memoryd.store.url import open_store
from tests.support import RunningServer, running_server

SERVICE = pb.DESCRIPTOR.services_by_name["MemoryService"]
MEM, AGENT = "default", "agent"
TEMPLATE = "conv-{{ .workflow.input.conversationId }}"
C = grpc.StatusCode
REF_CODES = {C.INVALID_ARGUMENT, C.NOT_FOUND, C.PERMISSION_DENIED}
# The codes each RPC may answer a hostile call with while the store is up (docs/api.md,
# "Status codes per RPC"); OK is always allowed. Watch never ends by itself: the test's
# own deadline ends it.
ALLOWED: dict[str, set[grpc.StatusCode]] = {
    "Append": REF_CODES | {C.RESOURCE_EXHAUSTED, C.FAILED_PRECONDITION, C.ALREADY_EXISTS},
    "Read": REF_CODES | {C.FAILED_PRECONDITION},
    "GetStats": REF_CODES,
    "GetHealth": REF_CODES,
    "Flush": REF_CODES | {C.ABORTED},
    "Clear": REF_CODES,
    "DeleteMessages": REF_CODES | {C.ABORTED},  # ABORTED: if_last_seq no longer holds
    "ResolveAgent": {C.INVALID_ARGUMENT, C.NOT_FOUND},
    "ListResources": {C.INVALID_ARGUMENT},
    "EndWorkflow": {C.INVALID_ARGUMENT},
    "Watch": REF_CODES | {C.DEADLINE_EXCEEDED},
    "PlanFlush": REF_CODES | {C.FAILED_PRECONDITION},
    "ApplyFlush": REF_CODES | {C.FAILED_PRECONDITION, C.ABORTED, C.RESOURCE_EXHAUSTED},
}
WATCH_DEADLINE_S = 0.3  # ends a watch that was accepted (no status is asserted on time)
CALL_DEADLINE_S = 30.0
TOKEN = "s3cret-token-0123456789abcdef"
MAX_DETAILS = 512  # a status message quotes at most ~100 characters of client input


def project(project_id: str) -> Project:
    """One never-flushing memory reachable by direct keys and through one agent."""
    res = MemoryResource(id=MEM, max_tokens=100_000_000)
    agent = Agent(AGENT, 1, (MemoryReference(MEM, "read-write", TEMPLATE),))
    return Project(id=project_id, resources={MEM: res}, agents={AGENT: agent})


@dataclass
class Daemon:
    server: RunningServer
    channel: grpc.aio.Channel

    async def call(self, method: str, body: bytes, timeout: float | None = None) -> tuple[grpc.StatusCode, str]:
        """Send ``body`` as is; the status and its message (every streamed item is drained)."""
        path = f"/{SERVICE.full_name}/{method}"
        streaming = SERVICE.methods_by_name[method].server_streaming
        if timeout is None:
            timeout = WATCH_DEADLINE_S if method == "Watch" else CALL_DEADLINE_S
        try:
            if streaming:
                async for _ in self.channel.unary_stream(path)(body, timeout=timeout):
                    pass
            else:
                await self.channel.unary_unary(path)(body, timeout=timeout)
        except grpc.aio.AioRpcError as err:
            return err.code(), err.details() or ""
        return C.OK, ""


async def _daemon(request: pytest.FixtureRequest, backend: str) -> AsyncIterator[Daemon]:
    store = open_store(request.getfixturevalue("redis_standalone").url) if backend == "redis" else None
    async with running_server(project(f"h{uuid.uuid4().hex[:12]}"), store=store) as srv, \
            grpc.aio.insecure_channel(srv.address) as channel:
        yield Daemon(srv, channel)


@pytest.fixture(params=["embedded", "redis"])
async def daemon(request: pytest.FixtureRequest) -> AsyncIterator[Daemon]:
    async for d in _daemon(request, request.param):
        yield d


@pytest.fixture
async def embedded(request: pytest.FixtureRequest) -> AsyncIterator[Daemon]:
    """For refusals decided before any store is touched."""
    async for d in _daemon(request, "embedded"):
        yield d


# -- wire helpers -------------------------------------------------------------------------


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        if not n:
            out.append(low)
            return bytes(out)
        out.append(low | 0x80)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field, encoded by hand (protobuf refuses to build what is tested)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def deep_struct(depth: int) -> bytes:
    """A Struct ``{"a": {"a": ... {"x": "y"}}}`` nested ``depth`` times."""
    body = _field(1, _field(1, b"x") + _field(2, _field(3, b"y")))
    for _ in range(depth):
        body = _field(1, _field(1, b"a") + _field(2, _field(5, body)))  # fields{a: Value{struct_value}}
    return body


def direct(key: str, memory_id: str = MEM) -> pb.MemoryRef:
    return pb.MemoryRef(memory_id=memory_id, key=key)


def via_agent(context: dict[str, Any], memory_id: str = MEM, agent_id: str = AGENT) -> pb.MemoryRef:
    ctx = struct_pb2.Struct()
    ctx.update(context)
    return pb.MemoryRef(memory_id=memory_id, agent=pb.AgentScope(agent_id=agent_id, context=ctx))


def conv(value: Any, **extra: Any) -> dict[str, Any]:
    return {"workflow": {"id": "wf", "input": {"conversationId": value}}, **extra}


def append(ref: pb.MemoryRef, *contents: str) -> bytes:
    msgs = [pb.Message(role=pb.ROLE_USER, content=c) for c in contents]
    return pb.AppendRequest(ref=ref, messages=msgs).SerializeToString()


async def stats(d: Daemon, ref: pb.MemoryRef) -> tuple[Any, ...] | grpc.StatusCode:
    """What GetStats reports of ``ref`` (its status when refused), server-set times aside."""
    try:
        resp = await d.channel.unary_unary(
            f"/{SERVICE.full_name}/GetStats", request_serializer=pb.GetStatsRequest.SerializeToString,
            response_deserializer=pb.GetStatsResponse.FromString,
        )(pb.GetStatsRequest(ref=ref), timeout=CALL_DEADLINE_S)
    except grpc.aio.AioRpcError as err:
        return err.code()
    s = resp.stats
    return (s.instance_id, s.message_count, s.token_count, s.pinned_tokens, s.summary_tokens, s.last_seq,
            s.flush_count)


async def raw_contents(d: Daemon, ref: pb.MemoryRef) -> list[str]:
    out: list[str] = []
    call = d.channel.unary_stream(
        f"/{SERVICE.full_name}/Read", request_serializer=pb.ReadRequest.SerializeToString,
        response_deserializer=pb.ReadResponse.FromString,
    )(pb.ReadRequest(ref=ref, view=pb.READ_VIEW_RAW), timeout=CALL_DEADLINE_S)
    async for item in call:
        out.extend(m.content for m in item.messages)
    return out


# -- one regression test per defect of issue 15, item 5 -----------------------------------


@pytest.mark.parametrize("method", [m.name for m in SERVICE.methods])
async def test_undecodable_body_is_invalid_argument(embedded: Daemon, method: str) -> None:
    code, details = await embedded.call(method, b"\xff\xff\xff\xff", timeout=CALL_DEADLINE_S)
    assert code == C.INVALID_ARGUMENT, details
    assert "could not be decoded" in details


async def test_undecodable_body_without_the_token_is_unauthenticated(tmp_path: Any) -> None:
    """The token is checked first: a caller without it learns nothing about its body."""
    token = tmp_path / "token"
    token.write_text(f"{TOKEN}\n")
    async with running_server(project("auth"), auth_token_file=str(token)) as srv, \
            grpc.aio.insecure_channel(srv.address) as channel:
        d = Daemon(srv, channel)
        assert (await d.call("GetStats", b"\xff\xff"))[0] == C.UNAUTHENTICATED
        path = f"/{SERVICE.full_name}/GetStats"
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await channel.unary_unary(path)(b"\xff\xff", metadata=(("authorization", f"Bearer {TOKEN}"),))
        assert err.value.code() == C.INVALID_ARGUMENT


async def test_invalid_utf8_in_a_string_field_is_invalid_argument(embedded: Daemon) -> None:
    body = _field(1, _field(1, b"de\xc3\x28fault") + _field(2, b"k"))  # ref{memory_id: <bad UTF-8>, key: "k"}
    for method in ("Append", "GetStats", "Clear"):
        code, details = await embedded.call(method, body)
        assert code == C.INVALID_ARGUMENT, (method, details)
        assert "UTF-8" in details


async def test_deeply_nested_context_is_invalid_argument(embedded: Daemon) -> None:
    resolve = _field(1, AGENT.encode()) + _field(2, deep_struct(50))
    code, details = await embedded.call("ResolveAgent", resolve)
    assert code == C.INVALID_ARGUMENT, details
    scope = _field(1, AGENT.encode()) + _field(2, deep_struct(50))
    code, details = await embedded.call("GetStats", _field(1, _field(1, MEM.encode()) + _field(3, scope)))
    assert code == C.INVALID_ARGUMENT, details


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
async def test_non_finite_number_in_a_used_template_variable_is_invalid_argument(
    embedded: Daemon, bad: float
) -> None:
    code, details = await embedded.call("Append", append(via_agent(conv(bad)), "hi"))
    assert code == C.INVALID_ARGUMENT, details
    assert details.startswith("ref.agent.context.workflow.input.conversationId:"), details
    ctx = struct_pb2.Struct()
    ctx.update(conv(bad))
    code, details = await embedded.call(
        "ResolveAgent", pb.ResolveAgentRequest(agent_id=AGENT, context=ctx).SerializeToString())
    assert code == C.INVALID_ARGUMENT, details
    assert details.startswith("context.workflow.input.conversationId:"), details


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
async def test_non_finite_number_nowhere_used_is_ignored(embedded: Daemon, bad: float) -> None:
    ref = via_agent(conv("c-1", user={"score": bad}, extra=[1.0, {"deep": bad}]))
    code, details = await embedded.call("Append", append(ref, "hi"))
    assert code == C.OK, details
    assert await raw_contents(embedded, ref) == ["hi"]
    assert await raw_contents(embedded, via_agent(conv("c-1"))) == ["hi"]  # the same instance


async def _read_page(d: Daemon, ref: pb.MemoryRef, view: int, after: int) -> list[pb.ReadResponse]:
    call = d.channel.unary_stream(
        f"/{SERVICE.full_name}/Read", request_serializer=pb.ReadRequest.SerializeToString,
        response_deserializer=pb.ReadResponse.FromString,
    )(pb.ReadRequest(ref=ref, view=view, after_seq=after), timeout=CALL_DEADLINE_S)
    return [item async for item in call]


@pytest.mark.parametrize("backend", ["embedded", "redis"])
async def test_read_after_the_largest_seq_is_an_empty_page(request: pytest.FixtureRequest, backend: str) -> None:
    """Seqs are at most 2^63-1, the wire allows after_seq up to 2^64-1. On Redis the page
    is read by a second daemon: its cache is cold, so the read goes to the stream."""
    pid = f"h{uuid.uuid4().hex[:12]}"
    url = request.getfixturevalue("redis_standalone").url if backend == "redis" else None
    store = open_store(url) if url else None
    async with running_server(project(pid), store=store) as writer:
        async with grpc.aio.insecure_channel(writer.address) as channel:
            assert (await Daemon(writer, channel).call("Append", append(direct("written"), "a", "b")))[0] == C.OK
        async with running_server(project(pid), store=open_store(url)) if url else contextlib.nullcontext(
            writer) as reader, grpc.aio.insecure_channel(reader.address) as channel:
            d = Daemon(reader, channel)
            for key, last in (("written", 2), ("never-written", 0)):
                for view in (pb.READ_VIEW_RAW, pb.READ_VIEW_CONTEXT):
                    for after in (2**63 - 1, 2**63, 2**64 - 1):
                        items = await _read_page(d, direct(key), view, after)
                        assert [m for r in items for m in r.messages] == [], (key, view, after)
                        assert items[0].info.last_seq == last


async def test_huge_ids_get_their_own_status_with_a_short_message(embedded: Daemon) -> None:
    huge = "x" * 20_000
    cases = [
        ("GetStats", pb.GetStatsRequest(ref=direct("k", memory_id=huge)), C.NOT_FOUND),
        ("GetStats", pb.GetStatsRequest(ref=via_agent(conv("c"), memory_id=huge)), C.NOT_FOUND),
        ("GetStats", pb.GetStatsRequest(ref=via_agent(conv("c"), agent_id=huge)), C.NOT_FOUND),
        ("ResolveAgent", pb.ResolveAgentRequest(agent_id=huge), C.NOT_FOUND),
        ("Append", pb.AppendRequest(ref=direct("k"), messages=[pb.Message(role=pb.ROLE_USER)],
                                    idempotency_key=huge), C.INVALID_ARGUMENT),
    ]
    for method, req, want in cases:
        code, details = await embedded.call(method, req.SerializeToString())
        assert code == want, (method, details[:200])
        assert len(details) < 300 and "x" * 101 not in details, details[:300]


def test_a_long_error_message_is_cut_to_fit_a_trailer() -> None:
    """Client input is quoted through errors.echo; any other text (a store's) is capped."""
    msg = details(MemorydError("redis error: " + "z" * 20_000))
    assert len(msg) <= MAX_DETAILS and msg.startswith("redis error: zzz") and msg.endswith("...")
    assert details(MemorydError("short")) == "short"


# -- the fuzz test ------------------------------------------------------------------------

HUGE = "h" * 20_000
hostile_texts = st.sampled_from(["", " ", "\x00", "\r\n", "\x1b[2J", "a:b{c}*?[]", "../..", "é" * 300,
                                 "\u202e\ufeff", "🎉" * 10, HUGE])
short_texts = st.text(max_size=24)
texts = st.one_of(short_texts, hostile_texts)
keys = st.one_of(st.text(min_size=1, max_size=24), st.sampled_from(["\x00", "a:b{c}*?[]", "../..", "é" * 300, "k1"]))
uint64s = st.one_of(st.sampled_from([0, 1, 2, 2**31, 2**32 - 1, 2**63 - 1, 2**63, 2**64 - 1]),
                    st.integers(0, 2**64 - 1))
uint32s = st.one_of(st.sampled_from([0, 1, 10_000, 10_001, 2**31, 2**32 - 1]), st.integers(0, 2**32 - 1))
small_uint32s = st.one_of(st.integers(0, 20), uint32s)
after_seqs = st.one_of(st.sampled_from([2**63, 2**64 - 1]), uint64s)  # past the largest seq, often
int32s = st.one_of(st.sampled_from([-(2**31), -1, 0, 1, 9, 2**31 - 1]), st.integers(-(2**31), 2**31 - 1))
json_values = st.recursive(
    st.none() | st.booleans() | st.floats() | texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(short_texts, inner, max_size=3),
    max_leaves=6,
)
extras = st.dictionaries(short_texts, json_values, max_size=2)


def _struct(value: dict[str, Any]) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(value)
    return out


def _with_ref(cls: Any, ref: pb.MemoryRef | None, **fields: Any) -> Any:
    return cls(**fields) if ref is None else cls(ref=ref, **fields)


def _requests(plausible: bool) -> dict[str, st.SearchStrategy[Any]]:
    """A strategy per RPC. ``plausible``: hostile values only where a valid call can carry
    them (content, keys, unused context, extreme numbers), so that calls reach the store;
    otherwise anything the message can hold."""
    if plausible:
        memory_ids, agent_ids = st.just(MEM), st.just(AGENT)
        contexts = st.builds(lambda c, extra: {**extra, **conv(c)},
                             st.one_of(keys, st.integers(-(2**53), 2**53), st.booleans()), extras)
        refs = st.one_of(
            st.builds(lambda k: pb.MemoryRef(memory_id=MEM, key=k), keys),
            st.builds(lambda c: pb.MemoryRef(memory_id=MEM, agent=pb.AgentScope(agent_id=AGENT, context=_struct(c))),
                      contexts),
        )
        roles: st.SearchStrategy[int] = st.sampled_from([pb.ROLE_SYSTEM, pb.ROLE_USER, pb.ROLE_ASSISTANT, pb.ROLE_TOOL])
        priorities = st.none() | st.integers(0, 2**31 - 1)
        content_types = st.one_of(st.just(""), short_texts)
        metadata = st.dictionaries(short_texts, short_texts, max_size=2)
        batches = st.lists(st.deferred(lambda: messages), min_size=1, max_size=3)
        views = st.sampled_from([pb.READ_VIEW_UNSPECIFIED, pb.READ_VIEW_CONTEXT, pb.READ_VIEW_RAW])
        chunks = st.integers(0, 10_000)
    else:
        memory_ids = st.one_of(st.just(MEM), st.just(HUGE), texts)
        agent_ids = st.one_of(st.just(AGENT), st.just(HUGE), texts)
        contexts = st.one_of(st.dictionaries(short_texts, json_values, max_size=3), json_values.map(conv),
                             st.builds(lambda c, extra: {**extra, **conv(c)}, json_values, extras))
        refs = st.one_of(
            st.builds(lambda m, k: pb.MemoryRef(memory_id=m, key=k), memory_ids, texts),
            st.builds(lambda m, a, c: pb.MemoryRef(memory_id=m, agent=pb.AgentScope(agent_id=a, context=_struct(c))),
                      memory_ids, agent_ids, contexts),
            st.builds(lambda m: pb.MemoryRef(memory_id=m), memory_ids),
            st.just(None),
        )
        roles = st.one_of(st.sampled_from(list(pb.Role.values())), int32s)
        priorities = st.none() | int32s
        content_types = texts
        metadata = st.dictionaries(texts, texts, max_size=2)
        batches = st.one_of(
            st.lists(st.deferred(lambda: messages), max_size=4),
            st.just([pb.Message(role=pb.ROLE_USER, content="x")] * 1_001),
            st.just([pb.Message(role=pb.ROLE_USER, content="x" * (1024 * 1024 + 1))]),
        )
        views = st.one_of(st.sampled_from(list(pb.ReadView.values())), int32s)
        chunks = uint32s
    messages = st.builds(  # server-set fields (seq, id, token_count, kind, ...) are sent too: ignored
        lambda role, content, ctype, prio, meta, persist, seq, mid, tokens, kind, eff: pb.Message(
            role=role, content=content, content_type=ctype, priority=prio, metadata=meta, persist=persist,
            seq=seq, id=mid, token_count=tokens, kind=kind, effective_priority=eff),
        roles, texts, content_types, priorities, metadata, st.none() | st.booleans(), uint64s, texts, uint32s,
        st.one_of(st.sampled_from(list(pb.MessageKind.values())), int32s), int32s,
    )
    idempotency_keys = st.one_of(st.just(""), st.sampled_from(["k1", "k2"]), texts)
    return {
        "Append": st.builds(lambda r, b, k: _with_ref(pb.AppendRequest, r, messages=b, idempotency_key=k),
                            refs, batches, idempotency_keys),
        "Read": st.builds(lambda r, v, a, lim, mt, ch: _with_ref(pb.ReadRequest, r, view=v, after_seq=a, limit=lim,
                                                                   max_tokens=mt, chunk_size=ch),
                          refs, views, after_seqs, small_uint32s, uint32s, chunks),
        "GetStats": st.builds(lambda r: _with_ref(pb.GetStatsRequest, r), refs),
        "GetHealth": st.builds(lambda r: _with_ref(pb.GetHealthRequest, r), refs),
        "Flush": st.builds(lambda r, d: _with_ref(pb.FlushRequest, r, dry_run=d), refs, st.booleans()),
        "Clear": st.builds(lambda r: _with_ref(pb.ClearRequest, r), refs),
        "DeleteMessages": st.builds(
            lambda r, seqs, last: _with_ref(pb.DeleteMessagesRequest, r, seqs=seqs, if_last_seq=last),
            refs, st.lists(st.one_of(st.integers(0, 5), after_seqs), max_size=4), st.none() | after_seqs),
        "ResolveAgent": st.builds(lambda a, c: pb.ResolveAgentRequest(agent_id=a, context=_struct(c)),
                                  agent_ids, contexts),
        "ListResources": st.just(pb.ListResourcesRequest()),
        "EndWorkflow": st.builds(lambda w: pb.EndWorkflowRequest(workflow_id=w), texts),
        "Watch": st.builds(lambda r, a: _with_ref(pb.WatchRequest, r, after_seq=a), refs, after_seqs),
        "PlanFlush": st.builds(lambda r: _with_ref(pb.PlanFlushRequest, r), refs),
        "ApplyFlush": st.builds(lambda r, t, s: _with_ref(pb.ApplyFlushRequest, r, plan_token=t, summary=s),
                                refs, st.one_of(st.just(""), st.just("pt1.e30.AAAA"), texts), texts),
    }


def _mix(good: pb.AppendRequest, bad: pb.AppendRequest, at: int) -> pb.AppendRequest:
    """``good`` (to an instance that exists) with ``bad``'s messages inserted at ``at``."""
    msgs = list(good.messages)
    out = pb.AppendRequest()
    out.CopyFrom(good)
    del out.messages[:]
    out.messages.extend(msgs[:at] + list(bad.messages) + msgs[at:])
    return out


_plausible, _anything = _requests(True), _requests(False)
requests = {m: st.one_of(_plausible[m], _plausible[m], _anything[m]) for m in _plausible}
# Good and bad messages in one batch to an instance that exists: all or nothing.
requests["Append"] = st.one_of(requests["Append"],
                               st.builds(_mix, _plausible["Append"], _anything["Append"], st.integers(0, 3)))
methods = st.sampled_from([m.name for m in SERVICE.methods])
raw_bodies = st.one_of(
    st.binary(max_size=64),
    st.sampled_from([
        _field(1, _field(1, b"\xff\xfe") + _field(2, b"k")),  # invalid UTF-8 in ref.memory_id
        _field(1, _field(1, MEM.encode()) + _field(3, _field(1, AGENT.encode()) + _field(2, deep_struct(40)))),
        _field(1, AGENT.encode()) + _field(2, deep_struct(60)),
        b"\x0a\xff\xff\xff\xff\x0f",  # a length past the end of the body
    ]),
)
well_formed = methods.flatmap(lambda m: st.tuples(st.just(m), requests[m].map(lambda r: r.SerializeToString())))
calls = st.one_of(st.tuples(methods, raw_bodies), well_formed, well_formed, well_formed)


def test_every_rpc_has_a_list_of_allowed_codes_and_a_request_strategy() -> None:
    names = {m.name for m in SERVICE.methods}
    assert set(ALLOWED) == names == set(requests)


@settings(max_examples=200, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(call=calls)
async def test_hostile_calls_get_a_documented_status_and_change_nothing(
    daemon: Daemon, call: tuple[str, bytes]
) -> None:
    method, body = call
    request_type = getattr(pb, SERVICE.methods_by_name[method].input_type.name)
    ref = None
    try:
        decoded = request_type.FromString(body)
        if "ref" in request_type.DESCRIPTOR.fields_by_name and decoded.HasField("ref"):
            ref = decoded.ref
    except Exception:  # undecodable here too: no instance can be addressed by it
        pass
    before = await stats(daemon, ref) if ref is not None else None

    code, details = await daemon.call(method, body)
    event(f"{method} {code.name}")  # the spread of outcomes: pytest --hypothesis-show-statistics

    assert code == C.OK or code in ALLOWED[method], (method, code, details[:300])
    assert len(details) <= MAX_DETAILS and HUGE[:101] not in details, (method, code, details[:300])
    if code != C.OK and ref is not None:
        assert await stats(daemon, ref) == before, (method, code, details[:300])
        if isinstance(before, tuple):
            event(f"refused {method}: its instance checked unchanged")
    health = await daemon.call("GetHealth", b"")
    assert health == (C.OK, "")


async def test_daemon_serves_normally_after_hostile_calls(daemon: Daemon) -> None:
    for m in SERVICE.methods:
        assert (await daemon.call(m.name, b"\xff" * 8, timeout=CALL_DEADLINE_S))[0] == C.INVALID_ARGUMENT
    deep = _field(1, AGENT.encode()) + _field(2, deep_struct(60))
    assert (await daemon.call("ResolveAgent", deep))[0] == C.INVALID_ARGUMENT
    ref = via_agent(conv("after-hostile"))
    assert (await daemon.call("Append", append(ref, "still", "here")))[0] == C.OK
    assert await raw_contents(daemon, ref) == ["still", "here"]


# -- stream items stay under the send limit -------------------------------------------------


# (limits, contents, batch size): a daemon whose send limit is 1 MiB; a default daemon and
# a client that receives at most 4 MiB (gRPC's default, this test's channel).
LARGE = {
    "send-limit": ({"max_request_bytes": 1024 * 1024, "max_message_bytes": 256 * 1024},
                   [f"{i}:" + "é" * 100_000 for i in range(8)], 4),  # 200 KB of UTF-8 each
    "receive-limit": ({}, [(f"{i}: " + "lorem ipsum dolor sit amet " * 40_000)[: 1024 * 1024] for i in range(5)],
                      5),  # 1 MiB each (varied text: a 1 MiB run of one letter costs tiktoken 1.4 s)
}


@pytest.mark.parametrize("case", list(LARGE))
@pytest.mark.parametrize("backend", ["embedded", "redis"])
async def test_large_messages_are_read_and_watched_in_items_under_the_send_limit(
    request: pytest.FixtureRequest, backend: str, case: str
) -> None:
    """Each message is within max_message_bytes, a page of them is not within the daemon's
    send limit or the client's receive limit: the page goes out as several stream items."""
    store = open_store(request.getfixturevalue("redis_standalone").url) if backend == "redis" else None
    limits, contents, batch_size = LARGE[case]
    async with running_server(project(f"h{uuid.uuid4().hex[:12]}"), store=store, **limits) as srv, \
            grpc.aio.insecure_channel(srv.address) as channel:
        d = Daemon(srv, channel)
        ref = direct("large")
        for i in range(0, len(contents), batch_size):
            assert (await d.call("Append", append(ref, *contents[i : i + batch_size])))[0] == C.OK
        for view in (pb.READ_VIEW_RAW, pb.READ_VIEW_CONTEXT):
            call = channel.unary_stream(
                f"/{SERVICE.full_name}/Read", request_serializer=pb.ReadRequest.SerializeToString,
                response_deserializer=pb.ReadResponse.FromString,
            )(pb.ReadRequest(ref=ref, view=view, chunk_size=100), timeout=CALL_DEADLINE_S)
            items = [item async for item in call]
            assert [m.content for r in items for m in r.messages] == contents
            assert items[0].info.last_seq == len(contents)
        watch = channel.unary_stream(
            f"/{SERVICE.full_name}/Watch", request_serializer=pb.WatchRequest.SerializeToString,
            response_deserializer=pb.WatchResponse.FromString,
        )(pb.WatchRequest(ref=ref), timeout=CALL_DEADLINE_S)
        seen: list[str] = []
        async for event in watch:
            seen.extend(m.content for m in event.appended.messages)
            if len(seen) >= len(contents):
                break
        watch.cancel()
        assert seen == contents
