"""OpenTelemetry traces, configured by the standard ``OTEL_*`` environment variables.

Off unless ``OTEL_TRACES_EXPORTER`` names an exporter (``console``, ``otlp``...). The
OpenTelemetry default would be ``otlp``; a sidecar must not start exporting to a
collector nobody runs. When off, memoryd imports nothing of ``opentelemetry`` (redis-py
8.2 may, for its own metrics, when the package is installed), the RPC handlers and
the store are not wrapped, and the manager's two decorated flush steps check one
module variable: tracing off adds nothing to an append.

When on: a SERVER span per RPC (health and reflection excepted: kubelet probes would
flood the backend) continuing the caller's ``traceparent`` (the global propagator,
W3C trace context unless ``OTEL_PROPAGATORS`` says otherwise), a child span per store
call (one Redis script or pipeline each), the lock acquisition (the wait) and the fold
(flush planning). Attributes are ids, hashes and counts only, never content, keys or
error messages (a message may quote a prefix of client input): exceptions are
recorded as ``error.type``, the class name. The SDK reads the sampler
(``OTEL_TRACES_SAMPLER``), resource and exporter variables itself; spans are exported
from the SDK's batch thread, never on the event loop.

The server span is built here rather than by opentelemetry-instrumentation-grpc: its
grpc.aio server interceptor treats every response-streaming behaviour as an async
generator (grpc.health.v1 Watch writes with ``context.write`` and would fail), records
exception messages as span events, and would run as a per-call interceptor outside
``memoryd.handlers``.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from contextvars import ContextVar
from importlib.metadata import entry_points
from typing import Any, TypeVar

from memoryd import __version__, logs
from memoryd.keys import InstanceAddr
from memoryd.models import (
    KEEP_ALL_HISTORY,
    AppendOutcome,
    DeleteOutcome,
    FlushOutcome,
    FlushPlan,
    HistoryPolicy,
    InstanceMeta,
    InstanceState,
    NewMessage,
    StoredMessage,
    TailState,
)
from memoryd.store.base import LockLease, MemoryStore

T = TypeVar("T")
_tracer: Any = None  # opentelemetry.trace.Tracer while tracing is on
_get_current_span: Any = None  # opentelemetry.trace.get_current_span while tracing is on
# False inside a Watch: its store polls (about two a second, for as long as the
# client watches) would outnumber every other span. The Watch's own span stays.
_STORE_SPANS: ContextVar[bool] = ContextVar("memoryd_store_spans", default=True)
UNTRACED_STORE_CALLS = ("/memoryd.v1.MemoryService/Watch",)

# OTLP protocol -> exporter entry point, as the SDK's own auto-configuration maps them.
_OTLP_BY_PROTOCOL = {"grpc": "otlp_proto_grpc", "http/protobuf": "otlp_proto_http"}
# gRPC codes a server reports as span errors (OpenTelemetry's gRPC conventions).
_SERVER_ERRORS = frozenset({"UNKNOWN", "DEADLINE_EXCEEDED", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE",
                            "DATA_LOSS"})
# Log fields an RPC binds (memoryd.logs.annotate) that become server span attributes.
_CALL_ATTRIBUTES = (("memory_id", "memoryd.memory.id"), ("instance_hash", "memoryd.instance.hash"))


def exporter_names(env: Mapping[str, str]) -> list[str]:
    """Entry-point names of the span exporters ``env`` asks for; empty: tracing off."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    names = [n.strip() for n in env.get("OTEL_TRACES_EXPORTER", "").split(",") if n.strip()]
    if not names or names == ["none"]:
        return []
    protocol = (env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
                or "grpc").strip()
    out = []
    for name in names:
        if name == "otlp":
            if protocol not in _OTLP_BY_PROTOCOL:
                raise ValueError(f"OTEL_EXPORTER_OTLP_PROTOCOL: unsupported protocol {protocol!r} "
                                 f"(expected one of {', '.join(_OTLP_BY_PROTOCOL)})")
            name = _OTLP_BY_PROTOCOL[protocol]
        if name != "none":
            out.append(name)
    return out


