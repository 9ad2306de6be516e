"""/metrics scraped over HTTP after real gRPC traffic; request ids and the access log.

A real grpc.aio server runs memoryd's MemoryService with the daemon's wrapped handlers;
traffic comes from memoryd_client (and the raw stub where metadata matters);
the scrape is a real HTTP GET of the Metrics endpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import urllib.request
from collections.abc import AsyncIterator, Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from memoryd_client import AsyncMemoryClient, InvalidArgumentError, MemorydClientError, NotFoundError, pb
from memoryd_client.v1 import memory_pb2_grpc as pb_grpc
from prometheus_client.parser import text_string_to_metric_families

from memoryd.handlers import REQUEST_ID_HEADER
from memoryd.keys import InstanceAddr
from memoryd.logs import JsonFormatter
from memoryd.metrics import Metrics
from memoryd.models import InstanceMeta
from memoryd.store.base import MemoryStore
from memoryd.store.embedded import EmbeddedStore
from tests.support import running_server

MEM = "default"
SERVICE = pb.DESCRIPTOR.services_by_name["MemoryService"].full_name
KEY = "tenant-7f3a-secret-key"
CONTENT = "card 4111 1111 1111 1111 belongs to me"


@contextlib.asynccontextmanager
async def serve(store: MemoryStore | None = None) -> AsyncIterator[tuple[str, Metrics, int]]:
    """The daemon's real server (wrapped handlers, health, /metrics on its own port)."""
    async with running_server(store=store, metrics_listen="127.0.0.1:0") as srv:
        yield srv.address, srv.server.manager.metrics, srv.server.ports["metrics"]


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return str(resp.read().decode())


async def scrape(port: int) -> tuple[str, dict[tuple[str, frozenset[tuple[str, str]]], float]]:
    """GET /metrics (off the loop) -> (text, {(sample name, labels): value})."""
    text = await asyncio.to_thread(_get, f"http://127.0.0.1:{port}/metrics")
    samples = {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text) for s in family.samples
    }
    return text, samples


def rpc(method: str, rpc_type: str = "unary", service: str = SERVICE, **extra: str) -> frozenset[tuple[str, str]]:
    return frozenset({"grpc_service": service, "grpc_method": method, "grpc_type": rpc_type, **extra}.items())


async def test_grpc_server_metrics_move_by_exactly_the_traffic_sent() -> None:
    async with serve() as (addr, _, metrics_port), AsyncMemoryClient(addr) as c:
        _, before = await scrape(metrics_port)
        assert not any(name.startswith("grpc_server_handled") for name, _ in before)
        for batch in (1, 2, 1):
            await c.append(MEM, [{"role": "user", "content": CONTENT}] * batch, key=KEY)
        for _ in range(2):
            with pytest.raises(InvalidArgumentError):
                await c.append(MEM, [], key=KEY)
        assert len(await c.read_all(MEM, key=KEY, view="raw")) == 4
        with pytest.raises(NotFoundError):
            await c.stats("no-such-memory", key=KEY)
        async with grpc.aio.insecure_channel(addr) as ch:
            await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest())

        text, after = await scrape(metrics_port)

    assert after[("grpc_server_started_total", rpc("Append"))] == 5
    assert after[("grpc_server_handled_total", rpc("Append", grpc_code="OK"))] == 3
    assert after[("grpc_server_handled_total", rpc("Append", grpc_code="INVALID_ARGUMENT"))] == 2
    assert after[("grpc_server_handling_seconds_count", rpc("Append"))] == 5
    assert after[("grpc_server_handling_seconds_bucket", rpc("Append", le="+Inf"))] == 5
    assert after[("grpc_server_handling_seconds_bucket", rpc("Append", le="0.0001"))] <= 5  # sub-ms buckets exist
    assert after[("grpc_server_started_total", rpc("Read", "server_stream"))] == 1
    assert after[("grpc_server_handled_total", rpc("Read", "server_stream", grpc_code="OK"))] == 1
    assert after[("grpc_server_handled_total", rpc("GetStats", grpc_code="NOT_FOUND"))] == 1
    health_check = rpc("Check", service="grpc.health.v1.Health", grpc_code="OK")
    assert after[("grpc_server_handled_total", health_check)] == 1
    codes = {dict(labels)["grpc_code"] for name, labels in after if name == "grpc_server_handled_total"}
    assert codes == {"OK", "INVALID_ARGUMENT", "NOT_FOUND"}
    # Labels are bounded: neither the instance key nor content, nor the unknown memory id, appear
    # (in label values: sample values are floats whose digits may contain "4111" by chance).
    label_values = {value for _, labels in after for _, value in labels}
    assert not any(KEY in v or "4111" in v or "no-such-memory" in v for v in label_values)
    assert KEY not in text and "no-such-memory" not in text


