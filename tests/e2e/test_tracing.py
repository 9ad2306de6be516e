"""OpenTelemetry traces of a real `memoryd serve` process on a real Redis.

The daemon exports with the console exporter (stdout) or OTLP/gRPC to a collector
this test runs; calls carry a W3C ``traceparent``. What an SRE relies on: the server
span continues the caller's trace, Redis calls, the lock wait and the fold are its
children, log lines carry the ids, and nothing exported contains message content or
the instance key.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from memoryd_client import MemoryClient, call_metadata
from memoryd_client.v1 import memory_pb2 as pb
from memoryd_client.v1 import memory_pb2_grpc as pb_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.sdk.trace import TracerProvider

import memoryd
from tests.redis_servers import RedisProcess, start_standalone
from tests.support import REPO, daemon_process, free_port, wait_serving

SERVICE = "memoryd.v1.MemoryService"
CALLER_SPAN = "00f067aa0ba902b7"
APPEND_TRACE = uuid.uuid4().hex
FLUSH_TRACE = uuid.uuid4().hex
EXPLICIT_TRACE = uuid.uuid4().hex
REFUSED_TRACE = uuid.uuid4().hex
WATCH_TRACE = uuid.uuid4().hex
UNSAMPLED_TRACE = uuid.uuid4().hex
READ_TRACE = uuid.uuid4().hex
BACKGROUND_TRACE = uuid.uuid4().hex
REQUEST_ID = f"agent-{uuid.uuid4().hex}"
UNKNOWN_MEMORY = f"nosuch-{uuid.uuid4().hex}"  # quoted back in the NOT_FOUND details
CONTENT = f"the vault code is {uuid.uuid4().hex}"
KEY = f"tenant-secret-{uuid.uuid4().hex}"
REF = pb.MemoryRef(memory_id="default", key=KEY)
# "tiny" flushes in the background after one large append.
PROJECT = """
project: traced
memories:
  - id: default
  - id: tiny
    max_tokens: 2000
"""


def traceparent(trace_id: str) -> tuple[tuple[str, str]]:
    return (("traceparent", f"00-{trace_id}-{CALLER_SPAN}-01"),)


def parse_console(text: str) -> list[dict[str, Any]]:
    """The console exporter's output: pretty-printed JSON objects, one after another."""
    decoder, spans, pos = json.JSONDecoder(), [], 0
    while (start := text.find("{", pos)) != -1:
        span, pos = decoder.raw_decode(text, start)
        spans.append(span)
    return spans


@dataclass
class ConsoleRun:
    spans: list[dict[str, Any]]
    stdout: str
    log_lines: list[dict[str, Any]]
    agent_trace: str  # the trace of a span opened in this process around a client call

    def in_trace(self, trace_id: str) -> list[dict[str, Any]]:
        return [s for s in self.spans if s["context"]["trace_id"] == "0x" + trace_id]

    def server_span(self, trace_id: str, method: str) -> dict[str, Any]:
        (span,) = [s for s in self.in_trace(trace_id) if s["kind"] == "SpanKind.SERVER"]
        assert span["name"] == f"{SERVICE}/{method}"
        return span


