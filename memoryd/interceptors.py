"""grpc.aio server interceptors: request ids, access log, grpc_server_* metrics.

A grpc.aio server interceptor sees only the method name and the metadata, not the
outcome. To observe status and duration it returns a copy of the method handler
whose behaviour is wrapped: unary responses are awaited, streaming responses are
an async generator re-yielded (or a coroutine writing with ``context.write``).
The status is read from the context after an abort (``context.code()``); any other
exception is UNKNOWN, a cancellation CANCELLED (DEADLINE_EXCEEDED when the deadline
had passed). Each RPC runs in its own task, so the context variables set here stay
private to the call.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import re
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeAlias

import grpc
import grpc.aio

from memoryd import logs
from memoryd.metrics import GrpcMethod, Metrics

access_log = logging.getLogger("memoryd.access")

REQUEST_ID_HEADER = "x-request-id"
# A client's id is kept when it is short and plain (it ends up in every log line);
# otherwise a fresh one is generated.
_REQUEST_ID_OK = re.compile(r"[A-Za-z0-9._:/+=-]{1,128}")
# Probes and tooling: their access lines go to debug so kubelet checks do not flood the log.
QUIET_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")

Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"  # generic only in the type stubs
Continuation: TypeAlias = "Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]]"
Context = grpc.aio.ServicerContext[Any, Any]


def metadata_value(metadata: Any, key: str) -> str | None:
    """The first value of ``key`` in invocation metadata (keys arrive lower-cased)."""
    for item in metadata or ():
        if item[0] == key:
            value = item[1]
            return value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)
    return None


def rpc_type(handler: Handler) -> str:
    """go-grpc-prometheus' ``grpc_type`` values."""
    if handler.request_streaming:
        return "bidi_stream" if handler.response_streaming else "client_stream"
    return "server_stream" if handler.response_streaming else "unary"


def with_behavior(handler: Handler, wrap: Callable[[Callable[..., Any]], Callable[..., Any]]) -> Handler:
    """A copy of ``handler`` whose behaviour is ``wrap(original behaviour)``, same kind and codecs."""
    des, ser = handler.request_deserializer, handler.response_serializer
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(wrap(handler.unary_unary), des, ser)
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(wrap(handler.unary_stream), des, ser)
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(wrap(handler.stream_unary), des, ser)
    assert handler.stream_stream is not None
    return grpc.stream_stream_rpc_method_handler(wrap(handler.stream_stream), des, ser)


def status_of(context: Context, exc: BaseException | None, deadline: float | None) -> grpc.StatusCode:
    """The status the client will see, as far as the server can tell.

    A cancelled call (CancelledError, or GeneratorExit when a stream's consumer went
    away) must not touch ``context`` again: grpcio 1.85 can crash the process on a
    context method of a cancelled stream. Its deadline was read when the call began.
    """
    if isinstance(exc, asyncio.CancelledError | GeneratorExit):
        if deadline is not None and time.monotonic() >= deadline:
            return grpc.StatusCode.DEADLINE_EXCEEDED
        return grpc.StatusCode.CANCELLED
    if exc is None or isinstance(exc, grpc.aio.AbortError):
        code = context.code()
        if isinstance(code, grpc.StatusCode):
            return code
        return grpc.StatusCode.OK if exc is None else grpc.StatusCode.UNKNOWN
    return grpc.StatusCode.UNKNOWN


def request_id_from(metadata: Any) -> str:
    given = metadata_value(metadata, REQUEST_ID_HEADER)
    if given is not None and _REQUEST_ID_OK.fullmatch(given):
        return given
    return secrets.token_hex(16)


@dataclass(frozen=True, slots=True)
class _MethodInfo:
    method: str
    rpc_type: str
    metrics: GrpcMethod | None
    log_level: int


