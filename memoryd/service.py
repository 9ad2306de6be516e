"""The memoryd.v1.MemoryService servicer: wire <-> manager, errors -> status codes.

It knows nothing of Redis: it validates requests (memoryd.validation), calls the
manager, converts results (memoryd.convert) and maps every MemorydError to its gRPC
status in one place (``_guard``). Unexpected exceptions become INTERNAL without a
traceback on the wire; the traceback goes to the log.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
from memoryd_client.v1 import memory_pb2 as pb
from memoryd_client.v1 import memory_pb2_grpc as pb_grpc

from memoryd import __version__, validation
from memoryd.convert import message_to_pb, stats_to_pb
from memoryd.errors import MemorydError
from memoryd.manager import MemoryManager, Target
from memoryd.models import InstanceMeta
from memoryd.status import grpc_code

log = logging.getLogger("memoryd.service")

Req = TypeVar("Req")
Resp = TypeVar("Resp")
Ctx = grpc.aio.ServicerContext[Any, Any]


async def _abort(context: Ctx, exc: BaseException, method: str) -> None:
    if isinstance(exc, MemorydError):
        await context.abort(grpc_code(exc), exc.message)
    log.exception("unexpected error in %s", method)
    await context.abort(grpc.StatusCode.INTERNAL, f"{method}: internal error (see daemon log)")


def _unary(
    fn: Callable[[Any, Req, Ctx], Awaitable[Resp]],
) -> Callable[[Any, Req, Ctx], Awaitable[Resp]]:
    @functools.wraps(fn)
    async def wrapper(self: Any, request: Req, context: Ctx) -> Resp:
        try:
            return await fn(self, request, context)
        except (asyncio.CancelledError, grpc.aio.AbortError):
            raise
        except Exception as exc:
            await _abort(context, exc, fn.__name__)
            raise AssertionError("unreachable") from exc

    return wrapper


def _stream(
    fn: Callable[[Any, Req, Ctx], AsyncIterator[Resp]],
) -> Callable[[Any, Req, Ctx], AsyncIterator[Resp]]:
    @functools.wraps(fn)
    async def wrapper(self: Any, request: Req, context: Ctx) -> AsyncIterator[Resp]:
        try:
            async for item in fn(self, request, context):
                yield item
        except (asyncio.CancelledError, grpc.aio.AbortError):
            raise
        except Exception as exc:
            await _abort(context, exc, fn.__name__)

    return wrapper


class MemoryService(pb_grpc.MemoryServiceServicer):
    def __init__(self, manager: MemoryManager, shutdown: asyncio.Event) -> None:
        self.manager = manager
        self.settings = manager.settings
        self.shutdown = shutdown

    def _target(self, ref: pb.MemoryRef, present: bool) -> Target:
        return self.manager.resolve(validation.ref(ref, self.settings, present=present))

    def _stats(self, target: Target, meta: InstanceMeta) -> pb.InstanceStats:
        res = target.resource
        return stats_to_pb(
            meta, instance_id=target.addr.instance_id, budget=self.manager.budget(res),
            strategy=res.flushing_strategy.type, encoding=self.manager.encoding(res),
        )

    @_unary
    async def Append(self, request: pb.AppendRequest, context: Ctx) -> pb.AppendResponse:
        target = self._target(request.ref, request.HasField("ref"))
        incoming = validation.messages(list(request.messages), self.settings)
        idem = validation.idempotency_key(request.idempotency_key)
        result = await self.manager.append(target, incoming, idem)
        refs = iter(result.outcome.refs)
        results = []
        for prepared in result.messages:
            if prepared is None:
                results.append(pb.AppendResult(persisted=False))
                continue
            r = next(refs)
            results.append(pb.AppendResult(
                seq=r.seq, id=r.id, token_count=r.token_count, persisted=True,
                effective_priority=r.effective_priority,
            ))
        return pb.AppendResponse(
            results=results, stats=self._stats(target, result.outcome.meta),
            replayed=result.outcome.replayed, flush_scheduled=result.flush_scheduled,
        )

    @_stream
    async def Read(self, request: pb.ReadRequest, context: Ctx) -> AsyncIterator[pb.ReadResponse]:
        target = self._target(request.ref, request.HasField("ref"))
        validation.read(request)
        chunk = request.chunk_size or self.settings.read_chunk_messages
        if request.view != pb.READ_VIEW_RAW:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED,
                                "view: CONTEXT reads arrive with the token engine; use READ_VIEW_RAW")
        meta = await self.manager.meta(target)
        first = True
        async for page in self.manager.read_raw(
            target, after_seq=request.after_seq, limit=request.limit, chunk=chunk
        ):
            if self.shutdown.is_set():
                await context.abort(grpc.StatusCode.UNAVAILABLE, "daemon is shutting down; retry")
            resp = pb.ReadResponse(messages=[message_to_pb(m) for m in page])
            if first:
                resp.info.CopyFrom(pb.ReadInfo(instance_id=target.addr.instance_id, last_seq=meta.last_seq))
                first = False
            yield resp
        if first:
            yield pb.ReadResponse(info=pb.ReadInfo(instance_id=target.addr.instance_id, last_seq=meta.last_seq))

    @_unary
    async def GetStats(self, request: pb.GetStatsRequest, context: Ctx) -> pb.GetStatsResponse:
        target = self._target(request.ref, request.HasField("ref"))
        return pb.GetStatsResponse(stats=self._stats(target, await self.manager.meta(target)))

    @_unary
    async def GetHealth(self, request: pb.GetHealthRequest, context: Ctx) -> pb.GetHealthResponse:
        store = self.manager.store
        reachable = True
        try:
            await store.ping()
        except MemorydError:
            reachable = False
        resp = pb.GetHealthResponse(
            healthy=reachable and not self.shutdown.is_set(), store=store.backend,
            store_reachable=reachable, breaker_state=store.breaker_state, version=__version__,
        )
        if request.HasField("ref"):
            target = self._target(request.ref, True)
            meta = await self.manager.meta(target)
            budget = self.manager.budget(target.resource)
            resp.instance.CopyFrom(pb.InstanceHealth(
                stats=self._stats(target, meta),
                token_usage_ratio=meta.token_count / budget if budget else 0.0,
            ))
        return resp

    @_unary
    async def Clear(self, request: pb.ClearRequest, context: Ctx) -> pb.ClearResponse:
        target = self._target(request.ref, request.HasField("ref"))
        return pb.ClearResponse(removed_count=await self.manager.clear(target))

    async def Flush(self, request: pb.FlushRequest, context: Ctx) -> pb.FlushResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "Flush arrives with the token engine (issue 4)")
        raise AssertionError("unreachable")

    async def ResolveAgent(self, request: pb.ResolveAgentRequest, context: Ctx) -> pb.ResolveAgentResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED,
                            "ResolveAgent arrives with the configuration layer (issue 3)")
        raise AssertionError("unreachable")

    async def ListResources(
        self, request: pb.ListResourcesRequest, context: Ctx
    ) -> pb.ListResourcesResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED,
                            "ListResources arrives with the configuration layer (issue 3)")
        raise AssertionError("unreachable")

    async def EndWorkflow(self, request: pb.EndWorkflowRequest, context: Ctx) -> pb.EndWorkflowResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "EndWorkflow arrives with lifecycle cleanup (issue 6)")
        raise AssertionError("unreachable")

    async def Watch(self, request: pb.WatchRequest, context: Ctx) -> AsyncIterator[pb.WatchResponse]:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "Watch arrives with change streaming (issue 6)")
        yield pb.WatchResponse()