@pytest.fixture(scope="module")
def console_run(redis_standalone: RedisProcess, tmp_path_factory: pytest.TempPathFactory) -> ConsoleRun:
    api = f"127.0.0.1:{free_port()}"
    config = tmp_path_factory.mktemp("traced") / "memoryd.yaml"
    config.write_text(PROJECT)
    env = {"OTEL_TRACES_EXPORTER": "console", "OTEL_SERVICE_NAME": "memoryd-under-test"}
    with daemon_process("--listen", api, "--redis-url", redis_standalone.url, "--log-level", "debug",
                        "--config", str(config), env=env) as proc:
        wait_serving(api, SERVICE)
        with grpc.insecure_channel(api) as ch:
            stub = pb_grpc.MemoryServiceStub(ch)
            stub.Append(pb.AppendRequest(ref=REF, messages=[pb.Message(role=pb.ROLE_USER, content=CONTENT)]),
                        metadata=traceparent(APPEND_TRACE), timeout=10)
            stub.Flush(pb.FlushRequest(ref=REF), metadata=traceparent(FLUSH_TRACE), timeout=10)
            with pytest.raises(grpc.RpcError) as refused:
                stub.GetStats(pb.GetStatsRequest(ref=pb.MemoryRef(memory_id=UNKNOWN_MEMORY, key=KEY)),
                              metadata=traceparent(REFUSED_TRACE), timeout=10)
            assert UNKNOWN_MEMORY in str(refused.value.details())
            big = [pb.Message(role=pb.ROLE_USER, content=f"{i}: {CONTENT} " * 8) for i in range(20)]
            scheduled = stub.Append(pb.AppendRequest(ref=pb.MemoryRef(memory_id="tiny", key=KEY), messages=big),
                                    metadata=traceparent(BACKGROUND_TRACE), timeout=10)
            assert scheduled.flush_scheduled
            more = stub.Append(pb.AppendRequest(ref=REF, messages=[pb.Message(role=pb.ROLE_USER, content="more")]),
                               timeout=10)
            stub.GetStats(pb.GetStatsRequest(ref=REF), timeout=10,  # the caller did not sample this trace
                          metadata=(("traceparent", f"00-{UNSAMPLED_TRACE}-{CALLER_SPAN}-00"),))
            watch = stub.Watch(pb.WatchRequest(ref=REF, after_seq=more.results[0].seq - 1),
                               metadata=traceparent(WATCH_TRACE))
            assert next(watch).appended.messages[0].content == "more"
            watch.cancel()
            # A stream the client leaves while the daemon waits to send (flow control): grpc
            # drops the handler's generator at its yield and the loop closes it in another task.
            bulk = pb.MemoryRef(memory_id="default", key=f"{KEY}-bulk")
            stub.Append(pb.AppendRequest(ref=bulk, messages=[pb.Message(role=pb.ROLE_USER, content="x" * 2000)] * 400),
                        timeout=30)
            for _ in range(3):
                read = stub.Read(pb.ReadRequest(ref=bulk, view=pb.READ_VIEW_RAW, chunk_size=1),
                                 metadata=traceparent(READ_TRACE))
                next(read)
                read.cancel()
        tracer = TracerProvider().get_tracer("agent")  # the caller's own tracing; exports nowhere
        with tracer.start_as_current_span("agent turn") as agent, MemoryClient(api) as client:
            client.stats("default", key=KEY)
            agent_trace = format(agent.get_span_context().trace_id, "032x")
        with tracer.start_as_current_span("another turn"), MemoryClient(api) as client, \
                call_metadata(("x-request-id", REQUEST_ID), traceparent=traceparent(EXPLICIT_TRACE)[0][1]):
            client.stats("default", key=KEY)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        assert proc.stdout is not None and proc.stderr is not None
        stdout, stderr = proc.stdout.read().decode(), proc.stderr.read().decode()
    return ConsoleRun(parse_console(stdout), stdout, [json.loads(line) for line in stderr.splitlines()],
                      agent_trace)


def test_append_server_span_continues_the_callers_trace(console_run: ConsoleRun) -> None:
    span = console_run.server_span(APPEND_TRACE, "Append")
    assert span["parent_id"] == "0x" + CALLER_SPAN
    attrs = span["attributes"]
    assert attrs["rpc.system.name"] == "grpc" and attrs["rpc.method"] == f"{SERVICE}/Append"
    assert attrs["rpc.system"] == "grpc" and attrs["rpc.service"] == SERVICE
    assert attrs["rpc.response.status_code"] == "OK" and attrs["rpc.grpc.status_code"] == 0
    assert attrs["memoryd.memory.id"] == "default" and len(attrs["memoryd.instance.hash"]) == 16
    assert span["resource"]["attributes"]["service.name"] == "memoryd-under-test"


def test_redis_calls_are_children_of_the_server_span(console_run: ConsoleRun) -> None:
    server = console_run.server_span(APPEND_TRACE, "Append")
    (append,) = [s for s in console_run.in_trace(APPEND_TRACE) if s["name"] == "redis append"]
    assert append["parent_id"] == server["context"]["span_id"] and append["kind"] == "SpanKind.CLIENT"
    attrs = append["attributes"]
    assert attrs["db.system.name"] == "redis" and attrs["db.operation.name"] == "append"
    assert attrs["memoryd.messages.count"] == 1 and attrs["memoryd.tokens.count"] > 0
    assert attrs["memoryd.instance.message_count"] == 1


def test_flush_traces_the_lock_wait_and_the_fold(console_run: ConsoleRun) -> None:
    server = console_run.server_span(FLUSH_TRACE, "Flush")
    by_name = {s["name"]: s for s in console_run.in_trace(FLUSH_TRACE)}
    assert {"redis lock.acquire", "memoryd.fold", "redis state"} <= set(by_name)
    assert by_name["redis lock.acquire"]["parent_id"] == server["context"]["span_id"]
    assert by_name["memoryd.fold"]["parent_id"] == server["context"]["span_id"]
    assert by_name["redis state"]["parent_id"] == by_name["memoryd.fold"]["context"]["span_id"]
    assert by_name["memoryd.fold"]["attributes"]["memoryd.flush.strategy"] == "hybrid_summary"


