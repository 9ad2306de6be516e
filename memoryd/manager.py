"""MemoryManager: resolve a reference, then drive the store, the engine and the lock.

The manager owns the daemon's policy (access modes, budgets, background flushes);
the store owns atomicity; the servicer owns the wire. Nothing here is cached that
another daemon sharing the store could change: every call reads the store.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from memoryd.config.model import MemoryResource, Project
from memoryd.errors import InvalidArgument, NotFound, PermissionDenied
from memoryd.keys import InstanceAddr, sanitize_key
from memoryd.models import AppendOutcome, InstanceMeta, NewMessage, StoredMessage
from memoryd.settings import Settings
from memoryd.store.base import MemoryStore
from memoryd.validation import IncomingMessage, RefSpec

log = logging.getLogger("memoryd.manager")


@dataclass(frozen=True, slots=True)
class Target:
    """A resolved instance: where it lives, under which resource, with which access."""

    resource: MemoryResource
    addr: InstanceAddr
    mode: str  # "read-write" | "read-only"
    workflow_id: str | None = None

    def require_write(self, operation: str) -> None:
        if self.mode != "read-write":
            raise PermissionDenied(f"{operation}: reference to memory '{self.resource.id}' is read-only")


@dataclass(frozen=True, slots=True)
class AppendResult:
    outcome: AppendOutcome
    messages: tuple[NewMessage | None, ...]  # None: not persisted
    flush_scheduled: bool


class MemoryManager:
    def __init__(self, project: Project, store: MemoryStore, settings: Settings) -> None:
        self.project = project
        self.store = store
        self.settings = settings
        self._flushes: dict[InstanceAddr, asyncio.Task[None]] = {}

    async def start(self) -> None:
        await self.store.start()

    async def close(self) -> None:
        """Let running flushes finish (they hold the instance lock), then close the store."""
        pending = list(self._flushes.values())
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        await self.store.close()

    # -- resolution ---------------------------------------------------------------

    def resource(self, memory_id: str, field: str = "ref.memory_id") -> MemoryResource:
        res = self.project.resources.get(memory_id)
        if res is None:
            raise NotFound(f"{field}: unknown memory '{memory_id}'")
        return res

    def resolve(self, ref: RefSpec) -> Target:
        res = self.resource(ref.memory_id)
        if ref.key is not None:
            if res.direct_access == "deny":
                raise PermissionDenied(f"ref.key: direct keys are not allowed for memory '{res.id}'")
            addr = InstanceAddr(self.project.id, res.id, sanitize_key(ref.key))
            mode = "read-only" if res.direct_access == "read-only" else "read-write"
            return Target(res, addr, mode)
        raise InvalidArgument("ref.agent", "agent-scoped references need a project configuration")

    # -- operations ---------------------------------------------------------------

    def _prepare(self, res: MemoryResource, msg: IncomingMessage) -> NewMessage:
        if msg.priority is not None:
            priority = msg.priority
        elif msg.role == "system":
            priority = 0
        else:
            priority = res.default_priority
        return NewMessage(
            role=msg.role, content=msg.content, content_type=msg.content_type, priority=msg.priority,
            effective_priority=priority, token_count=0, metadata=msg.metadata,
        )

    async def append(
        self, target: Target, incoming: Sequence[IncomingMessage], idempotency_key: str | None
    ) -> AppendResult:
        target.require_write("Append")
        res = target.resource
        prepared = [self._prepare(res, m) if m.persist else None for m in incoming]
        to_store = [m for m in prepared if m is not None]
        ttl = res.persistence.ttl_s
        if to_store:
            outcome = await self.store.append(
                target.addr, to_store, idempotency_key=idempotency_key,
                ttl_ms=None if ttl is None else int(ttl * 1000), workflow_id=target.workflow_id,
            )
        else:
            outcome = AppendOutcome(refs=(), meta=await self.store.meta(target.addr))
        return AppendResult(outcome=outcome, messages=tuple(prepared), flush_scheduled=False)

    async def read_raw(
        self, target: Target, *, after_seq: int, limit: int, chunk: int
    ) -> AsyncIterator[list[StoredMessage]]:
        """Page through the stored messages oldest first, ``chunk`` at a time."""
        remaining = limit or -1
        cursor = after_seq
        while remaining != 0:
            page_size = chunk if remaining < 0 else min(chunk, remaining)
            page = await self.store.read(target.addr, after_seq=cursor, limit=page_size)
            if not page:
                return
            yield page
            cursor = page[-1].seq
            if remaining > 0:
                remaining -= len(page)
            if len(page) < page_size:
                return

    async def meta(self, target: Target) -> InstanceMeta:
        return await self.store.meta(target.addr)

    async def clear(self, target: Target) -> int:
        target.require_write("Clear")
        return await self.store.clear(target.addr)

    def budget(self, res: MemoryResource) -> int:
        return res.max_tokens or 0

    def encoding(self, res: MemoryResource) -> str:
        return ""
