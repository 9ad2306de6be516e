"""Prometheus metrics of one daemon, in a registry of its own.

Each ``Metrics`` owns a ``CollectorRegistry`` (two in-process servers in a test never
collide) and serves it on its own port from prometheus-client's HTTP thread, which
keeps answering while the event loop is busy. Labels are bounded: memory ids come
from the project configuration (anything else is reported as ``_other``), operations
and statuses are fixed sets, gRPC methods are the registered ones. Instance keys are
never a label. Labelled children are bound once and cached (``.labels()`` costs more
than the observation itself). The registry also carries prometheus-client's process,
platform and GC collectors (``process_*``, ``python_*``), as the default registry would.
"""

from __future__ import annotations

import asyncio
import platform
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from importlib.metadata import version as _version
from types import TracebackType
from typing import Any, Protocol, runtime_checkable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from memoryd import __version__
from memoryd.errors import MemorydError
from memoryd.settings import Settings

# Resolve 100 µs .. 1 s (prometheus' defaults start at 5 ms: useless for a ~1 ms append).
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
LOCK_WAIT_BUCKETS = (*LATENCY_BUCKETS, 5.0, 10.0)  # waits run up to lock_acquire_timeout
BREAKER_STATES = {"closed": 0.0, "half-open": 1.0, "open": 2.0}
OTHER = "_other"
DEFAULT_MAX_TRACKED = 10_000


def build_labels() -> dict[str, str]:
    """``memoryd_build_info``'s labels: what a bug report needs to know about this process."""
    return {"version": __version__, "python": platform.python_version(),
            "grpcio": _version("grpcio"), "redis_py": _version("redis")}


@runtime_checkable
class PooledStore(Protocol):
    """What a store with a connection pool shows the metrics (the Redis store does)."""

    observe_command: Callable[[float], None] | None

    @property
    def in_flight(self) -> int: ...

    @property
    def pool_size(self) -> int: ...


def status_label(exc: BaseException | None) -> str:
    """The ``status`` label of an operation that ended with ``exc`` (None: success)."""
    if exc is None:
        return "ok"
    if isinstance(exc, MemorydError):
        return exc.status.value
    if isinstance(exc, asyncio.CancelledError):
        return "cancelled"
    return "internal"


class _TokensHeld(Collector):
    """``memoryd_tokens_held{memory_id}``: sum of the last-seen token totals of instances.

    Per resource it remembers, for every instance this daemon wrote or read recently
    (by instance hash, in memory only), the total the store last reported. An entry
    is dropped when the resource's TTL has passed since it was last seen (the store
    expires the instance then, unless another daemon keeps it alive), when the
    instance is cleared, or -- beyond ``max_tracked`` instances per resource -- the
    least recently seen one. Collected from the HTTP thread, hence the lock.
    """

    def __init__(self, clock: Callable[[], float], max_tracked: int) -> None:
        self._clock = clock
        self._max = max_tracked
        self._lock = threading.Lock()
        # memory_id -> instance hash -> (tokens, expires_at or None)
        self._seen: dict[str, OrderedDict[str, tuple[int, float | None]]] = {}
        self._sums: dict[str, int] = {}

    def observe(self, memory_id: str, instance: str, tokens: int, ttl_s: float | None) -> None:
        now = self._clock()
        with self._lock:
            seen = self._seen.setdefault(memory_id, OrderedDict())
            old = seen.pop(instance, None)
            delta = tokens - (old[0] if old else 0)
            seen[instance] = (tokens, None if ttl_s is None else now + ttl_s)
            while len(seen) > self._max:
                _, (dropped, _) = seen.popitem(last=False)
                delta -= dropped
            self._sums[memory_id] = self._sums.get(memory_id, 0) + delta
            self._expire(memory_id, now)

    def forget(self, memory_id: str, instance: str) -> None:
        with self._lock:
            old = self._seen.get(memory_id, OrderedDict()).pop(instance, None)
            if old is not None:
                self._sums[memory_id] -= old[0]

    def _expire(self, memory_id: str, now: float) -> None:
        seen = self._seen[memory_id]
        # Entries are in last-seen order; with one TTL per resource that is expiry order too.
        while seen:
            instance, (tokens, expires) = next(iter(seen.items()))
            if expires is None or expires > now:
                return
            del seen[instance]
            self._sums[memory_id] -= tokens

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "memoryd_tokens_held",
            "Tokens held by the instances of a resource this daemon saw recently (last-seen totals, "
            "dropped after the resource TTL); see docs/observability.md.",
            labels=["memory_id"],
        )
        now = self._clock()
        with self._lock:
            for memory_id in self._seen:
                self._expire(memory_id, now)
                family.add_metric([memory_id], float(self._sums[memory_id]))
        yield family

    def describe(self) -> Iterator[Metric]:
        yield GaugeMetricFamily("memoryd_tokens_held", "", labels=["memory_id"])