def enabled() -> bool:
    return _tracer is not None


def configure(env: Mapping[str, str] | None = None) -> bool:
    """Install the SDK's tracer provider if ``OTEL_TRACES_EXPORTER`` asks for one; True when on.

    ValueError (a usage error) names the variable when an exporter is unknown or the
    ``memoryd[otel]`` extra is not installed.
    """
    global _tracer, _get_current_span
    env = os.environ if env is None else env
    names = exporter_names(env)
    if not names:
        return False
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
    except ImportError:
        raise ValueError("OTEL_TRACES_EXPORTER is set but the OpenTelemetry SDK is not installed "
                         "(pip install 'memoryd[otel]')") from None
    exporters: list[SpanExporter] = []
    for name in names:
        found = entry_points(group="opentelemetry_traces_exporter", name=name)
        if not found:
            raise ValueError(f"OTEL_TRACES_EXPORTER: no span exporter named {name!r} is installed "
                             "(console and otlp come with 'memoryd[otel]')")
        exporters.append(next(iter(found)).load()())
    attributes: dict[str, str] = {"service.version": __version__}
    if not env.get("OTEL_SERVICE_NAME") and "service.name=" not in env.get("OTEL_RESOURCE_ATTRIBUTES", ""):
        attributes["service.name"] = "memoryd"
    provider = TracerProvider(resource=Resource.create(attributes))  # sampler from OTEL_TRACES_SAMPLER
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    _tracer = provider.get_tracer("memoryd", __version__)
    _get_current_span = trace.get_current_span
    logs.TRACE_IDS = _current_ids
    return True


def _current_ids() -> tuple[str, str] | None:
    """Trace and span id of the current span, for the JSON log lines."""
    ctx = _get_current_span().get_span_context()
    if not ctx.is_valid:
        return None
    return format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")


def _error_type(span: Any, exc: BaseException) -> None:
    from opentelemetry.trace import Status, StatusCode

    span.set_attribute("error.type", type(exc).__name__)
    span.set_status(Status(StatusCode.ERROR, type(exc).__name__))


# -- the server span ---------------------------------------------------------------------