async def test_request_id_is_taken_from_metadata_or_generated_and_echoed() -> None:
    async with serve() as (addr, _, _port), grpc.aio.insecure_channel(addr) as ch:
        stub = pb_grpc.MemoryServiceStub(ch)
        req = pb.GetStatsRequest(ref=pb.MemoryRef(memory_id=MEM, key=KEY))

        call = stub.GetStats(req, metadata=((REQUEST_ID_HEADER, "trace-abc.123"),))
        await call
        assert dict(await call.trailing_metadata())[REQUEST_ID_HEADER] == "trace-abc.123"

        call = stub.GetStats(req)
        await call
        generated = dict(await call.trailing_metadata())[REQUEST_ID_HEADER]
        assert re.fullmatch(r"[0-9a-f]{32}", str(generated))

        # Unusable ids (spaces, too long) are replaced rather than copied into every log line.
        for bad in ("has spaces", "x" * 200):
            call = stub.GetStats(req, metadata=((REQUEST_ID_HEADER, bad),))
            await call
            assert re.fullmatch(r"[0-9a-f]{32}", str(dict(await call.trailing_metadata())[REQUEST_ID_HEADER]))

        # Echoed on failures and on server streams too.
        bad_req = pb.GetStatsRequest(ref=pb.MemoryRef(memory_id="nope", key=KEY))
        call = stub.GetStats(bad_req, metadata=((REQUEST_ID_HEADER, "failing-1"),))
        with pytest.raises(grpc.aio.AioRpcError):
            await call
        assert dict(await call.trailing_metadata())[REQUEST_ID_HEADER] == "failing-1"
        stream = stub.Read(pb.ReadRequest(ref=pb.MemoryRef(memory_id=MEM, key=KEY), view=pb.READ_VIEW_RAW),
                           metadata=((REQUEST_ID_HEADER, "stream-1"),))
        async for _ in stream:
            pass
        assert dict(await stream.trailing_metadata())[REQUEST_ID_HEADER] == "stream-1"


class _Lines(logging.Handler):
    """Formats like the daemon (JsonFormatter) at emit time, i.e. inside the call's context."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(JsonFormatter())
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@contextlib.contextmanager
def captured(*names: str, level: int = logging.INFO) -> Iterator[_Lines]:
    handler = _Lines()
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(level)
    try:
        yield handler
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.removeHandler(handler)
            lg.setLevel(level)


async def _two_appends_and_a_probe(addr: str) -> None:
    async with grpc.aio.insecure_channel(addr) as ch:
        stub = pb_grpc.MemoryServiceStub(ch)
        ref = pb.MemoryRef(memory_id=MEM, key=KEY)
        await stub.Append(pb.AppendRequest(ref=ref, messages=[pb.Message(role=pb.ROLE_USER, content=CONTENT)]),
                          metadata=((REQUEST_ID_HEADER, "append-1"),))
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.Append(pb.AppendRequest(ref=ref), metadata=((REQUEST_ID_HEADER, "append-2"),))
        await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest())


async def test_access_log_has_one_json_line_per_call_without_content_or_keys() -> None:
    with captured("memoryd.access", level=logging.DEBUG) as logs:
        async with serve() as (addr, _, _port):
            await _two_appends_and_a_probe(addr)
    lines = [json.loads(line) for line in logs.lines]
    calls = [e for e in lines if e["method"] == f"/{SERVICE}/Append"]
    assert [(e["request_id"], e["grpc_code"], e["level"]) for e in calls] == [
        ("append-1", "OK", "debug"), ("append-2", "INVALID_ARGUMENT", "info")]
    assert [e["level"] for e in lines if "Health" in e["method"]] == ["debug"]
    for e in calls:
        assert e["event"] == "rpc" and e["logger"] == "memoryd.access" and e["grpc_type"] == "unary"
        assert isinstance(e["duration_ms"], float) and e["duration_ms"] >= 0
    assert not any(KEY in line or "4111" in line for line in logs.lines)


async def test_at_info_only_refused_and_failed_calls_are_logged() -> None:
    with captured("memoryd.access") as logs:
        async with serve() as (addr, _, _port):
            await _two_appends_and_a_probe(addr)
    assert [json.loads(line)["request_id"] for line in logs.lines] == ["append-2"]


class BrokenStore(EmbeddedStore):
    """An embedded store whose meta() fails unexpectedly: drives the servicer's INTERNAL path."""

    async def meta(self, addr: InstanceAddr) -> InstanceMeta:
        raise RuntimeError("disk on fire")


async def test_lines_logged_inside_a_call_carry_its_request_id() -> None:
    with captured("memoryd.service", "memoryd.access") as logs:
        async with serve(BrokenStore()) as (addr, _, metrics_port), grpc.aio.insecure_channel(addr) as ch:
            stub = pb_grpc.MemoryServiceStub(ch)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.GetStats(pb.GetStatsRequest(ref=pb.MemoryRef(memory_id=MEM, key="k")),
                                    metadata=((REQUEST_ID_HEADER, "boom-1"),))
            assert err.value.code() == grpc.StatusCode.INTERNAL
            assert "disk on fire" not in (err.value.details() or "")  # no internals on the wire
            _, samples = await scrape(metrics_port)
    assert samples[("grpc_server_handled_total", rpc("GetStats", grpc_code="INTERNAL"))] == 1
    entries = [json.loads(line) for line in logs.lines]
    service_lines = [e for e in entries if e["logger"] == "memoryd.service"]
    assert service_lines and all(e["request_id"] == "boom-1" for e in service_lines)
    assert [e["grpc_code"] for e in entries if e["logger"] == "memoryd.access"] == ["INTERNAL"]


async def test_a_client_error_status_is_not_counted_as_ok() -> None:
    async with serve() as (addr, _, metrics_port), AsyncMemoryClient(addr) as c:
        with pytest.raises(MemorydClientError):
            await c.append(MEM, [{"role": "user", "content": "x" * 2_000_000}], key=KEY)  # > max_message_bytes
        _, samples = await scrape(metrics_port)
    assert samples[("grpc_server_handled_total", rpc("Append", grpc_code="RESOURCE_EXHAUSTED"))] == 1
    assert ("grpc_server_handled_total", rpc("Append", grpc_code="OK")) not in samples
