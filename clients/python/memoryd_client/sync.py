"""MemoryClient: the blocking client, same operations as AsyncMemoryClient."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

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
from memoryd_client.aio import VIEWS, View
from memoryd_client.errors import from_rpc_error
from memoryd_client.v1 import memory_pb2 as pb
from memoryd_client.v1 import memory_pb2_grpc as pb_grpc

T = TypeVar("T")


class MemoryClient(OutgoingMetadata):
    """Blocking client of one memoryd daemon; use as ``with MemoryClient(addr) as c:``.

    Arguments left out come from the environment as in AsyncMemoryClient (MEMORYD_ADDR,
    MEMORYD_TOKEN_FILE, MEMORYD_TLS_CA_FILE)."""

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
            self._channel = grpc.secure_channel(target, credentials, options=opts)
        else:
            self._channel = grpc.insecure_channel(target, options=opts)
        self._stub = pb_grpc.MemoryServiceStub(self._channel)
        self._timeout = timeout
        self._read_timeout = read_timeout
        self._retry = retry or RetryPolicy()
        self._auto_idempotency = auto_idempotency
        self._fixed_metadata = (("authorization", f"Bearer {token}"),) if token else ()

    def __enter__(self) -> MemoryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def _call(self, fn: Callable[[], T], *, retry: bool) -> T:
        backoffs = iter(self._retry.backoffs()) if retry else iter(())
        while True:
            try:
                return fn()
            except grpc.RpcError as err:
                if err.code() == grpc.StatusCode.UNAVAILABLE:
                    delay = next(backoffs, None)
                    if delay is not None:
                        time.sleep(delay)
                        continue
                raise from_rpc_error(err) from None

    def append(
        self,
        memory_id: str,
        messages: Sequence[MessageLike],
        *,
        key: str | None = None,
        agent: Agent | None = None,
        idempotency_key: str | None = None,
        timeout: float | None = None,
    ) -> pb.AppendResponse:
        if idempotency_key is None and self._auto_idempotency:
            idempotency_key = new_idempotency_key()
        req = pb.AppendRequest(
            ref=make_ref(memory_id, key, agent), messages=[make_message(m) for m in messages],
            idempotency_key=idempotency_key or "",
        )
        return self._call(lambda: self._stub.Append(req, timeout=timeout or self._timeout, metadata=self._metadata),
                          retry=bool(idempotency_key))

    def read(
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
    ) -> Iterator[pb.Message]:
        req = pb.ReadRequest(
            ref=make_ref(memory_id, key, agent), view=VIEWS[view], after_seq=after_seq, limit=limit,
            max_tokens=max_tokens, chunk_size=chunk_size,
        )
        backoffs = iter(self._retry.backoffs())
        while True:
            received = False
            try:
                for item in self._stub.Read(req, timeout=timeout or self._read_timeout, metadata=self._metadata):
                    received = True
                    yield from item.messages
                return
            except grpc.RpcError as err:
                delay = next(backoffs, None)
                code = err.code()
                if code == grpc.StatusCode.UNAVAILABLE and not received and delay is not None:
                    time.sleep(delay)
                    continue
                raise from_rpc_error(err) from None

    def read_all(self, memory_id: str, **kwargs: Any) -> list[pb.Message]:
        return list(self.read(memory_id, **kwargs))

    def stats(self, memory_id: str, *, key: str | None = None, agent: Agent | None = None) -> pb.InstanceStats:
        req = pb.GetStatsRequest(ref=make_ref(memory_id, key, agent))
        return self._call(lambda: self._stub.GetStats(req, timeout=self._timeout, metadata=self._metadata),
                          retry=True).stats

    def health(
        self, memory_id: str | None = None, *, key: str | None = None, agent: Agent | None = None
    ) -> pb.GetHealthResponse:
        req = pb.GetHealthRequest()
        if memory_id is not None:
            req.ref.CopyFrom(make_ref(memory_id, key, agent))
        return self._call(lambda: self._stub.GetHealth(req, timeout=self._timeout, metadata=self._metadata),
                          retry=True)

    def flush(
        self, memory_id: str, *, key: str | None = None, agent: Agent | None = None, dry_run: bool = False
    ) -> pb.FlushResponse:
        req = pb.FlushRequest(ref=make_ref(memory_id, key, agent), dry_run=dry_run)
        return self._call(lambda: self._stub.Flush(req, timeout=self._timeout, metadata=self._metadata),
                          retry=dry_run)

    def plan_flush(
        self, memory_id: str, *, key: str | None = None, agent: Agent | None = None
    ) -> pb.PlanFlushResponse:
        """As AsyncMemoryClient.plan_flush: what a fold would take out now; changes nothing."""
        req = pb.PlanFlushRequest(ref=make_ref(memory_id, key, agent))
        return self._call(lambda: self._stub.PlanFlush(req, timeout=self._timeout, metadata=self._metadata),
                          retry=True)

    def apply_flush(
        self, memory_id: str, plan_token: str, summary: str, *, key: str | None = None,
        agent: Agent | None = None,
    ) -> pb.ApplyFlushResponse:
        """As AsyncMemoryClient.apply_flush: AbortedError means plan again."""
        req = pb.ApplyFlushRequest(ref=make_ref(memory_id, key, agent), plan_token=plan_token, summary=summary)
        return self._call(lambda: self._stub.ApplyFlush(req, timeout=self._timeout, metadata=self._metadata),
                          retry=False)

    def delete(
        self, memory_id: str, seqs: Sequence[int], *, key: str | None = None, agent: Agent | None = None,
        if_last_seq: int | None = None,
    ) -> pb.DeleteMessagesResponse:
        """Delete single messages, live or in history (``AsyncMemoryClient.delete``)."""
        req = pb.DeleteMessagesRequest(ref=make_ref(memory_id, key, agent), seqs=seqs)
        if if_last_seq is not None:
            req.if_last_seq = if_last_seq
        return self._call(lambda: self._stub.DeleteMessages(req, timeout=self._timeout, metadata=self._metadata),
                          retry=True)

    def clear(self, memory_id: str, *, key: str | None = None, agent: Agent | None = None) -> int:
        req = pb.ClearRequest(ref=make_ref(memory_id, key, agent))
        return self._call(lambda: self._stub.Clear(req, timeout=self._timeout, metadata=self._metadata),
                          retry=True).removed_count

    def resolve_agent(self, agent: Agent) -> pb.ResolveAgentResponse:
        req = pb.ResolveAgentRequest(agent_id=agent.agent_id)
        req.context.update(dict(agent.context))
        return self._call(lambda: self._stub.ResolveAgent(req, timeout=self._timeout, metadata=self._metadata),
                          retry=True)

    def list_resources(self) -> pb.ListResourcesResponse:
        req = pb.ListResourcesRequest()
        return self._call(lambda: self._stub.ListResources(req, timeout=self._timeout, metadata=self._metadata),
                          retry=True)

    def end_workflow(self, workflow_id: str) -> int:
        req = pb.EndWorkflowRequest(workflow_id=workflow_id)
        return self._call(lambda: self._stub.EndWorkflow(req, timeout=self._timeout, metadata=self._metadata),
                          retry=True).deleted_instances

    def watch(
        self, memory_id: str, *, key: str | None = None, agent: Agent | None = None, after_seq: int = 0
    ) -> Iterator[pb.WatchResponse]:
        req = pb.WatchRequest(ref=make_ref(memory_id, key, agent), after_seq=after_seq)
        call = self._stub.Watch(req, metadata=self._metadata)
        try:
            yield from call
        except grpc.RpcError as err:
            raise from_rpc_error(err) from None
        finally:
            call.cancel()
