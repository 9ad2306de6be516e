"""The foundation's service behaviour, through the Python client against a real grpc.aio server."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest
from memoryd_client import (
    AlreadyExistsError,
    AsyncMemoryClient,
    InvalidArgumentError,
    MemorydClientError,
    NotFoundError,
    ResourceExhaustedError,
    pb,
)
from memoryd_client.v1 import memory_pb2_grpc

from tests.support import RunningServer, running_server, storage_project

MEM = "default"


async def raw(c: AsyncMemoryClient, key: str, **kw: Any) -> list[pb.Message]:
    return await c.read_all(MEM, key=key, view="raw", **kw)


async def test_round_trip_keeps_order_seq_and_bytes(server: RunningServer) -> None:
    contents = ["hello", "héllo wörld ✓ 你好 🎉", "x" * 100_000, "", "line1\nline2\r\n\ttab\x00nul"]
    async with server.client() as c:
        resp = await c.append(MEM, [{"role": "user", "content": t} for t in contents], key="conv-1")
        await c.append(MEM, [{"role": "assistant", "content": "reply", "metadata": {"k": "v"}}], key="conv-1")
        got = await raw(c, "conv-1")
    assert [m.content for m in got] == [*contents, "reply"]
    assert [m.seq for m in got] == [1, 2, 3, 4, 5, 6]
    assert [r.seq for r in resp.results] == [1, 2, 3, 4, 5]
    assert len({m.id for m in got}) == 6
    assert got[-1].role == pb.ROLE_ASSISTANT and dict(got[-1].metadata) == {"k": "v"}
    assert got[0].created_at.seconds > 0 and got[0].kind == pb.MESSAGE_KIND_MESSAGE
    assert resp.stats.message_count == 5


async def test_instances_are_isolated_by_key(server: RunningServer) -> None:
    async with server.client() as c:
        await c.append(MEM, [{"role": "user", "content": "a"}], key="a")
        await c.append(MEM, [{"role": "user", "content": "b"}], key="b")
        assert [m.content for m in await raw(c, "a")] == ["a"]
        assert [m.content for m in await raw(c, "b")] == ["b"]


async def test_batch_is_atomic_when_one_message_is_invalid(server: RunningServer) -> None:
    async with server.client() as c:
        batch = [pb.Message(role=pb.ROLE_USER, content="ok"), pb.Message(role=pb.ROLE_USER, content="ok2"),
                 pb.Message(role=pb.ROLE_UNSPECIFIED, content="bad")]
        with pytest.raises(InvalidArgumentError) as err:
            await c.append(MEM, batch, key="atomic")
        assert "messages[2].role" in err.value.details
        assert await raw(c, "atomic") == []
        assert (await c.stats(MEM, key="atomic")).message_count == 0


async def test_idempotent_retry_does_not_duplicate(server: RunningServer) -> None:
    async with server.client() as c:
        msgs = [{"role": "user", "content": "once"}, {"role": "assistant", "content": "twice?"}]
        first = await c.append(MEM, msgs, key="idem", idempotency_key="req-42")
        again = await c.append(MEM, msgs, key="idem", idempotency_key="req-42")
        other = await c.append(MEM, msgs[:1], key="idem", idempotency_key="req-43")
        got = await raw(c, "idem")
    assert not first.replayed and again.replayed and not other.replayed
    assert [r.seq for r in again.results] == [r.seq for r in first.results] == [1, 2]
    assert [r.id for r in again.results] == [r.id for r in first.results]
    assert [m.content for m in got] == ["once", "twice?", "once"]


async def test_idempotency_key_reused_for_another_batch_is_already_exists(server: RunningServer) -> None:
    async with server.client() as c:
        await c.append(MEM, [{"role": "user", "content": "order A-1"}], key="reuse", idempotency_key="req-7")
        with pytest.raises(AlreadyExistsError) as err:
            await c.append(MEM, [{"role": "user", "content": "order B-2"}], key="reuse", idempotency_key="req-7")
        assert "idempotency_key" in err.value.details
        assert [m.content for m in await raw(c, "reuse")] == ["order A-1"]


def _msg(**kw: Any) -> pb.Message:
    return pb.Message(**{"role": pb.ROLE_USER, "content": "x", **kw})


INVALID: list[tuple[str, pb.AppendRequest, grpc.StatusCode, str]] = [
    ("no ref", pb.AppendRequest(messages=[_msg()]), grpc.StatusCode.INVALID_ARGUMENT, "ref"),
    ("empty memory id", pb.AppendRequest(ref=pb.MemoryRef(key="k"), messages=[_msg()]),
     grpc.StatusCode.INVALID_ARGUMENT, "ref.memory_id"),
    ("unknown memory", pb.AppendRequest(ref=pb.MemoryRef(memory_id="nope", key="k"), messages=[_msg()]),
     grpc.StatusCode.NOT_FOUND, "nope"),
    ("no target", pb.AppendRequest(ref=pb.MemoryRef(memory_id=MEM), messages=[_msg()]),
     grpc.StatusCode.INVALID_ARGUMENT, "ref.target"),
    ("empty key", pb.AppendRequest(ref=pb.MemoryRef(memory_id=MEM, key=""), messages=[_msg()]),
     grpc.StatusCode.INVALID_ARGUMENT, "ref.key"),
    ("oversized key", pb.AppendRequest(ref=pb.MemoryRef(memory_id=MEM, key="k" * 1025), messages=[_msg()]),
     grpc.StatusCode.INVALID_ARGUMENT, "ref.key"),
    ("empty batch", pb.AppendRequest(ref=pb.MemoryRef(memory_id=MEM, key="k")),
     grpc.StatusCode.INVALID_ARGUMENT, "messages"),
    ("invalid role", pb.AppendRequest(ref=pb.MemoryRef(memory_id=MEM, key="k"), messages=[_msg(role=9)]),
     grpc.StatusCode.INVALID_ARGUMENT, "messages[0].role"),
    ("negative priority", pb.AppendRequest(ref=pb.MemoryRef(memory_id=MEM, key="k"), messages=[_msg(priority=-1)]),
     grpc.StatusCode.INVALID_ARGUMENT, "messages[0].priority"),
    ("content over limit", pb.AppendRequest(ref=pb.MemoryRef(memory_id=MEM, key="k"),
                                            messages=[_msg(), _msg(content="y" * 5000)]),
     grpc.StatusCode.RESOURCE_EXHAUSTED, "messages[1].content"),
    ("too many messages", pb.AppendRequest(ref=pb.MemoryRef(memory_id=MEM, key="k"), messages=[_msg()] * 11),
     grpc.StatusCode.RESOURCE_EXHAUSTED, "messages"),
    ("idempotency key too long", pb.AppendRequest(ref=pb.MemoryRef(memory_id=MEM, key="k"), messages=[_msg()],
                                                  idempotency_key="i" * 300),
     grpc.StatusCode.INVALID_ARGUMENT, "idempotency_key"),
    ("request over max size", pb.AppendRequest(ref=pb.MemoryRef(memory_id=MEM, key="k"),
                                               messages=[_msg(content="z" * 3000)] * 10),
     grpc.StatusCode.RESOURCE_EXHAUSTED, ""),
]


@pytest.mark.parametrize(("case", "request_", "code", "field"), INVALID, ids=[c[0] for c in INVALID])
async def test_invalid_append_is_rejected_and_changes_nothing(
    case: str, request_: pb.AppendRequest, code: grpc.StatusCode, field: str
) -> None:
    limits = {"max_message_bytes": 4096, "max_batch_messages": 10, "max_request_bytes": 20_000}
    async with running_server(storage_project(), **limits) as srv:
        async with grpc.aio.insecure_channel(srv.address) as ch:
            stub = memory_pb2_grpc.MemoryServiceStub(ch)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.Append(request_, timeout=5)
            assert err.value.code() == code
            assert field in (err.value.details() or "")
        async with srv.client() as c:
            assert await raw(c, "k") == []
            assert (await c.stats(MEM, key="k")).last_seq == 0


async def test_read_validation_errors(server: RunningServer) -> None:
    async with server.client() as c:
        with pytest.raises(NotFoundError):
            await c.read_all("missing", key="k", view="raw")
        with pytest.raises(InvalidArgumentError, match="chunk_size"):
            await c.read_all(MEM, key="k", view="raw", chunk_size=1_000_000)


async def test_read_of_10000_messages_is_complete_ordered_and_chunked(server: RunningServer) -> None:
    async with server.client() as c:
        for start in range(0, 10_000, 1000):
            await c.append(MEM, [{"role": "user", "content": f"m{i}"} for i in range(start, start + 1000)], key="big")
        got = await raw(c, "big")
        assert [m.content for m in got] == [f"m{i}" for i in range(10_000)]
        assert [m.seq for m in got] == list(range(1, 10_001))
    async with grpc.aio.insecure_channel(server.address) as ch:
        stub = memory_pb2_grpc.MemoryServiceStub(ch)
        items = [i async for i in stub.Read(pb.ReadRequest(ref=pb.MemoryRef(memory_id=MEM, key="big"),
                                                           view=pb.READ_VIEW_RAW, chunk_size=500))]
    assert len(items) == 20 and all(len(i.messages) == 500 for i in items)
    assert items[0].info.last_seq == 10_000 and items[0].info.instance_id


async def test_after_seq_and_limit(server: RunningServer) -> None:
    async with server.client() as c:
        await c.append(MEM, [{"role": "user", "content": str(i)} for i in range(1, 21)], key="page")
        assert [m.seq for m in await raw(c, "page", after_seq=15)] == [16, 17, 18, 19, 20]
        assert [m.seq for m in await raw(c, "page", limit=3)] == [1, 2, 3]
        assert [m.seq for m in await raw(c, "page", after_seq=5, limit=4, chunk_size=3)] == [6, 7, 8, 9]
        # page boundaries: the next page is fetched while one is sent, and never past the limit
        for after, limit, chunk in ((0, 6, 3), (0, 7, 3), (18, 0, 2), (0, 0, 5), (0, 0, 7), (3, 17, 4)):
            expected = list(range(after + 1, (after + limit if limit else 20) + 1))
            assert [m.seq for m in await raw(c, "page", after_seq=after, limit=limit, chunk_size=chunk)] == expected
        assert await raw(c, "page", after_seq=20) == []


async def test_clear_deletes_the_instance(server: RunningServer) -> None:
    async with server.client() as c:
        await c.append(MEM, [{"role": "user", "content": "bye"}] * 3, key="gone")
        assert await c.clear(MEM, key="gone") == 3
        assert await raw(c, "gone") == []
        assert (await c.stats(MEM, key="gone")).message_count == 0


async def test_concurrent_writers_lose_and_duplicate_nothing(server: RunningServer) -> None:
    writers, per_writer = 16, 200

    async def writer(w: int) -> None:
        async with server.client() as c:
            for i in range(per_writer):
                await c.append(MEM, [{"role": "user", "content": f"{w}:{i}"}], key="shared")

    await asyncio.gather(*(writer(w) for w in range(writers)))
    async with server.client() as c:
        got = await raw(c, "shared")
    contents = [m.content for m in got]
    assert len(contents) == writers * per_writer == len(set(contents))
    assert [m.seq for m in got] == list(range(1, writers * per_writer + 1))
    for w in range(writers):
        mine = [int(t.split(":")[1]) for t in contents if t.startswith(f"{w}:")]
        assert mine == list(range(per_writer))


async def test_errors_are_typed_and_carry_the_status(server: RunningServer) -> None:
    async with server.client() as c:
        with pytest.raises(MemorydClientError) as err:
            await c.append(MEM, [{"role": "user", "content": "x" * 2_000_000}], key="k")
    assert isinstance(err.value, ResourceExhaustedError)
    assert err.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_max_key_bytes_setting_governs_direct_keys() -> None:
    async with running_server(storage_project(), max_key_bytes=2048) as srv, srv.client() as c:
        await c.append(MEM, [{"role": "user", "content": "long key"}], key="k" * 1500)
        assert (await c.stats(MEM, key="k" * 1500)).message_count == 1
        with pytest.raises(InvalidArgumentError, match=r"ref\.key"):
            await c.append(MEM, [{"role": "user", "content": "too long"}], key="k" * 2049)
