"""The memoryd.v1.MemoryService servicer: wire <-> manager, errors -> status codes.

It knows nothing of Redis: it validates requests (memoryd.validation), calls the
manager, converts results (memoryd.convert) and maps every MemorydError to its gRPC
status in one place (``_guard``). Unexpected exceptions become INTERNAL without a
traceback on the wire; the traceback goes to the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, TypeVar

import grpc
from memoryd_client.v1 import memory_pb2 as pb
from memoryd_client.v1 import memory_pb2_grpc as pb_grpc

from memoryd import __version__, logs, validation
from memoryd.convert import (
    MODES,
    STRATEGIES,
    add_messages,
    dict_to_struct,
    fill_stats,
    message_to_pb,
    struct_to_dict,
)
from memoryd.engine import summary_message
from memoryd.errors import InvalidArgument, ShuttingDown
from memoryd.manager import MemoryManager
from memoryd.models import InstanceMeta, StoredMessage
from memoryd.status import abort
from memoryd.targets import Target
from memoryd.watching import Appended, Deleted, FlushDue, Flushed

log = logging.getLogger("memoryd.service")

ITEM_BYTES = 4 * 1024 * 1024  # gRPC's default receive limit (grpcurl, plain stubs)
ITEM_HEADROOM = 64 * 1024  # ReadInfo and framing, within max_request_bytes
# A message's encoded size beyond its content and metadata: content_type (<= 128
# characters), id, numbers, timestamp, field tags.
_ENVELOPE = 1024

LEVELS = {1: pb.CONFIG_LEVEL_SINGLE, 2: pb.CONFIG_LEVEL_MULTI, 3: pb.CONFIG_LEVEL_ADVANCED}

Req = TypeVar("Req")
Resp = TypeVar("Resp")
Ctx = grpc.aio.ServicerContext[Any, Any]


def _operation_name(method: str) -> str:
    """``GetStats`` -> ``get_stats``: the operation label of the latency histogram."""
    return "".join("_" + c.lower() if c.isupper() else c for c in method).lstrip("_")


def _memory_id(request: Any) -> str:
    ref = getattr(request, "ref", None)
    return str(ref.memory_id) if ref is not None else ""


def _unary(
    fn: Callable[[Any, Req, Ctx], Awaitable[Resp]],
) -> Callable[[Any, Req, Ctx], Awaitable[Resp]]:
    op = _operation_name(fn.__name__)

    @functools.wraps(fn)
    async def wrapper(self: Any, request: Req, context: Ctx) -> Resp:
        try:
            with self.manager.operation(op, _memory_id(request)):
                return await fn(self, request, context)
        except (asyncio.CancelledError, grpc.aio.AbortError):
            raise
        except Exception as exc:
            await abort(context, exc, fn.__name__)
            raise AssertionError("unreachable") from exc

    return wrapper


def _stream(
    fn: Callable[[Any, Req, Ctx], AsyncIterator[Resp]],
) -> Callable[[Any, Req, Ctx], AsyncIterator[Resp]]:
    op = _operation_name(fn.__name__)
    timed = op != "watch"  # a watch lasts as long as its client wants: not an operation latency

    @functools.wraps(fn)
    async def wrapper(self: Any, request: Req, context: Ctx) -> AsyncIterator[Resp]:
        try:
            timer = self.manager.operation(op, _memory_id(request)) if timed else contextlib.nullcontext()
            with timer:
                async for item in fn(self, request, context):
                    yield item
        except (asyncio.CancelledError, grpc.aio.AbortError):
            raise
        except Exception as exc:
            await abort(context, exc, fn.__name__)

    return wrapper


class MemoryService(pb_grpc.MemoryServiceServicer):
    def __init__(self, manager: MemoryManager, shutdown: asyncio.Event) -> None:
        self.manager = manager
        self.settings = manager.settings
        self.shutdown = shutdown
        # The daemon sends at most max_request_bytes per message (server.py), most clients
        # receive at most 4 MiB: a stream item of messages stays under both.
        self._item_bytes = min(ITEM_BYTES, self.settings.max_request_bytes - ITEM_HEADROOM)

    def _target(self, ref: pb.MemoryRef, present: bool) -> Target:
        target = self.manager.resolve(validation.ref(ref, self.settings, present=present))
        logs.annotate(memory_id=target.resource.id, instance_hash=target.addr.instance_hash)
        return target

    def _stats(self, target: Target, meta: InstanceMeta) -> pb.InstanceStats:
        out = pb.InstanceStats()
        self._fill_stats(out, target, meta)
        return out

    @staticmethod
    def _fill_stats(out: pb.InstanceStats, target: Target, meta: InstanceMeta) -> None:
        fill_stats(
            out, meta, instance_id=target.addr.instance_id, budget=target.budget_tokens,
            strategy=target.resource.flushing_strategy.type, encoding=target.encoding,
        )

    @_unary
    async def Append(self, request: pb.AppendRequest, context: Ctx) -> pb.AppendResponse:
        target = self._target(request.ref, request.HasField("ref"))
        incoming = validation.messages(request.messages, self.settings)
        idem = validation.idempotency_key(request.idempotency_key)
        result = await self.manager.append(target, incoming, idem)
        resp = pb.AppendResponse(replayed=result.replayed, flush_scheduled=result.flush_scheduled)
        add = resp.results.add
        for r in result.results:
            if r.ref is None:
                add(persisted=False)
            else:
                add(seq=r.ref.seq, id=r.ref.id, token_count=r.ref.token_count, persisted=True,
                    effective_priority=r.ref.effective_priority, redactions=r.redactions)
        self._fill_stats(resp.stats, target, result.meta)
        return resp

    @_stream
    async def Read(self, request: pb.ReadRequest, context: Ctx) -> AsyncIterator[pb.ReadResponse]:
        target = self._target(request.ref, request.HasField("ref"))
        validation.read(request)
        after = validation.after_seq(request.after_seq)
        chunk = request.chunk_size or self.settings.read_chunk_messages
        if request.view in (pb.READ_VIEW_RAW, pb.READ_VIEW_HISTORY):
            paged = self.manager.read_raw if request.view == pb.READ_VIEW_RAW else self.manager.read_history
            pages = paged(target, after_seq=after, limit=request.limit, chunk=chunk)
            info = pb.ReadInfo(instance_id=target.addr.instance_id,
                               last_seq=(await self.manager.meta(target)).last_seq)
        else:
            view, meta = await self.manager.read_context(target, max_tokens=request.max_tokens)
            selected = [m for m in view.messages if m.seq > after]
            if request.limit:
                selected = selected[: request.limit]
            info = pb.ReadInfo(
                instance_id=target.addr.instance_id, message_count=len(selected),
                token_count=sum(m.token_count for m in selected), budget_tokens=view.budget,
                last_seq=meta.last_seq,
            )
            pages = _chunks(selected, chunk)
        first = True
        budget = self._item_bytes
        async for page in pages:
            if self.shutdown.is_set():
                raise ShuttingDown("daemon is shutting down; retry")
            for part in _parts(page, budget):
                resp = pb.ReadResponse()
                add_messages(resp.messages, part)
                if first:
                    resp.info.CopyFrom(info)
                    first = False
                yield resp
        if first:
            yield pb.ReadResponse(info=info)

    @_unary
    async def GetStats(self, request: pb.GetStatsRequest, context: Ctx) -> pb.GetStatsResponse:
        target = self._target(request.ref, request.HasField("ref"))
        return pb.GetStatsResponse(stats=self._stats(target, await self.manager.meta(target)))

    @_unary
    async def GetHealth(self, request: pb.GetHealthRequest, context: Ctx) -> pb.GetHealthResponse:
        target = self._target(request.ref, True) if request.HasField("ref") else None
        report = await self.manager.health(target)
        resp = pb.GetHealthResponse(
            healthy=report.store_reachable and not self.shutdown.is_set(), store=report.store,
            store_reachable=report.store_reachable, breaker_state=report.breaker_state, version=__version__,
            encoding=report.encoding, encoding_fallback=report.encoding_fallback, notes=report.notes,
        )
        if target is not None and report.instance is not None:
            inst = report.instance
            resp.encoding, resp.encoding_fallback = inst.encoding, inst.encoding_fallback
            resp.instance.CopyFrom(pb.InstanceHealth(
                stats=self._stats(target, inst.meta), token_usage_ratio=inst.token_usage_ratio,
                flush_pending=inst.flush_pending, over_threshold=inst.over_threshold,
            ))
        return resp

    @_unary
    async def Clear(self, request: pb.ClearRequest, context: Ctx) -> pb.ClearResponse:
        target = self._target(request.ref, request.HasField("ref"))
        return pb.ClearResponse(removed_count=await self.manager.clear(target))

    @_unary
    async def Flush(self, request: pb.FlushRequest, context: Ctx) -> pb.FlushResponse:
        target = self._target(request.ref, request.HasField("ref"))
        result = await self.manager.flush(target, dry_run=request.dry_run)
        plan = result.plan
        resp = pb.FlushResponse(
            removed_seqs=result.removed_seqs if result.applied else plan.remove_seqs,
            tokens_before=plan.tokens_before, tokens_after=plan.tokens_after, applied=result.applied,
            strategy=STRATEGIES.get(plan.strategy, pb.FLUSH_STRATEGY_UNSPECIFIED),
            stats=self._stats(target, result.meta),
        )
        if plan.summary is not None:
            resp.summary.CopyFrom(message_to_pb(summary_message(plan.summary)))
        return resp

    @_unary
    async def ResolveAgent(self, request: pb.ResolveAgentRequest, context: Ctx) -> pb.ResolveAgentResponse:
        if not request.agent_id:
            raise InvalidArgument("agent_id", "required")
        level, refs = self.manager.resolve_agent(request.agent_id, struct_to_dict(request.context))
        return pb.ResolveAgentResponse(
            agent_id=request.agent_id, level=LEVELS.get(level, pb.CONFIG_LEVEL_UNSPECIFIED),
            references=[
                pb.ResolvedReference(memory_id=r.memory_id, mode=MODES[r.mode], key_template=r.key_template,
                                     key=r.key, instance_id=r.addr.instance_id)
                for r in refs
            ],
        )

    @_unary
    async def ListResources(
        self, request: pb.ListResourcesRequest, context: Ctx
    ) -> pb.ListResourcesResponse:
        out = pb.ListResourcesResponse(project=self.manager.project.id)
        for res in self.manager.list_resources():
            out.resources.append(pb.Resource(
                id=res.id, description=res.description, budget_tokens=res.budget_tokens,
                strategy=STRATEGIES.get(res.strategy, pb.FLUSH_STRATEGY_UNSPECIFIED),
                encoding=res.encoding, settings=dict_to_struct(res.settings),
            ))
        return out

    @_unary
    async def EndWorkflow(self, request: pb.EndWorkflowRequest, context: Ctx) -> pb.EndWorkflowResponse:
        return pb.EndWorkflowResponse(deleted_instances=await self.manager.end_workflow(request.workflow_id))

    @_unary
    async def PlanFlush(self, request: pb.PlanFlushRequest, context: Ctx) -> pb.PlanFlushResponse:
        target = self._target(request.ref, request.HasField("ref"))
        plan = await self.manager.plan_flush(target)
        resp = pb.PlanFlushResponse(plan_token=plan.token, seqs=[m.seq for m in plan.messages],
                                    current_summary=plan.current_summary,
                                    summary_max_tokens=plan.summary_max_tokens)
        add_messages(resp.messages, list(plan.messages))
        self._fill_stats(resp.stats, target, plan.meta)
        return resp

    @_unary
    async def ApplyFlush(self, request: pb.ApplyFlushRequest, context: Ctx) -> pb.ApplyFlushResponse:
        target = self._target(request.ref, request.HasField("ref"))
        fold = await self.manager.apply_flush(target, request.plan_token, request.summary)
        resp = pb.ApplyFlushResponse(removed_seqs=fold.removed_seqs)
        if fold.summary is not None:
            resp.summary.CopyFrom(message_to_pb(summary_message(fold.summary)))
        self._fill_stats(resp.stats, target, fold.meta)
        return resp

    @_unary
    async def DeleteMessages(self, request: pb.DeleteMessagesRequest, context: Ctx) -> pb.DeleteMessagesResponse:
        target = self._target(request.ref, request.HasField("ref"))
        seqs = validation.delete_seqs(request.seqs)
        if_last_seq = request.if_last_seq if request.HasField("if_last_seq") else None
        outcome = await self.manager.delete_messages(target, seqs, if_last_seq)
        resp = pb.DeleteMessagesResponse(deleted_seqs=outcome.deleted_seqs)
        self._fill_stats(resp.stats, target, outcome.meta)
        return resp

    @_stream
    async def Watch(self, request: pb.WatchRequest, context: Ctx) -> AsyncIterator[pb.WatchResponse]:
        target = self._target(request.ref, request.HasField("ref"))
        events = self.manager.watch(target, after_seq=validation.after_seq(request.after_seq),
                                    chunk=self.settings.read_chunk_messages, stop=self.shutdown)
        async with contextlib.aclosing(events):  # frees the watcher's slot when the stream ends
            async for event in events:
                if isinstance(event, Appended):
                    for part in _parts(event.messages, self._item_bytes):
                        resp = pb.WatchResponse()
                        add_messages(resp.appended.messages, part)
                        yield resp
                elif isinstance(event, Flushed):
                    flushed = pb.Flushed(removed_seqs=event.removed_seqs)
                    if event.summary is not None:
                        flushed.summary.CopyFrom(message_to_pb(summary_message(event.summary)))
                    yield pb.WatchResponse(flushed=flushed)
                elif isinstance(event, FlushDue):
                    yield pb.WatchResponse(flush_due=pb.FlushDue(stats=self._stats(target, event.meta)))
                elif isinstance(event, Deleted):
                    yield pb.WatchResponse(deleted=pb.Deleted(seqs=event.seqs))
                else:
                    yield pb.WatchResponse(cleared=pb.Cleared())


def _parts(page: list[StoredMessage], budget: int) -> Iterator[list[StoredMessage]]:
    """``page`` cut into runs whose encoded size stays under ``budget`` bytes (each run
    holds at least one message). A page is cut by message count (``chunk_size``); 256
    messages of up to 1 MiB each would exceed the send limit and fail the whole stream
    with RESOURCE_EXHAUSTED. Sizes are counted, not encoded (cheap beside the encoding)."""
    start = total = 0
    for i, msg in enumerate(page):
        content, metadata = msg[3], msg[9]
        size = (len(content) if content.isascii() else len(content.encode("utf-8", "surrogatepass"))) + _ENVELOPE
        if metadata:
            size += sum(len(k.encode()) + len(v.encode()) + 16 for k, v in metadata.items())
        if total + size > budget and i > start:
            yield page[start:i]
            start, total = i, 0
        total += size
    if start == 0:
        if page:
            yield page  # the common case: the whole page fits
    else:
        yield page[start:]


async def _chunks(items: list[StoredMessage], size: int) -> AsyncIterator[list[StoredMessage]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