def server_behavior(
    behavior: Callable[..., Any],
    method: str,
    status_of: Callable[[Any, BaseException | None, float | None], Any],
) -> Callable[..., Any]:
    """``behavior`` (an RPC's wrapped handler) inside a SERVER span continuing the caller's trace.

    ``status_of`` is ``memoryd.handlers.status_of``: the gRPC code the client will see.
    Wrapped outside the access log, so its line carries the span's ids.
    """
    import time

    from opentelemetry import context as otel_context
    from opentelemetry import propagate, trace
    from opentelemetry.trace import SpanKind, Status, StatusCode

    tracer = _tracer
    service, _, name = method.lstrip("/").rpartition("/")
    span_name = f"{service}/{name}"
    attributes = {"rpc.system.name": "grpc", "rpc.system": "grpc", "rpc.method": span_name,
                  "rpc.service": service}
    store_spans = method not in UNTRACED_STORE_CALLS

    def begin(context: Any) -> tuple[Any, Any, float | None]:
        """The span (not yet current), the context that makes it current, the deadline."""
        carrier = {k: v for k, v in context.invocation_metadata() or () if isinstance(v, str)}
        remaining = context.time_remaining()
        if not store_spans:
            _STORE_SPANS.set(False)
        parent = propagate.extract(carrier)
        span = tracer.start_span(span_name, context=parent, kind=SpanKind.SERVER, attributes=attributes,
                                 record_exception=False, set_status_on_exception=False)
        return span, trace.set_span_in_context(span, parent), (
            None if remaining is None else time.monotonic() + remaining)

    def finish(span: Any, context: Any, exc: BaseException | None, deadline: float | None,
               fields: dict[str, Any] | None) -> None:
        code = status_of(context, exc, deadline)
        span.set_attribute("rpc.response.status_code", code.name)
        span.set_attribute("rpc.grpc.status_code", code.value[0])
        if code.name in _SERVER_ERRORS:
            span.set_attribute("error.type", code.name)
            span.set_status(Status(StatusCode.ERROR, code.name))
        if fields:
            for field, attribute in _CALL_ATTRIBUTES:
                if field in fields:
                    span.set_attribute(attribute, str(fields[field]))
        span.end()

    if inspect.isasyncgenfunction(behavior):
        async def streamed(request: Any, context: Any) -> AsyncIterator[Any]:
            # The span is current only while the handler runs a step, attached and detached
            # within that step: a stream closed from elsewhere (the client went away and
            # the loop finalizes the generator) must not detach a context it never attached.
            span, current, deadline = begin(context)
            inner = behavior(request, context)
            fields = None
            try:
                while True:
                    token = otel_context.attach(current)
                    try:
                        item = await inner.__anext__()
                    except StopAsyncIteration:
                        break
                    finally:
                        fields = logs.CALL_FIELDS.get()
                        otel_context.detach(token)
                    yield item
            except BaseException as exc:
                token = otel_context.attach(current)
                try:
                    await inner.aclose()  # its access log line, still under the span
                finally:
                    otel_context.detach(token)
                finish(span, context, exc, deadline, fields)
                raise
            finish(span, context, None, deadline, fields)

        return streamed

    async def unary(request: Any, context: Any) -> Any:
        span, current, deadline = begin(context)
        token = otel_context.attach(current)
        try:
            response = await behavior(request, context)
        except BaseException as exc:
            finish(span, context, exc, deadline, logs.CALL_FIELDS.get())
            raise
        finally:
            otel_context.detach(token)
        finish(span, context, None, deadline, logs.CALL_FIELDS.get())
        return response

    return unary


# -- internal spans (manager) ------------------------------------------------------------

@contextlib.contextmanager
def _internal(name: str, addr: InstanceAddr, attributes: dict[str, Any]) -> Iterator[Any]:
    attrs = {"memoryd.memory.id": addr.resource, "memoryd.instance.hash": addr.instance_hash, **attributes}
    with _tracer.start_as_current_span(name, attributes=attrs, record_exception=False,
                                       set_status_on_exception=False) as current:
        try:
            yield current
        except BaseException as exc:
            _error_type(current, exc)
            raise


def instance_span(
    name: str, describe: Callable[[Any], dict[str, Any]] | None = None
) -> Callable[[Callable[..., Coroutine[Any, Any, T]]], Callable[..., Coroutine[Any, Any, T]]]:
    """Decorate a manager method ``(self, target, ...)``: an INTERNAL span about the target's
    instance, with ``describe(result)`` as attributes. Off: one check per call. A decorator,
    so the manager's code is not re-indented around a span."""

    def decorate(fn: Callable[..., Coroutine[Any, Any, T]]) -> Callable[..., Coroutine[Any, Any, T]]:
        @functools.wraps(fn)
        async def traced_call(owner: Any, target: Any, *args: Any, **kwargs: Any) -> T:
            if _tracer is None:
                return await fn(owner, target, *args, **kwargs)
            with _internal(name, target.addr, {}) as current:
                out = await fn(owner, target, *args, **kwargs)
                if describe is not None:
                    current.set_attributes(describe(out))
                return out

        return traced_call

    return decorate


def _plan_attributes(plan: FlushPlan) -> dict[str, Any]:
    return {"memoryd.flush.strategy": plan.strategy, "memoryd.flush.removed_count": len(plan.remove_seqs),
            "memoryd.flush.summarized": plan.summary is not None, "memoryd.tokens.before": plan.tokens_before,
            "memoryd.tokens.after": plan.tokens_after}


# The read of an instance and the flush plan made from it (engine.plan_flush).
fold = instance_span("memoryd.fold", _plan_attributes)
# A flush started by the budget threshold, under the Append that scheduled it.
background_flush = instance_span("memoryd.background_flush")