class ObservabilityInterceptor(grpc.aio.ServerInterceptor):
    """Request id + access log + grpc_server_* metrics, in one wrapper per call.

    Put it first in the interceptor list so that calls refused by later interceptors
    (authentication) are counted and logged too. Unknown methods (no handler) are
    neither counted nor logged: their names are client-chosen and unbounded.
    """

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self._methods: dict[tuple[str, str], _MethodInfo] = {}

    def _info(self, method: str, handler: Handler) -> _MethodInfo:
        kind = rpc_type(handler)
        info = self._methods.get((method, kind))
        if info is None:
            service, _, name = method.lstrip("/").rpartition("/")
            children = self._metrics.grpc_method(service, name, kind) if self._metrics.enabled else None
            quiet = method.startswith(QUIET_PREFIXES)
            info = _MethodInfo(method, kind, children, logging.DEBUG if quiet else logging.INFO)
            self._methods[(method, kind)] = info
        return info

    async def intercept_service(self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails) -> Any:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        info = self._info(handler_call_details.method, handler)
        request_id = request_id_from(handler_call_details.invocation_metadata)
        return with_behavior(handler, lambda behavior: _observed(behavior, info, request_id))


@dataclass(frozen=True, slots=True)
class _Call:
    """What is read from the context when a call begins (never touched after a cancel)."""

    start: float
    peer: str
    deadline: float | None


def _begin(info: _MethodInfo, request_id: str, context: Context) -> _Call:
    logs.REQUEST_ID.set(request_id)
    logs.CALL_FIELDS.set({})
    context.set_trailing_metadata(((REQUEST_ID_HEADER, request_id),))
    if info.metrics is not None:
        info.metrics.started.inc()
    remaining = context.time_remaining()
    start = time.perf_counter()
    return _Call(start, context.peer(), None if remaining is None else time.monotonic() + remaining)


# Server-side faults an operator must see even at level warning.
_FAULTS = frozenset({grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.UNAVAILABLE,
                     grpc.StatusCode.DATA_LOSS, grpc.StatusCode.DEADLINE_EXCEEDED})


def _access_level(info: _MethodInfo, code: grpc.StatusCode) -> int:
    """Successful calls log at debug: one JSON line per call at info cost ~12 % of the
    daemon's CPU under load (py-spy, 16 concurrent appenders). Refused calls log at
    info, server-side faults at warning; health and reflection stay at debug."""
    if info.log_level == logging.DEBUG or code == grpc.StatusCode.OK:
        return logging.DEBUG
    return logging.WARNING if code in _FAULTS else logging.INFO


def _end(info: _MethodInfo, request_id: str, context: Context, call: _Call, exc: BaseException | None) -> None:
    elapsed = time.perf_counter() - call.start
    code = status_of(context, exc, call.deadline)
    if info.metrics is not None:
        info.metrics.handled(code.name).inc()
        info.metrics.handling.observe(elapsed)
    level = _access_level(info, code)
    if access_log.isEnabledFor(level):
        access_log.log(level, "%s %s", info.method, code.name, extra={
            "event": "rpc", "method": info.method, "grpc_type": info.rpc_type, "grpc_code": code.name,
            "duration_ms": round(elapsed * 1000, 3), "peer": call.peer, "request_id": request_id,
        })


def _observed(behavior: Callable[..., Any], info: _MethodInfo, request_id: str) -> Callable[..., Any]:
    if info.rpc_type in ("unary", "client_stream"):
        async def unary_response(request: Any, context: Context) -> Any:
            call = _begin(info, request_id, context)
            try:
                response = await behavior(request, context)
            except BaseException as exc:
                _end(info, request_id, context, call, exc)
                raise
            _end(info, request_id, context, call, None)
            return response

        return unary_response

    if inspect.isasyncgenfunction(behavior):
        async def streamed(request: Any, context: Context) -> AsyncIterator[Any]:
            call = _begin(info, request_id, context)
            try:
                async for item in behavior(request, context):
                    yield item
            except BaseException as exc:
                _end(info, request_id, context, call, exc)
                raise
            _end(info, request_id, context, call, None)

        return streamed

    async def written(request: Any, context: Context) -> None:  # a coroutine using context.write
        call = _begin(info, request_id, context)
        try:
            await behavior(request, context)
        except BaseException as exc:
            _end(info, request_id, context, call, exc)
            raise
        _end(info, request_id, context, call, None)

    return written


def server_interceptors(
    metrics: Metrics, auth: grpc.aio.ServerInterceptor | None = None
) -> list[grpc.aio.ServerInterceptor]:
    """The API listener's chain, outermost first: observability, then authentication."""
    return [ObservabilityInterceptor(metrics)] if auth is None else [ObservabilityInterceptor(metrics), auth]