def test_nothing_exported_carries_content_or_the_key(console_run: ConsoleRun) -> None:
    assert len(console_run.spans) >= 8
    for span in console_run.spans:
        for value in span["attributes"].values():
            assert CONTENT not in str(value) and KEY not in str(value)
    assert CONTENT not in console_run.stdout and KEY not in console_run.stdout
    assert UNKNOWN_MEMORY not in console_run.stdout  # error details are not exported


def test_client_errors_are_a_status_not_a_span_error(console_run: ConsoleRun) -> None:
    span = console_run.server_span(REFUSED_TRACE, "GetStats")
    assert span["attributes"]["rpc.response.status_code"] == "NOT_FOUND"
    assert span["status"]["status_code"] == "UNSET" and not span["events"]


def test_python_client_propagates_the_callers_context(console_run: ConsoleRun) -> None:
    agent = console_run.server_span(console_run.agent_trace, "GetStats")
    explicit = console_run.server_span(EXPLICIT_TRACE, "GetStats")  # call_metadata's traceparent wins
    assert agent["parent_id"] != "0x" + CALLER_SPAN and explicit["parent_id"] == "0x" + CALLER_SPAN
    (access,) = [line for line in console_run.log_lines if line.get("request_id") == REQUEST_ID]
    assert access["trace_id"] == EXPLICIT_TRACE


def test_background_flush_continues_the_appends_trace(console_run: ConsoleRun) -> None:
    append = console_run.server_span(BACKGROUND_TRACE, "Append")
    by_name = {s["name"]: s for s in console_run.in_trace(BACKGROUND_TRACE)}
    assert by_name["memoryd.background_flush"]["parent_id"] == append["context"]["span_id"]
    assert by_name["memoryd.fold"]["parent_id"] == by_name["memoryd.background_flush"]["context"]["span_id"]
    assert by_name["memoryd.fold"]["attributes"]["memoryd.flush.removed_count"] > 0
    assert by_name["redis apply_flush"]["attributes"]["memoryd.messages.removed"] > 0


def test_a_watch_is_one_span_without_its_store_polls(console_run: ConsoleRun) -> None:
    (watch,) = console_run.in_trace(WATCH_TRACE)
    assert watch["name"] == f"{SERVICE}/Watch" and watch["attributes"]["rpc.response.status_code"] == "CANCELLED"


def test_log_lines_carry_trace_and_span_ids(console_run: ConsoleRun) -> None:
    server = console_run.server_span(APPEND_TRACE, "Append")
    (access,) = [line for line in console_run.log_lines
                 if line.get("event") == "rpc" and line.get("trace_id") == APPEND_TRACE]
    assert access["method"] == f"/{SERVICE}/Append" and "0x" + access["span_id"] == server["context"]["span_id"]


def test_the_callers_sampling_decision_is_followed(console_run: ConsoleRun) -> None:
    assert not console_run.in_trace(UNSAMPLED_TRACE)
    (access,) = [line for line in console_run.log_lines if line.get("trace_id") == UNSAMPLED_TRACE]
    assert access["method"] == f"/{SERVICE}/GetStats"  # the log still leads to the caller's trace


def test_streams_left_by_the_client_end_their_spans_cleanly(console_run: ConsoleRun) -> None:
    reads = [s for s in console_run.in_trace(READ_TRACE) if s["kind"] == "SpanKind.SERVER"]
    assert [s["attributes"]["rpc.response.status_code"] for s in reads] == ["CANCELLED"] * 3
    # and no "Failed to detach context": a span made current in one context, closed in another
    assert not [line for line in console_run.log_lines if line["level"] in ("warning", "error")]


def test_health_checks_make_no_spans(console_run: ConsoleRun) -> None:
    assert not [s for s in console_run.spans if s["name"].startswith("grpc.health")]


class _Collector(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self) -> None:
        self.requests: list[trace_service_pb2.ExportTraceServiceRequest] = []

    def Export(self, request: Any, context: Any) -> trace_service_pb2.ExportTraceServiceResponse:
        self.requests.append(request)
        return trace_service_pb2.ExportTraceServiceResponse()


@pytest.fixture
def collector() -> Iterator[tuple[str, _Collector]]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = _Collector()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"http://127.0.0.1:{port}", servicer
    finally:
        server.stop(None)