# -- store spans -------------------------------------------------------------------------

def traced(store: MemoryStore) -> MemoryStore:
    """``store`` with a span per call when tracing is on; ``store`` itself otherwise."""
    return store if _tracer is None or isinstance(store, TracedStore) else TracedStore(store)


class TracedStore:
    """A MemoryStore that puts each call of the store it wraps in a child span.

    One store call is one Redis script or pipeline (plus the breaker's bookkeeping), so
    the span is the Redis round trip as the daemon sees it. ``db.operation.name`` is the
    store operation; keys are never recorded (Redis keys carry only the instance hash,
    and that is an attribute of its own).
    """

    def __init__(self, inner: MemoryStore) -> None:
        from opentelemetry.trace import SpanKind

        self._inner = inner
        redis = inner.backend == "redis"
        self._kind = SpanKind.CLIENT if redis else SpanKind.INTERNAL
        self._system = {"db.system.name": "redis"} if redis else {}
        self._prefix = f"{inner.backend} "

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)  # anything beyond the protocol (pools, metrics hooks)

    @contextlib.contextmanager
    def _span(self, operation: str, addr: InstanceAddr | None, **attributes: Any) -> Iterator[Any]:
        parent = _get_current_span()
        if not _STORE_SPANS.get() or (not parent.is_recording() and parent.get_span_context().is_valid):
            yield None  # inside a Watch, or a trace the sampler dropped: nothing to build
            return
        attrs: dict[str, Any] = {**self._system, "db.operation.name": operation, **attributes}
        if addr is not None:
            attrs["memoryd.memory.id"] = addr.resource
            attrs["memoryd.instance.hash"] = addr.instance_hash
        with _tracer.start_as_current_span(self._prefix + operation, kind=self._kind, attributes=attrs,
                                           record_exception=False, set_status_on_exception=False) as current:
            try:
                yield current
            except BaseException as exc:
                _error_type(current, exc)
                raise

    @property
    def backend(self) -> str:
        return self._inner.backend

    @property
    def breaker_state(self) -> str:
        return self._inner.breaker_state

    async def start(self) -> None:
        await self._inner.start()

    async def close(self) -> None:
        await self._inner.close()

    async def ping(self) -> None:
        await self._inner.ping()  # the readiness loop's once-a-second ping: not traced

    async def shared_secret(self, name: str) -> bytes:
        return await self._inner.shared_secret(name)  # once per process: not traced

    async def append(
        self,
        addr: InstanceAddr,
        messages: Sequence[NewMessage],
        *,
        idempotency_key: str | None = None,
        ttl_ms: int | None = None,
        pinned_cap: int | None = None,
        workflow_id: str | None = None,
    ) -> AppendOutcome:
        with self._span("append", addr, **{"memoryd.messages.count": len(messages),
                                           "memoryd.tokens.count": sum(m.token_count for m in messages)}) as s:
            out = await self._inner.append(addr, messages, idempotency_key=idempotency_key, ttl_ms=ttl_ms,
                                           pinned_cap=pinned_cap, workflow_id=workflow_id)
            if s is not None:
                s.set_attribute("memoryd.replayed", out.replayed)
                s.set_attribute("memoryd.instance.token_count", out.meta.token_count)
                s.set_attribute("memoryd.instance.message_count", out.meta.message_count)
            return out

    async def read(self, addr: InstanceAddr, *, after_seq: int = 0, limit: int = 0) -> list[StoredMessage]:
        with self._span("read", addr) as s:
            out = await self._inner.read(addr, after_seq=after_seq, limit=limit)
            if s is not None:
                s.set_attribute("memoryd.messages.count", len(out))
            return out

    async def state(self, addr: InstanceAddr) -> InstanceState:
        with self._span("state", addr) as s:
            out = await self._inner.state(addr)
            if s is not None:
                s.set_attribute("memoryd.messages.count", len(out.messages))
                s.set_attribute("memoryd.instance.token_count", out.meta.token_count)
            return out

    async def tail_state(self, addr: InstanceAddr, *, min_tokens: int, min_messages: int) -> TailState | None:
        with self._span("tail_state", addr) as s:
            out = await self._inner.tail_state(addr, min_tokens=min_tokens, min_messages=min_messages)
            if s is not None and out is not None:
                s.set_attribute("memoryd.messages.count", len(out.pinned) + len(out.recent))
                s.set_attribute("memoryd.instance.token_count", out.meta.token_count)
            return out

    async def meta(self, addr: InstanceAddr) -> InstanceMeta:
        with self._span("meta", addr):
            return await self._inner.meta(addr)

    async def read_history(self, addr: InstanceAddr, *, after_seq: int = 0, limit: int = 0) -> list[StoredMessage]:
        with self._span("read_history", addr) as s:
            out = await self._inner.read_history(addr, after_seq=after_seq, limit=limit)
            if s is not None:
                s.set_attribute("memoryd.messages.count", len(out))
            return out

    async def delete_messages(
        self, addr: InstanceAddr, seqs: Sequence[int], *, if_last_seq: int | None = None, ttl_ms: int | None = None
    ) -> DeleteOutcome:
        with self._span("delete_messages", addr) as s:
            out = await self._inner.delete_messages(addr, seqs, if_last_seq=if_last_seq, ttl_ms=ttl_ms)
            if s is not None:
                s.set_attribute("memoryd.messages.removed", len(out.deleted_seqs))
                s.set_attribute("memoryd.instance.token_count", out.meta.token_count)
            return out

    async def apply_flush(
        self, addr: InstanceAddr, plan: FlushPlan, *, fence: int, ttl_ms: int | None = None,
        history: HistoryPolicy = KEEP_ALL_HISTORY,
    ) -> FlushOutcome:
        with self._span("apply_flush", addr, **{"memoryd.flush.removed_count": len(plan.remove_seqs)}) as s:
            out = await self._inner.apply_flush(addr, plan, fence=fence, ttl_ms=ttl_ms, history=history)
            if s is not None:
                s.set_attribute("memoryd.messages.removed", len(out.removed_seqs))
                s.set_attribute("memoryd.instance.token_count", out.meta.token_count)
            return out

    async def clear(self, addr: InstanceAddr) -> int:
        with self._span("clear", addr) as s:
            removed = await self._inner.clear(addr)
            if s is not None:
                s.set_attribute("memoryd.messages.removed", removed)
            return removed

    def lock(
        self, addr: InstanceAddr, *, ttl_ms: int, acquire_timeout_s: float
    ) -> AbstractAsyncContextManager[LockLease]:
        return _TracedLock(self, addr, self._inner.lock(addr, ttl_ms=ttl_ms, acquire_timeout_s=acquire_timeout_s))

    async def wait_for_change(self, addr: InstanceAddr, *, after_seq: int, timeout_s: float) -> None:
        await self._inner.wait_for_change(addr, after_seq=after_seq, timeout_s=timeout_s)  # a wait, not a call

    async def end_workflow(self, project: str, workflow_id: str) -> int:
        with self._span("end_workflow", None) as s:
            deleted = await self._inner.end_workflow(project, workflow_id)
            if s is not None:
                s.set_attribute("memoryd.instances.deleted", deleted)
            return deleted


class _TracedLock:
    """The instance lock, with its acquisition (the wait for other flushers) in a span."""

    def __init__(self, store: TracedStore, addr: InstanceAddr, inner: AbstractAsyncContextManager[LockLease]) -> None:
        self._store, self._addr, self._inner = store, addr, inner

    async def __aenter__(self) -> LockLease:
        with self._store._span("lock.acquire", self._addr) as s:
            lease = await self._inner.__aenter__()
            if s is not None:
                s.set_attribute("memoryd.lock.fence", lease.fence)
            return lease

    async def __aexit__(self, *exc: Any) -> bool | None:
        return await self._inner.__aexit__(*exc)
