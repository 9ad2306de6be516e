"""`memoryd serve` as a real process: health, reflection, API, SIGTERM."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import signal
import stat
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from memoryd_client import MemoryClient, RetryPolicy, UnavailableError, UnimplementedError

from tests.redis_servers import RedisProcess, _server_args
from tests.support import daemon_process, free_port, wait_serving

GRACE_S = 3.0


def _reflection_services(address: str) -> list[str]:
    with grpc.insecure_channel(address) as ch:
        stub = reflection_pb2_grpc.ServerReflectionStub(ch)
        responses = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
        return [s.name for r in responses for s in r.list_services_response.service]


def test_serve_health_reflection_roundtrip_and_sigterm() -> None:
    api, probe = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    with daemon_process("--listen", api, "--health-listen", probe, "--shutdown-grace", str(GRACE_S)) as proc:
        wait_serving(probe)
        wait_serving(api, "memoryd.v1.MemoryService")
        with grpc.insecure_channel(probe) as ch:
            live = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service="liveness"))
            assert live.status == health_pb2.HealthCheckResponse.SERVING
        assert "memoryd.v1.MemoryService" in _reflection_services(api)
        with MemoryClient(api) as c:
            c.append("default", [{"role": "user", "content": "from e2e ✓"}], key="e2e")
            assert [m.content for m in c.read("default", key="e2e", view="raw")] == ["from e2e ✓"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=GRACE_S + 5) == 0
        assert proc.stderr is not None
        assert b'"event": "stopped"' in proc.stderr.read()


def test_probe_listener_serves_only_health() -> None:
    api, probe = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    with daemon_process("--listen", api, "--health-listen", probe) as proc:
        wait_serving(probe)
        with MemoryClient(probe) as c, pytest.raises(UnimplementedError):
            c.stats("default", key="k")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0


def test_unix_socket_listener(tmp_path: Path) -> None:
    sock = tmp_path / "memoryd.sock"
    with daemon_process("--listen", f"unix:{sock}") as proc:
        wait_serving(f"unix:{sock}")
        assert stat.S_IMODE(os.stat(sock).st_mode) == 0o660
        with MemoryClient(f"unix:{sock}") as c:
            c.append("default", [{"role": "user", "content": "over a socket"}], key="u")
            assert c.stats("default", key="u").message_count == 1
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0


def test_env_settings_and_bad_flags() -> None:
    port = free_port()
    with daemon_process(env={"MEMORYD_LISTEN": f"127.0.0.1:{port}"}) as proc:
        wait_serving(f"127.0.0.1:{port}")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    bad = subprocess.run([sys.executable, "-m", "memoryd", "serve", "--max-batch-messages", "lots"],
                         capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2 and "--max-batch-messages" in bad.stderr
    exposed = subprocess.run([sys.executable, "-m", "memoryd", "serve", "--listen", "0.0.0.0:0"],
                             capture_output=True, text=True, timeout=30)
    assert exposed.returncode == 2 and "--allow-insecure-bind" in exposed.stderr


@pytest.mark.parametrize("store", ["embedded", "redis"])
def test_cancelled_read_stream_does_not_hurt_the_daemon(store: str, request: pytest.FixtureRequest) -> None:
    """Regression: a consumer that walks away mid-stream once crashed grpcio (context.peer()).
    The read has its next page in flight when the client cancels: it is dropped quietly."""
    api = f"127.0.0.1:{free_port()}"
    extra = ["--redis-url", request.getfixturevalue("redis_standalone").url] if store == "redis" else []
    key = f"cancel-{uuid.uuid4().hex}"
    with daemon_process("--listen", api, "--metrics-listen", f"127.0.0.1:{free_port()}", *extra) as proc:
        wait_serving(api)
        with MemoryClient(api) as c:
            c.append("default", [{"role": "user", "content": f"m{i}"} for i in range(25)], key=key)
            for _ in range(3):
                stream = c.read("default", key=key, view="raw", chunk_size=1)
                assert next(stream).content == "m0"
                stream.close()  # cancels the call
            assert [m.content for m in c.read_all("default", key=key, view="raw", chunk_size=2)] == [
                f"m{i}" for i in range(25)]
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert proc.stderr is not None
        logged = proc.stderr.read().decode()
        assert "Traceback" not in logged and "never retrieved" not in logged


def test_logs_carry_an_instance_hash_keyed_with_the_deployment_secret() -> None:
    """The issue's attack: the unkeyed instance hash in a log line was reversed to its key
    (``support-48213``) by hashing likely keys. With ``MEMORYD_LOG_HASH_KEY`` the logged hash is
    HMAC-SHA256(secret, instance id): stable for the instance, different under another secret,
    and matching no unkeyed hash of the key or the instance id."""
    key, instance_id = "support-48213", "default/default/support-48213"
    secrets = {"one": "deployment secret one", "two": "deployment secret two"}
    apis = {name: f"127.0.0.1:{free_port()}" for name in secrets}
    logged: dict[str, str] = {}
    with contextlib.ExitStack() as stack:
        procs = {name: stack.enter_context(daemon_process("--listen", apis[name], "--log-level", "debug",
                                                          env={"MEMORYD_LOG_HASH_KEY": secret}))
                 for name, secret in secrets.items()}
        for name, proc in procs.items():
            wait_serving(apis[name], "memoryd.v1.MemoryService")
            with MemoryClient(apis[name]) as c:
                c.append("default", [{"role": "user", "content": "hello"}], key=key)
                c.stats("default", key=key)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=10) == 0
            assert proc.stderr is not None
            logged[name] = proc.stderr.read().decode()
    unkeyed = {hashlib.new(alg, t.encode()).hexdigest()[:16]
               for alg in ("md5", "sha1", "sha256", "sha512", "blake2b") for t in (key, instance_id)}
    hashes = {}
    for name, text in logged.items():
        lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
        found = {line["instance_hash"] for line in lines if "instance_hash" in line}
        assert len(found) == 1 and len([line for line in lines if "instance_hash" in line]) >= 2  # both calls
        assert key not in text
        assert not any(h in text for h in unkeyed), "an unkeyed hash of the key is in the log"
        hashes[name] = found.pop()
    assert hashes["one"] == hmac.new(secrets["one"].encode(), instance_id.encode(), "sha256").hexdigest()[:16]
    assert hashes["two"] != hashes["one"]


def _breaker_gauge(metrics_port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    (line,) = [ln for ln in text.splitlines() if ln.startswith('memoryd_circuit_breaker_state{breaker="redis"}')]
    return float(line.rsplit(" ", 1)[1])


def _health(address: str, service: str) -> int:
    with grpc.insecure_channel(address) as ch:
        resp = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        return int(resp.status)


def test_a_daemon_started_before_redis_waits_for_it_instead_of_exiting(tmp_path: Path) -> None:
    """Regression (issue 15, item 4): with --redis-url pointing at a Redis that is not up yet,
    `memoryd serve` exited 1 and a native sidecar pod never started. The daemon keeps running:
    liveness SERVING, readiness NOT_SERVING, calls UNAVAILABLE; once redis-server starts on that
    port the daemon turns SERVING by itself and stores an append."""
    api, probe = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    redis_port, metrics_port = free_port(), free_port()
    redis_server = RedisProcess(redis_port, tmp_path / "redis", _server_args(redis_port, tmp_path / "redis"))
    serving, not_serving = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING
    with daemon_process("--listen", api, "--health-listen", probe, "--metrics-listen", f"127.0.0.1:{metrics_port}",
                        "--redis-url", f"redis://127.0.0.1:{redis_port}/0") as proc:
        try:
            wait_serving(probe, "liveness")  # what the startup and liveness probes ask
            assert proc.poll() is None
            for service in ("", "memoryd.v1.MemoryService"):
                assert _health(probe, service) == not_serving
            with MemoryClient(api, retry=RetryPolicy(attempts=1)) as c, pytest.raises(UnavailableError):
                c.append("default", [{"role": "user", "content": "too early"}], key="late")
            assert _breaker_gauge(metrics_port) == 2  # "open": calls fail fast, dashboards see the outage
            redis_server.start()
            wait_serving(probe, "memoryd.v1.MemoryService")  # by itself, polled with a deadline
            assert _health(probe, "liveness") == serving and _breaker_gauge(metrics_port) == 0
            with MemoryClient(api) as c:
                c.append("default", [{"role": "user", "content": "in time"}], key="late")
                assert [m.content for m in c.read("default", key="late", view="raw")] == ["in time"]
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=GRACE_S + 10) == 0
            assert proc.stderr is not None
            logged = proc.stderr.read().decode()
            assert logged.index('"event": "store_unreachable"') < logged.index('"event": "store_started"')
            assert "Traceback" not in logged
        finally:
            redis_server.stop()