def test_otlp_exporter_sends_spans_to_the_endpoint(collector: tuple[str, _Collector]) -> None:
    endpoint, received = collector
    api, trace_id = f"127.0.0.1:{free_port()}", uuid.uuid4().hex
    env = {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint}
    with daemon_process("--listen", api, env=env) as proc:
        wait_serving(api, SERVICE)
        with grpc.insecure_channel(api) as ch:
            pb_grpc.MemoryServiceStub(ch).GetStats(pb.GetStatsRequest(ref=REF), metadata=traceparent(trace_id),
                                                   timeout=10)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0  # exit flushes the batch processor
    spans = [s for r in received.requests for rs in r.resource_spans for ss in rs.scope_spans for s in ss.spans]
    resource = {a.key: a.value.string_value for r in received.requests for rs in r.resource_spans
                for a in rs.resource.attributes}
    assert resource["service.name"] == "memoryd" and resource["service.version"] == memoryd.__version__
    (server,) = [s for s in spans if s.trace_id.hex() == trace_id and s.name == f"{SERVICE}/GetStats"]
    assert server.parent_span_id.hex() == CALLER_SPAN
    assert {s.name for s in spans if s.trace_id.hex() == trace_id} == {f"{SERVICE}/GetStats", "embedded meta"}


def test_unknown_exporter_is_a_usage_error() -> None:
    with daemon_process(env={"OTEL_TRACES_EXPORTER": "carrier-pigeon"}) as proc:
        assert proc.wait(timeout=30) == 2
        assert proc.stderr is not None
        assert "OTEL_TRACES_EXPORTER" in proc.stderr.read().decode()


OFF_SCRIPT = textwrap.dedent("""
    import asyncio, sys
    import memoryd.cli  # everything the daemon imports
    from memoryd import tracing
    from memoryd_client import AsyncMemoryClient
    from tests.support import running_server

    async def main():
        assert not tracing.configure({"OTEL_TRACES_EXPORTER": "none"})
        async with running_server() as srv, AsyncMemoryClient(srv.address) as client:
            await client.append("default", [{"role": "user", "content": "hi"}], key="k")
            await client.flush("default", key="k")
    asyncio.run(main())
    # redis-py 8.2 imports the OpenTelemetry API and opentelemetry.sdk.metrics itself when
    # they are installed (its optional command metrics); memoryd loads no tracing SDK,
    # exporter or tracer provider while off.
    loaded = sorted(m for m in sys.modules if m.startswith(("opentelemetry.sdk.trace", "opentelemetry.exporter")))
    assert not loaded, loaded
    from opentelemetry import trace
    assert type(trace.get_tracer_provider()).__name__ == "ProxyTracerProvider"
""")


def test_tracing_off_loads_no_tracer() -> None:
    """Off (the default) must cost nothing per call: no tracer, no wrapped handler or store."""
    done = subprocess.run([sys.executable, "-c", OFF_SCRIPT], cwd=REPO, capture_output=True, text=True,
                          timeout=60, env={k: v for k, v in os.environ.items() if not k.startswith("OTEL_")})
    assert done.returncode == 0, done.stderr


def test_server_faults_are_span_errors(tmp_path: Path) -> None:
    api, trace_id = f"127.0.0.1:{free_port()}", uuid.uuid4().hex
    redis = start_standalone(tmp_path / "redis")
    with daemon_process("--listen", api, "--redis-url", redis.url,
                        env={"OTEL_TRACES_EXPORTER": "console"}) as proc:
        try:
            wait_serving(api, SERVICE)
        finally:
            redis.stop()  # Redis goes away: calls fail UNAVAILABLE
        with grpc.insecure_channel(api) as ch, pytest.raises(grpc.RpcError) as failed:
            pb_grpc.MemoryServiceStub(ch).GetStats(pb.GetStatsRequest(ref=REF), metadata=traceparent(trace_id),
                                                   timeout=10)
        assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        assert proc.stdout is not None
        spans = [s for s in parse_console(proc.stdout.read().decode()) if s["context"]["trace_id"] == "0x" + trace_id]
    by_name = {s["name"]: s for s in spans}
    server = by_name[f"{SERVICE}/GetStats"]
    assert server["status"]["status_code"] == "ERROR" and server["attributes"]["error.type"] == "UNAVAILABLE"
    assert by_name["redis meta"]["status"]["status_code"] == "ERROR"
    assert by_name["redis meta"]["attributes"]["error.type"] == "StoreUnavailable"
    assert not any(s["events"] for s in spans)  # no exception events (their messages)
