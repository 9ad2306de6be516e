"""Metrics: names and labels operators query, exact counts, bounded labels, /metrics over HTTP."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from memoryd.errors import LockContention, NotFound
from memoryd.metrics import Metrics, parse_address


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def value(m: Metrics, name: str, **labels: str) -> float | None:
    return m.registry.get_sample_value(name, labels)


def test_domain_counters_count_exact_amounts() -> None:
    m = Metrics(resources=["chat"])
    m.messages_appended("chat", 3)
    m.messages_appended("chat", 2)
    m.messages_evicted("chat", "fifo", 4)
    m.flushed("chat", "hybrid_summary", "ok", tokens_saved=120)
    m.flushed("chat", "hybrid_summary", "aborted")
    m.config_resolved(2)
    m.config_resolved("direct")
    m.privacy("chat", excluded=1, redactions=5)
    assert value(m, "memoryd_messages_appended_total", memory_id="chat") == 5
    assert value(m, "memoryd_messages_evicted_total", memory_id="chat", strategy="fifo") == 4
    assert value(m, "memoryd_flushes_total", memory_id="chat", strategy="hybrid_summary", status="ok") == 1
    assert value(m, "memoryd_flushes_total", memory_id="chat", strategy="hybrid_summary", status="aborted") == 1
    assert value(m, "memoryd_tokens_saved_total", memory_id="chat") == 120
    assert value(m, "memoryd_config_resolutions_total", level="2") == 1
    assert value(m, "memoryd_config_resolutions_total", level="direct") == 1
    assert value(m, "memoryd_privacy_excluded_total", memory_id="chat") == 1
    assert value(m, "memoryd_privacy_redactions_total", memory_id="chat") == 5


def test_unknown_memory_ids_share_one_label_value() -> None:
    m = Metrics(resources=["chat"])
    for i in range(50):
        m.messages_appended(f"random-{i}", 1)
    assert value(m, "memoryd_messages_appended_total", memory_id="_other") == 50
    families = {f.name: f for f in text_string_to_metric_families(_exposition(m))}
    ids = {s.labels["memory_id"] for s in families["memoryd_messages_appended"].samples}
    assert ids == {"_other"}


def test_operation_timer_records_status_and_resolves_sub_millisecond_latency() -> None:
    m = Metrics(resources=["chat"])
    with m.operation("append", "chat"):
        pass
    with pytest.raises(NotFound), m.operation("append", "chat"):
        raise NotFound("x")
    with pytest.raises(RuntimeError), m.operation("flush", "chat"):
        raise RuntimeError("boom")
    m.observe_operation("read", "chat", "ok", 0.0002)
    name = "memoryd_operation_duration_seconds"
    assert value(m, f"{name}_count", operation="append", memory_id="chat", status="ok") == 1
    assert value(m, f"{name}_count", operation="append", memory_id="chat", status="not_found") == 1
    assert value(m, f"{name}_count", operation="flush", memory_id="chat", status="internal") == 1
    read = {"operation": "read", "memory_id": "chat", "status": "ok"}
    assert value(m, f"{name}_bucket", **read, le="0.0001") == 0
    assert value(m, f"{name}_bucket", **read, le="0.00025") == 1
    assert value(m, f"{name}_bucket", **read, le="1.0") == 1


def test_tokens_held_sums_last_seen_totals_per_resource() -> None:
    clock = Clock()
    m = Metrics(resources=["chat", "prefs"], clock=clock)
    m.instance_tokens("chat", "h1", 100, ttl_s=60)
    m.instance_tokens("chat", "h2", 50, ttl_s=60)
    m.instance_tokens("prefs", "h3", 7, ttl_s=None)
    assert value(m, "memoryd_tokens_held", memory_id="chat") == 150
    m.instance_tokens("chat", "h1", 40, ttl_s=60)  # a flush shrank h1: the new total replaces the old
    assert value(m, "memoryd_tokens_held", memory_id="chat") == 90
    m.instance_removed("chat", "h2")  # Clear
    assert value(m, "memoryd_tokens_held", memory_id="chat") == 40
    assert value(m, "memoryd_tokens_held", memory_id="prefs") == 7


def test_tokens_held_drops_instances_after_their_ttl() -> None:
    clock = Clock()
    m = Metrics(clock=clock)
    m.instance_tokens("chat", "old", 100, ttl_s=60)
    clock.now += 30
    m.instance_tokens("chat", "new", 10, ttl_s=60)
    clock.now += 31  # "old" expired in the store by now; "new" has 29 s left
    assert value(m, "memoryd_tokens_held", memory_id="chat") == 10
    clock.now += 30
    assert value(m, "memoryd_tokens_held", memory_id="chat") == 0


def test_tokens_held_tracks_a_bounded_number_of_instances() -> None:
    m = Metrics(clock=Clock(), max_tracked_instances=3)
    for i in range(5):
        m.instance_tokens("chat", f"h{i}", 10 + i, ttl_s=None)
    assert value(m, "memoryd_tokens_held", memory_id="chat") == 12 + 13 + 14  # the 3 most recently seen


def test_breaker_state_is_read_at_scrape_time() -> None:
    m = Metrics()
    state = {"now": "closed"}
    m.track_breaker("redis", lambda: state["now"])
    assert value(m, "memoryd_circuit_breaker_state", breaker="redis") == 0
    state["now"] = "open"
    assert value(m, "memoryd_circuit_breaker_state", breaker="redis") == 2
    state["now"] = "half-open"
    assert value(m, "memoryd_circuit_breaker_state", breaker="redis") == 1
    m.set_breaker_state("other", "open")
    assert value(m, "memoryd_circuit_breaker_state", breaker="other") == 2


def test_lock_wait_and_contention() -> None:
    m = Metrics()
    m.lock_acquire("chat", 0.0003, acquired=True, contended=False)
    m.lock_acquire("chat", 0.02, acquired=True, contended=True)
    m.lock_acquire("chat", 2.0, acquired=False, contended=True)
    assert value(m, "memoryd_lock_wait_seconds_count", memory_id="chat", outcome="acquired") == 2
    assert value(m, "memoryd_lock_wait_seconds_count", memory_id="chat", outcome="timeout") == 1
    assert value(m, "memoryd_lock_contention_total", memory_id="chat") == 2


def test_operation_status_of_a_lock_timeout_is_aborted() -> None:
    m = Metrics()
    with pytest.raises(LockContention), m.operation("flush", "chat"):
        raise LockContention("busy")
    assert value(m, "memoryd_operation_duration_seconds_count",
                 operation="flush", memory_id="chat", status="aborted") == 1


def test_cancellation_is_its_own_status() -> None:
    m = Metrics()
    with pytest.raises(asyncio.CancelledError), m.operation("read", "chat"):
        raise asyncio.CancelledError
    assert value(m, "memoryd_operation_duration_seconds_count",
                 operation="read", memory_id="chat", status="cancelled") == 1


def test_disabled_metrics_record_nothing_and_serve_nothing() -> None:
    m = Metrics(enabled=False)
    m.messages_appended("chat", 3)
    with m.operation("append", "chat"):
        pass
    m.instance_tokens("chat", "h", 5, ttl_s=None)
    m.track_breaker("redis", lambda: "open")
    assert value(m, "memoryd_messages_appended_total", memory_id="chat") is None
    assert value(m, "memoryd_operation_duration_seconds_count",
                 operation="append", memory_id="chat", status="ok") is None
    assert value(m, "memoryd_tokens_held", memory_id="chat") is None
    assert value(m, "memoryd_circuit_breaker_state", breaker="redis") is None
    endpoint = m.start_http("127.0.0.1:0")
    assert endpoint.port == 0
    endpoint.stop()


def test_two_instances_do_not_share_samples() -> None:
    a, b = Metrics(), Metrics()
    a.messages_appended("chat", 1)
    assert value(a, "memoryd_messages_appended_total", memory_id="chat") == 1
    assert value(b, "memoryd_messages_appended_total", memory_id="chat") is None


def test_every_family_is_exposed_with_its_labels() -> None:
    m = Metrics()
    m.messages_appended("c", 1)
    m.messages_evicted("c", "fifo", 1)
    m.flushed("c", "fifo", "ok", tokens_saved=1)
    m.observe_operation("append", "c", "ok", 0.001)
    m.instance_tokens("c", "h", 1, ttl_s=None)
    m.config_resolved(1)
    m.privacy("c", excluded=1, redactions=1)
    m.set_breaker_state("redis", "closed")
    m.lock_acquire("c", 0.001, acquired=True, contended=True)
    g = m.grpc_method("memoryd.v1.MemoryService", "Append", "unary")
    g.started.inc()
    g.handled("OK").inc()
    g.handling.observe(0.001)
    m.grpc_method("memoryd.v1.MemoryService", "Watch", "server_stream").streams.inc()
    families = list(text_string_to_metric_families(_exposition(m)))
    runtime = {f.name for f in families if f.name.startswith(("process_", "python_"))}
    assert {"process_cpu_seconds", "process_resident_memory_bytes", "process_start_time_seconds",
            "python_info", "python_gc_collections"} <= runtime
    labels = {f.name: set().union(*(s.labels for s in f.samples)) - {"le"}
              for f in families if not f.name.endswith("_created") and f.name not in runtime}
    assert labels == {
        "memoryd_messages_appended": {"memory_id"},
        "memoryd_messages_evicted": {"memory_id", "strategy"},
        "memoryd_flushes": {"memory_id", "strategy", "status"},
        "memoryd_operation_duration_seconds": {"operation", "memory_id", "status"},
        "memoryd_tokens_held": {"memory_id"},
        "memoryd_tokens_saved": {"memory_id"},
        "memoryd_config_resolutions": {"level"},
        "memoryd_privacy_excluded": {"memory_id"},
        "memoryd_privacy_redactions": {"memory_id"},
        "memoryd_circuit_breaker_state": {"breaker"},
        "memoryd_lock_wait_seconds": {"memory_id", "outcome"},
        "memoryd_lock_contention": {"memory_id"},
        "grpc_server_started": {"grpc_service", "grpc_method", "grpc_type"},
        "grpc_server_handled": {"grpc_service", "grpc_method", "grpc_type", "grpc_code"},
        "grpc_server_handling_seconds": {"grpc_service", "grpc_method", "grpc_type"},
        "memoryd_open_streams": {"grpc_service", "grpc_method"},
        "memoryd_build_info": {"version", "python", "grpcio", "redis_py"},
        "memoryd_ready": set(),
    }


def test_http_endpoint_serves_the_registry_and_stops() -> None:
    m = Metrics()
    m.messages_appended("chat", 7)
    endpoint = m.start_http("127.0.0.1:0")
    try:
        assert endpoint.port > 0
        with urllib.request.urlopen(f"http://127.0.0.1:{endpoint.port}/metrics", timeout=5) as resp:
            body = resp.read().decode()
        assert 'memoryd_messages_appended_total{memory_id="chat"} 7.0' in body
    finally:
        endpoint.stop()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"http://127.0.0.1:{endpoint.port}/metrics", timeout=5)


@pytest.mark.parametrize(("address", "expected"), [
    ("0.0.0.0:9090", ("0.0.0.0", 9090)),
    ("127.0.0.1:0", ("127.0.0.1", 0)),
    ("[::1]:9100", ("::1", 9100)),
    (":9090", ("0.0.0.0", 9090)),
])
def test_parse_address(address: str, expected: tuple[str, int]) -> None:
    assert parse_address(address) == expected


@pytest.mark.parametrize("address", ["9090", "host:", "host:port", "h:70000"])
def test_parse_address_rejects_garbage(address: str) -> None:
    with pytest.raises(ValueError, match="metrics_listen"):
        parse_address(address)


def _exposition(m: Metrics) -> str:
    from prometheus_client import generate_latest

    return generate_latest(m.registry).decode()