class OperationTimer:
    """``with metrics.operation("append", memory_id):`` -- observes duration and status."""

    __slots__ = ("_memory_id", "_metrics", "_operation", "_start")

    def __init__(self, metrics: Metrics, operation: str, memory_id: str) -> None:
        self._metrics = metrics
        self._operation = operation
        self._memory_id = memory_id
        self._start = 0.0

    def __enter__(self) -> OperationTimer:
        self._start = time.perf_counter()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._metrics.observe_operation(
            self._operation, self._memory_id, status_label(exc), time.perf_counter() - self._start
        )


class _NoTimer:
    __slots__ = ()

    def __enter__(self) -> _NoTimer:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


_NO_TIMER = _NoTimer()


@dataclass(frozen=True, slots=True)
class GrpcMethod:
    """Bound children of the grpc_server_* families for one registered method."""

    started: Any
    handling: Any
    handled: Callable[[str], Any]
    streams: Any  # memoryd_open_streams child for streaming methods, None for unary ones


class Metrics:
    """Every memoryd metric family; ``enabled=False`` makes each recording call a no-op.

    ``resources``: the configured memory ids. When given, any other memory id is
    recorded as ``_other`` so a client sending random ids cannot grow the label set.
    """

    def __init__(
        self,
        *,
        enabled: bool = True,
        resources: Iterable[str] | None = None,
        clock: Callable[[], float] = time.monotonic,
        max_tracked_instances: int = DEFAULT_MAX_TRACKED,
    ) -> None:
        self.enabled = enabled
        self.registry = CollectorRegistry()
        self._resources = None if resources is None else frozenset(resources)
        self._children: dict[tuple[object, ...], Any] = {}
        r = self.registry
        self.appended = Counter("memoryd_messages_appended", "Messages stored by Append.", ["memory_id"], registry=r)
        self.evicted = Counter(
            "memoryd_messages_evicted", "Messages removed from an instance by a flush (trimmed or summarised).",
            ["memory_id", "strategy"], registry=r,
        )
        self.flushes = Counter(
            "memoryd_flushes", "Flushes by flushing strategy and outcome.",
            ["memory_id", "strategy", "status"], registry=r,
        )
        self.operation_duration = Histogram(
            "memoryd_operation_duration_seconds", "Duration of memory operations inside the daemon.",
            ["operation", "memory_id", "status"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.tokens_held = _TokensHeld(clock, max_tracked_instances)
        r.register(self.tokens_held)
        self.tokens_saved = Counter(
            "memoryd_tokens_saved", "Tokens removed from instances by flushing (net of the summary written).",
            ["memory_id"], registry=r,
        )
        self.config_resolutions = Counter(
            "memoryd_config_resolutions", "References resolved, by configuration level (1, 2, 3 or direct).",
            ["level"], registry=r,
        )
        self.privacy_excluded = Counter(
            "memoryd_privacy_excluded", "Messages not stored because they were not persistable.",
            ["memory_id"], registry=r,
        )
        self.privacy_redactions = Counter(
            "memoryd_privacy_redactions", "Redaction pattern matches replaced before storing.",
            ["memory_id"], registry=r,
        )
        self.breaker_state = Gauge(
            "memoryd_circuit_breaker_state", "Circuit breaker state: 0 closed, 1 half-open, 2 open.",
            ["breaker"], registry=r,
        )
        self.lock_wait = Histogram(
            "memoryd_lock_wait_seconds", "Time spent acquiring an instance lock, by outcome.",
            ["memory_id", "outcome"], buckets=LOCK_WAIT_BUCKETS, registry=r,
        )
        self.lock_contention = Counter(
            "memoryd_lock_contention", "Lock acquisitions that found the instance lock held by another holder.",
            ["memory_id"], registry=r,
        )
        grpc_labels = ["grpc_service", "grpc_method", "grpc_type"]
        self.grpc_started = Counter("grpc_server_started", "RPCs started on the server.", grpc_labels, registry=r)
        self.grpc_handled = Counter(
            "grpc_server_handled", "RPCs completed on the server, regardless of success or failure.",
            [*grpc_labels, "grpc_code"], registry=r,
        )
        self.grpc_handling = Histogram(
            "grpc_server_handling_seconds", "Response latency of RPCs handled by the server.",
            grpc_labels, buckets=LATENCY_BUCKETS, registry=r,
        )
        self.open_streams = Gauge(
            "memoryd_open_streams", "Streaming RPCs in progress (Read, Watch, reflection), by method.",
            ["grpc_service", "grpc_method"], registry=r,
        )
        self.build_info = Gauge(
            "memoryd_build_info", "Always 1; the labels say which memoryd, Python, grpcio and redis-py run.",
            list(build_labels()), registry=r,
        )
        self.build_info.labels(**build_labels()).set(1)
        self.ready = Gauge(
            "memoryd_ready", "1 while the daemon reports readiness SERVING (store reachable, breaker not "
            "open, not stopping), else 0; read at scrape time.", registry=r,
        )
        ProcessCollector(registry=r)  # process_cpu_seconds_total, process_resident_memory_bytes, ...
        PlatformCollector(registry=r)  # python_info
        GCCollector(registry=r)  # python_gc_*
        # Created by track_store, so a daemon without Redis exports no empty Redis families.
        self.redis_command: Histogram | None = None

    @classmethod
    def from_settings(cls, settings: Settings, resources: Iterable[str]) -> Metrics:
        """Enabled exactly when ``--metrics-listen`` is set; ``resources``: the project's memory ids."""
        return cls(enabled=bool(settings.metrics_listen), resources=resources)

    # -- helpers ---------------------------------------------------------------------

    def _mid(self, memory_id: str) -> str:
        if self._resources is None or memory_id in self._resources:
            return memory_id
        return OTHER

    def _child(self, family: Any, *labels: str) -> Any:
        key = (id(family), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = family.labels(*labels)
        return child

    # -- recording (all no-ops when disabled) ----------------------------------------

    def messages_appended(self, memory_id: str, count: int) -> None:
        if self.enabled and count:
            self._child(self.appended, self._mid(memory_id)).inc(count)

    def messages_evicted(self, memory_id: str, strategy: str, count: int) -> None:
        if self.enabled and count:
            self._child(self.evicted, self._mid(memory_id), strategy).inc(count)

    def flushed(self, memory_id: str, strategy: str, status: str, tokens_saved: int = 0) -> None:
        """One flush ended with ``status`` ("ok", or a status_label); ``tokens_saved`` = before - after."""
        if not self.enabled:
            return
        mid = self._mid(memory_id)
        self._child(self.flushes, mid, strategy, status).inc()
        if tokens_saved > 0:
            self._child(self.tokens_saved, mid).inc(tokens_saved)

    def operation(self, operation: str, memory_id: str) -> OperationTimer | _NoTimer:
        return OperationTimer(self, operation, memory_id) if self.enabled else _NO_TIMER

    def observe_operation(self, operation: str, memory_id: str, status: str, seconds: float) -> None:
        if self.enabled:
            self._child(self.operation_duration, operation, self._mid(memory_id), status).observe(seconds)

    def instance_tokens(self, memory_id: str, instance_hash: str, tokens: int, ttl_s: float | None) -> None:
        """The store reported ``tokens`` held by an instance (after append, flush, read of meta)."""
        if self.enabled:
            self.tokens_held.observe(self._mid(memory_id), instance_hash, tokens, ttl_s)

    def instance_removed(self, memory_id: str, instance_hash: str) -> None:
        """The instance was cleared or deleted (Clear, EndWorkflow)."""
        if self.enabled:
            self.tokens_held.forget(self._mid(memory_id), instance_hash)

    def config_resolved(self, level: int | str) -> None:
        if self.enabled:
            self._child(self.config_resolutions, str(level)).inc()

    def privacy(self, memory_id: str, *, excluded: int = 0, redactions: int = 0) -> None:
        if not self.enabled:
            return
        mid = self._mid(memory_id)
        if excluded:
            self._child(self.privacy_excluded, mid).inc(excluded)
        if redactions:
            self._child(self.privacy_redactions, mid).inc(redactions)

    def set_breaker_state(self, breaker: str, state: str) -> None:
        if self.enabled:
            self._child(self.breaker_state, breaker).set(BREAKER_STATES.get(state, float("nan")))

    def track_breaker(self, breaker: str, state: Callable[[], str]) -> None:
        """Read the breaker's state (``"closed"``/``"half-open"``/``"open"``) at every scrape."""
        if self.enabled:
            self._child(self.breaker_state, breaker).set_function(
                lambda: BREAKER_STATES.get(state(), float("nan"))
            )

    def lock_acquire(self, memory_id: str, seconds: float, *, acquired: bool, contended: bool) -> None:
        """One lock acquisition attempt: how long it waited, whether it got the lock, whether it was held."""
        if not self.enabled:
            return
        mid = self._mid(memory_id)
        self._child(self.lock_wait, mid, "acquired" if acquired else "timeout").observe(seconds)
        if contended:
            self._child(self.lock_contention, mid).inc()

    def grpc_method(self, service: str, method: str, rpc_type: str) -> GrpcMethod:
        """Children for one method (``handlers.Listener`` asks once per method)."""
        labels = (service, method, rpc_type)
        return GrpcMethod(
            started=self._child(self.grpc_started, *labels),
            handling=self._child(self.grpc_handling, *labels),
            handled=lambda code: self._child(self.grpc_handled, *labels, code),
            streams=None if rpc_type == "unary" else self._child(self.open_streams, service, method),
        )

    def track_ready(self, ready: Callable[[], bool]) -> None:
        """Read the daemon's readiness at every scrape (``memoryd_ready``)."""
        if self.enabled:
            self.ready.set_function(lambda: 1.0 if ready() else 0.0)

    def track_store(self, store: object) -> None:
        """Redis command latency and pool usage of a pooled store (no-op for the embedded one).

        The store calls ``observe_command(seconds)`` once per command or script round trip
        (pool wait excluded); the pool gauges are read at scrape time.
        """
        if not self.enabled or not isinstance(store, PooledStore):
            return
        pooled: PooledStore = store
        r = self.registry
        if self.redis_command is None:
            self.redis_command = Histogram(
                "memoryd_redis_command_duration_seconds",
                "Duration of one Redis round trip of the store (a command, script or pipeline; each "
                "retry counts once), from the moment it holds a connection.",
                buckets=LATENCY_BUCKETS, registry=r,
            )
            in_use = Gauge("memoryd_redis_pool_connections_in_use",
                           "Store calls holding a Redis connection right now.", registry=r)
            size = Gauge("memoryd_redis_pool_max_connections",
                         "Connections the store may hold at once (the Redis URL's max_connections); "
                         "calls beyond wait for one.", registry=r)
            in_use.set_function(lambda: float(pooled.in_flight))
            size.set(pooled.pool_size)
        pooled.observe_command = self.redis_command.observe

    # -- exposition ------------------------------------------------------------------

    def start_http(self, address: str) -> MetricsEndpoint:
        """Serve ``/metrics`` on ``HOST:PORT`` from a thread; a no-op endpoint when disabled or empty."""
        if not self.enabled or not address:
            return MetricsEndpoint(None, None, 0)
        host, port = parse_address(address)
        httpd, thread = start_http_server(port, addr=host, registry=self.registry)
        return MetricsEndpoint(httpd, thread, int(httpd.server_port))


def parse_address(address: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[V6]:PORT`` or ``:PORT`` (all interfaces) -> (host, port)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"metrics_listen: expected HOST:PORT, got {address!r}")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


class MetricsEndpoint:
    """Handle of the /metrics HTTP server. ``stop()`` blocks up to ~0.5 s: call it via ``asyncio.to_thread``."""

    def __init__(self, httpd: Any, thread: threading.Thread | None, port: int) -> None:
        self._httpd = httpd
        self._thread = thread
        self.port = port

    def stop(self) -> None:
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join()
        self._httpd = None
