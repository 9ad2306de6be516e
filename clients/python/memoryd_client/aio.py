"""AsyncMemoryClient: the asyncio client (grpc.aio)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, Literal, TypeVar

import grpc

from memoryd_client._common import (
    DEFAULT_READ_TIMEOUT_S,
    DEFAULT_TIMEOUT_S,
    Agent,
    MessageLike,
    OutgoingMetadata,
    RetryPolicy,
    channel_options,
    connection_from_env,
    make_message,
    make_ref,
    new_idempotency_key,
)
from memoryd_client.errors import from_rpc_error
from memoryd_client.v1 import memory_pb2 as pb
from memoryd_client.v1 import memory_pb2_grpc as pb_grpc

T = TypeVar("T")
View = Literal["context", "raw", "history"]
VIEWS = {"context": pb.READ_VIEW_CONTEXT, "raw": pb.READ_VIEW_RAW, "history": pb.READ_VIEW_HISTORY}


class AsyncMemoryClient(OutgoingMetadata):
    """Client of one memoryd daemon. Use as ``async with AsyncMemoryClient(addr) as c:``.

    ``target`` is a gRPC target: ``127.0.0.1:50051`` or ``unix:/path/memoryd.sock``. Left out
    (None), it is ``$MEMORYD_ADDR``, else ``127.0.0.1:50051``; a token and TLS left out likewise
    come from ``$MEMORYD_TOKEN_FILE`` and ``$MEMORYD_TLS_CA_FILE`` (the chart's agent environment).
    Appends get an idempotency key automatically (``auto_idempotency=True``) so that
    retries after UNAVAILABLE can never store a message twice.
    """

    def __init__(
        self,
        target: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        read_timeout: float = DEFAULT_READ_TIMEOUT_S,
        retry: RetryPolicy | None = None,
        auto_idempotency: bool = True,
        token: str | None = None,
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        target, token, credentials = connection_from_env(target, token, credentials)
        opts = channel_options()
        if credentials is not None:
            self._channel = grpc.aio.secure_channel(target, credentials, options=opts)
        else:
            self._channel = grpc.aio.insecure_channel(target, options=opts)
        self._stub = pb_grpc.MemoryServiceStub(self._channel)
        self._timeout = timeout
        self._read_timeout = read_timeout
        self._retry = retry or RetryPolicy()
        self._auto_idempotency = auto_idempotency
        self._fixed_metadata = (("authorization", f"Bearer {token}"),) if token else ()

    async def __aenter__(self) -> AsyncMemoryClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close()

    async def _call(self, fn: Callable[[], Awaitable[T]], *, retry: bool) -> T:
        backoffs = iter(self._retry.backoffs()) if retry else iter(())
        while True:
            try:
                return await fn()
            except grpc.aio.AioRpcError as err:
                if err.code() == grpc.StatusCode.UNAVAILABLE:
                    delay = next(backoffs, None)
                    if delay is not None:
                        await asyncio.sleep(delay)
                        continue
                raise from_rpc_error(err) from None

    async def append(
        self,
        memory_id: str,
        messages: Sequence[MessageLike],
        *,
        key: str | None = None,
        agent: Agent | None = None,
        idempotency_key: str | None = None,
        timeout: float | None = None,
    ) -> pb.AppendResponse:
        """Append a batch atomically; returns seqs, ids and the instance's new totals."""
        if idempotency_key is None and self._auto_idempotency:
            idempotency_key = new_idempotency_key()
        req = pb.AppendRequest(
            ref=make_ref(memory_id, key, agent), messages=[make_message(m) for m in messages],
            idempotency_key=idempotency_key or "",
        )
        return await self._call(
            lambda: self._stub.Append(req, timeout=timeout or self._timeout, metadata=self._metadata),
            retry=bool(idempotency_key),
        )

    async def read(
        self,
        memory_id: str,
        *,
        key: str | None = None,
        agent: Agent | None = None,
        view: View = "context",
        after_seq: int = 0,
        limit: int = 0,
        max_tokens: int = 0,
        chunk_size: int = 0,
        timeout: float | None = None,
    ) -> AsyncIterator[pb.Message]:
        """Yield messages oldest first. UNAVAILABLE is retried until the first item arrives.

        ``view``: "context" (what fits the budget), "raw" (every live message) or "history"
        (every kept message, folded or live, each with ``folded`` set accordingly)."""
        req = pb.ReadRequest(
            ref=make_ref(memory_id, key, agent), view=VIEWS[view], after_seq=after_seq, limit=limit,
            max_tokens=max_tokens, chunk_size=chunk_size,
        )
        backoffs = iter(self._retry.backoffs())
        while True:
            call = self._stub.Read(req, timeout=timeout or self._read_timeout, metadata=self._metadata)
            received = False
            try:
                async for item in call:
                    received = True
                    for msg in item.messages:
                        yield msg
                return
            except grpc.aio.AioRpcError as err:
                delay = next(backoffs, None)
                if err.code() == grpc.StatusCode.UNAVAILABLE and not received and delay is not None:
                    await asyncio.sleep(delay)
                    continue
                raise from_rpc_error(err) from None

    async def read_all(self, memory_id: str, **kwargs: Any) -> list[pb.Message]:
        return [m async for m in self.read(memory_id, **kwargs)]

    async def stats(
        self, memory_id: str, *, key: str | None = None, agent: Agent | None = None
    ) -> pb.InstanceStats:
        req = pb.GetStatsRequest(ref=make_ref(memory_id, key, agent))
        resp = await self._call(lambda: self._stub.GetStats(req, timeout=self._timeout, metadata=self._metadata),
                                retry=True)
        return resp.stats

    async def health(
        self, memory_id: str | None = None, *, key: str | None = None, agent: Agent | None = None
    ) -> pb.GetHealthResponse:
        req = pb.GetHealthRequest()
        if memory_id is not None:
            req.ref.CopyFrom(make_ref(memory_id, key, agent))
        return await self._call(lambda: self._stub.GetHealth(req, timeout=self._timeout, metadata=self._metadata),
                                retry=True)

    async def flush(
        self, memory_id: str, *, key: str | None = None, agent: Agent | None = None, dry_run: bool = False
    ) -> pb.FlushResponse:
        req = pb.FlushRequest(ref=make_ref(memory_id, key, agent), dry_run=dry_run)
        return await self._call(lambda: self._stub.Flush(req, timeout=self._timeout, metadata=self._metadata),
                                retry=dry_run)

    async def plan_flush(
        self, memory_id: str, *, key: str | None = None, agent: Agent | None = None
    ) -> pb.PlanFlushResponse:
        """What a fold would take out now (``.seqs``, ``.messages``), the summary it replaces
        (``.current_summary``) and its cap (``.summary_max_tokens``), for a summary your own
        model writes; pass ``.plan_token`` to ``apply_flush``. Changes nothing."""
        req = pb.PlanFlushRequest(ref=make_ref(memory_id, key, agent))
        return await self._call(lambda: self._stub.PlanFlush(req, timeout=self._timeout, metadata=self._metadata),
                                retry=True)

    async def apply_flush(
        self, memory_id: str, plan_token: str, summary: str, *, key: str | None = None,
        agent: Agent | None = None,
    ) -> pb.ApplyFlushResponse:
        """Fold the plan's messages under ``summary``. AbortedError: another fold (or a Clear)
        happened since the plan -- plan again; ResourceExhaustedError: the summary is over
        ``summary_max_tokens``. Not retried: a retry of an applied fold would be refused."""
        req = pb.ApplyFlushRequest(ref=make_ref(memory_id, key, agent), plan_token=plan_token, summary=summary)
        return await self._call(lambda: self._stub.ApplyFlush(req, timeout=self._timeout, metadata=self._metadata),
                                retry=False)

    async def delete(
        self, memory_id: str, seqs: Sequence[int], *, key: str | None = None, agent: Agent | None = None,
        if_last_seq: int | None = None,
    ) -> pb.DeleteMessagesResponse:
        """Delete single messages, live or in history (seqs not stored are ignored; the response
        lists those deleted). With ``if_last_seq``, only if the instance's newest seq is still
        that value, else AbortedError and nothing is deleted. The summary is not rewritten."""
        req = pb.DeleteMessagesRequest(ref=make_ref(memory_id, key, agent), seqs=seqs)
        if if_last_seq is not None:
            req.if_last_seq = if_last_seq
        return await self._call(
            lambda: self._stub.DeleteMessages(req, timeout=self._timeout, metadata=self._metadata),
            retry=True)  # deleting the same seqs twice is the same as once

    async def clear(self, memory_id: str, *, key: str | None = None, agent: Agent | None = None) -> int:
        req = pb.ClearRequest(ref=make_ref(memory_id, key, agent))
        resp = await self._call(lambda: self._stub.Clear(req, timeout=self._timeout, metadata=self._metadata),
                                retry=True)  # clearing twice is the same as once
        return resp.removed_count

    async def resolve_agent(self, agent: Agent) -> pb.ResolveAgentResponse:
        req = pb.ResolveAgentRequest(agent_id=agent.agent_id)
        req.context.update(dict(agent.context))
        return await self._call(
            lambda: self._stub.ResolveAgent(req, timeout=self._timeout, metadata=self._metadata), retry=True)

    async def list_resources(self) -> pb.ListResourcesResponse:
        req = pb.ListResourcesRequest()
        return await self._call(
            lambda: self._stub.ListResources(req, timeout=self._timeout, metadata=self._metadata), retry=True)

    async def end_workflow(self, workflow_id: str) -> int:
        req = pb.EndWorkflowRequest(workflow_id=workflow_id)
        resp = await self._call(
            lambda: self._stub.EndWorkflow(req, timeout=self._timeout, metadata=self._metadata), retry=True)
        return resp.deleted_instances

    async def watch(
        self, memory_id: str, *, key: str | None = None, agent: Agent | None = None, after_seq: int = 0
    ) -> AsyncIterator[pb.WatchResponse]:
        """Yield changes as they happen (no deadline); cancel the iteration to stop."""
        req = pb.WatchRequest(ref=make_ref(memory_id, key, agent), after_seq=after_seq)
        call = self._stub.Watch(req, metadata=self._metadata)
        try:
            async for event in call:
                yield event
        except grpc.aio.AioRpcError as err:
            raise from_rpc_error(err) from None
        finally:
            call.cancel()
