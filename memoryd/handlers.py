"""Every RPC of a listener, wrapped once when it is registered: request id, bearer-token
check, access log and the grpc_server_* metrics.

grpc.aio server interceptors would do the same per call: grpcio awaits each
interceptor's ``intercept_service`` and the interceptor builds a new method handler for
every RPC (a small cost, docs/decisions.md, "Measured costs behind the code"). Here the generated
``add_*_to_server`` functions (and the reflection servicer's) register on a
``Listener``, a stand-in for the server that wraps each method handler once and hands
the wrapped one to the real ``grpc.aio.Server``; unknown methods never reach a wrapper
(grpcio answers UNIMPLEMENTED and nothing is counted: their names are client-chosen
and unbounded).

A request body that does not decode (random bytes, invalid UTF-8 in a string field, a
message nested deeper than protobuf's limit) is answered INVALID_ARGUMENT: grpcio would
answer UNKNOWN for an exception in the request deserializer, which runs before any
behaviour. The wrapped deserializer hands the behaviour an ``Undecodable`` instead, and
the behaviour refuses it after the token check (an unauthenticated caller learns nothing
about its body).

A wrapped behaviour reads what it needs from the context when the call begins (peer,
deadline, metadata) and never touches the context after a cancellation: grpcio 1.85 can
crash the process on a context method of a cancelled stream. Each RPC runs in its own
task, so the context variables set here stay private to the call.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import logging
import os
import re
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

import grpc
import grpc.aio
from google.protobuf.message import DecodeError

from memoryd import logs, tracing
from memoryd.auth import TokenCheck
from memoryd.errors import UndecodableRequest
from memoryd.metrics import GrpcMethod, Metrics
from memoryd.status import abort

access_log = logging.getLogger("memoryd.access")

REQUEST_ID_HEADER = "x-request-id"
# A client's id is kept when it is short and plain (it ends up in every log line);
# otherwise one is made: a random per-process prefix and a counter (unique, no syscall).
_REQUEST_ID_OK = re.compile(r"[A-Za-z0-9._:/+=-]{1,128}")
_ID_PREFIX = os.urandom(8).hex()
_ids = itertools.count(1)
# Probes and tooling: their access lines go to debug so kubelet checks do not flood the log.
QUIET_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")

Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"  # generic only in the type stubs
Context = grpc.aio.ServicerContext[Any, Any]


# The decoder's reason is protobuf's own text (no client bytes); capped all the same.
_MAX_REASON = 200


class Undecodable:
    """What a unary method's behaviour receives when the request body did not decode."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


def tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    """``deserializer``, returning an ``Undecodable`` where it raises DecodeError."""
    if deserializer is None:
        return None

    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except DecodeError as exc:
            return Undecodable(str(exc)[:_MAX_REASON])

    return deserialize


def new_request_id() -> str:
    return f"{_ID_PREFIX}{next(_ids):016x}"


def rpc_type(handler: Handler) -> str:
    """go-grpc-prometheus' ``grpc_type`` values."""
    if handler.request_streaming:
        return "bidi_stream" if handler.response_streaming else "client_stream"
    return "server_stream" if handler.response_streaming else "unary"


def with_behavior(
    handler: Handler,
    wrap: Callable[[Callable[..., Any]], Callable[..., Any]],
    request_deserializer: Callable[[bytes], Any] | None = None,
) -> Handler:
    """A copy of ``handler`` whose behaviour is ``wrap(original behaviour)``, same kind and
    codecs (or ``request_deserializer`` when given)."""
    des, ser = request_deserializer or handler.request_deserializer, handler.response_serializer
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
    away) must not touch ``context`` again; its deadline was read when the call began.
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


@dataclass(frozen=True, slots=True)
class _MethodInfo:
    method: str
    rpc_type: str
    metrics: GrpcMethod | None
    log_level: int
    token: TokenCheck | None  # None: no check (auth off, or an exempt method)


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ costs twice as much, per call
class _Call:
    """What is read from the context when a call begins (never touched after a cancel)."""

    request_id: str
    start: float
    peer: str
    deadline: float | None
    authorization: str | None


def _begin(info: _MethodInfo, context: Context) -> _Call:
    given = authorization = None
    for key, value in context.invocation_metadata() or ():
        if key == REQUEST_ID_HEADER and given is None:
            given = value if isinstance(value, str) else ""
        elif key == "authorization" and authorization is None:
            authorization = value if isinstance(value, str) else value.decode("ascii", "replace")
    request_id = given if given is not None and _REQUEST_ID_OK.fullmatch(given) else new_request_id()
    logs.REQUEST_ID.set(request_id)
    logs.CALL_FIELDS.set({})
    context.set_trailing_metadata(((REQUEST_ID_HEADER, request_id),))
    if info.metrics is not None:
        info.metrics.started.inc()
    remaining = context.time_remaining()
    call = _Call(request_id, time.perf_counter(), context.peer(),
                 None if remaining is None else time.monotonic() + remaining, authorization)
    if info.metrics is not None and info.metrics.streams is not None:
        info.metrics.streams.inc()  # last: _end, which decrements, runs only once _begin returned
    return call


async def _refuse(info: _MethodInfo, call: _Call, context: Context) -> None:
    """Abort the call unless it carries the token (only awaited when auth is on)."""
    assert info.token is not None
    refusal = info.token.refusal(call.authorization)
    if refusal is not None:
        await abort(context, refusal, info.method)


async def _refuse_undecodable(info: _MethodInfo, request: Undecodable, context: Context) -> None:
    await abort(context, UndecodableRequest(f"request body could not be decoded: {request.reason}"), info.method)


# Server-side faults an operator must see even at level warning.
_FAULTS = frozenset({grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.UNAVAILABLE,
                     grpc.StatusCode.DATA_LOSS, grpc.StatusCode.DEADLINE_EXCEEDED})


def _access_level(info: _MethodInfo, code: grpc.StatusCode) -> int:
    """Successful calls log at debug: one JSON line per call at info is a large share of the
    daemon's CPU under load (docs/decisions.md, "Measured costs behind the code"). Refused
    calls log at info, server-side faults at warning; health and reflection stay at debug."""
    if info.log_level == logging.DEBUG or code == grpc.StatusCode.OK:
        return logging.DEBUG
    return logging.WARNING if code in _FAULTS else logging.INFO


def _end(info: _MethodInfo, context: Context, call: _Call, exc: BaseException | None) -> None:
    elapsed = time.perf_counter() - call.start
    code = status_of(context, exc, call.deadline)
    if info.metrics is not None:
        info.metrics.handled(code.name).inc()
        info.metrics.handling.observe(elapsed)
        if info.metrics.streams is not None:
            info.metrics.streams.dec()
    level = _access_level(info, code)
    if access_log.isEnabledFor(level):
        access_log.log(level, "%s %s", info.method, code.name, extra={
            "event": "rpc", "method": info.method, "grpc_type": info.rpc_type, "grpc_code": code.name,
            "duration_ms": round(elapsed * 1000, 3), "peer": call.peer, "request_id": call.request_id,
        })


def _observed(behavior: Callable[..., Any], info: _MethodInfo) -> Callable[..., Any]:
    if info.rpc_type in ("unary", "client_stream"):
        async def unary_response(request: Any, context: Context) -> Any:
            call = _begin(info, context)
            try:
                if info.token is not None:
                    await _refuse(info, call, context)
                if type(request) is Undecodable:
                    await _refuse_undecodable(info, request, context)
                response = await behavior(request, context)
            except BaseException as exc:
                _end(info, context, call, exc)
                raise
            _end(info, context, call, None)
            return response

        return unary_response

    if inspect.isasyncgenfunction(behavior):
        async def streamed(request: Any, context: Context) -> AsyncIterator[Any]:
            call = _begin(info, context)
            try:
                if info.token is not None:
                    await _refuse(info, call, context)
                if type(request) is Undecodable:
                    await _refuse_undecodable(info, request, context)
                async for item in behavior(request, context):
                    yield item
            except BaseException as exc:
                _end(info, context, call, exc)
                raise
            _end(info, context, call, None)

        return streamed

    async def written(request: Any, context: Context) -> None:  # a coroutine using context.write
        call = _begin(info, context)
        try:
            if info.token is not None:
                await _refuse(info, call, context)
            if type(request) is Undecodable:
                await _refuse_undecodable(info, request, context)
            await behavior(request, context)
        except BaseException as exc:
            _end(info, context, call, exc)
            raise
        _end(info, context, call, None)

    return written


class _WrappedGeneric(grpc.GenericRpcHandler):
    """A generic handler whose method handlers are wrapped the first time each is asked for."""

    def __init__(self, inner: grpc.GenericRpcHandler, wrap: Callable[[str, Handler], Handler]) -> None:
        self._inner = inner
        self._wrap = wrap
        self._wrapped: dict[str, Handler] = {}

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> Handler | None:
        method = handler_call_details.method
        wrapped = self._wrapped.get(method)
        if wrapped is None:
            handler = self._inner.service(handler_call_details)
            if handler is None:
                return None  # unknown here: nothing cached, so client-chosen names cannot pile up
            wrapped = self._wrapped[method] = self._wrap(method, handler)
        return wrapped


class Listener:
    """Stands in for a ``grpc.aio.Server`` while services register on it (pass it to the
    generated ``add_*_to_server`` functions): every handler is wrapped, then registered
    on the real server. Methods under ``auth_exempt`` skip the token check."""

    def __init__(
        self,
        server: grpc.aio.Server,
        metrics: Metrics,
        token: TokenCheck | None = None,
        auth_exempt: tuple[str, ...] = (),
    ) -> None:
        self.server = server
        self._metrics = metrics
        self._token = token
        self._exempt = auth_exempt

    def wrap(self, method: str, handler: Handler) -> Handler:
        kind = rpc_type(handler)
        service, _, name = method.lstrip("/").rpartition("/")
        info = _MethodInfo(
            method=method,
            rpc_type=kind,
            metrics=self._metrics.grpc_method(service, name, kind) if self._metrics.enabled else None,
            log_level=logging.DEBUG if method.startswith(QUIET_PREFIXES) else logging.INFO,
            token=None if method.startswith(self._exempt) else self._token,
        )
        # Only a unary request is decoded before the behaviour; a streamed request is
        # decoded as the behaviour iterates it (reflection's, the only one served).
        des = None if handler.request_streaming else tolerant(handler.request_deserializer)
        if tracing.enabled() and not method.startswith(QUIET_PREFIXES):
            return with_behavior(handler, lambda behavior: tracing.server_behavior(
                _observed(behavior, info), method, status_of), des)
        return with_behavior(handler, lambda behavior: _observed(behavior, info), des)

    # -- what generated registration code calls -----------------------------------------------

    def add_generic_rpc_handlers(self, generic_rpc_handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        self.server.add_generic_rpc_handlers(tuple(_WrappedGeneric(h, self.wrap) for h in generic_rpc_handlers))

    def add_registered_method_handlers(self, service_name: str, method_handlers: dict[str, Handler]) -> None:
        """Not registered: the generated code registers the same handlers as a generic
        handler too, and grpcio 1.85 serves a call through a registered method handler with
        more instructions than through the generic one (docs/decisions.md, "Measured costs
        behind the code"). Calls from stubs that use registered methods fall back to the
        generic handler."""
        del service_name, method_handlers
