"""MemoryManager: resolve a reference, then drive the store, the engine and the lock.

The manager owns the daemon's policy (access modes, budgets, appends, reads, health);
flushes are ``flushing.Flusher``'s, Watch streams ``watching.Watchers``', a resolved
instance is a ``targets.Target``; the store owns atomicity; the servicer owns the wire. Nothing here is cached that
another daemon sharing the store could change: every call reads the store. Budgets
and token counters are derived from the configuration once, at start.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, TypeVar

from memoryd import engine, tokens, tracing
from memoryd.config.model import Project, effective_settings
from memoryd.config.resolve import ResolvedRef, resolve_agent, resolve_direct, resolve_reference
from memoryd.engine import ContextView
from memoryd.errors import (
    ConfigError,
    InvalidArgument,
    MemorydError,
    NotFound,
    ResourceExhausted,
    ToolCallRefused,
    echo,
)
from memoryd.flushing import THREAD_THRESHOLD, Flusher, FlushResult
from memoryd.keys import InstanceAddr
from memoryd.metrics import Metrics
from memoryd.models import (
    AppendedRef,
    AppendOutcome,
    IncomingMessage,
    InstanceMeta,
    NewMessage,
    RefSpec,
    StoredMessage,
)
from memoryd.privacy import PrivacyFilter
from memoryd.settings import Settings
from memoryd.store.base import MemoryStore
from memoryd.targets import ResourceRuntime, Target
from memoryd.watching import Watchers, WatchEvent

log = logging.getLogger("memoryd.manager")
T = TypeVar("T")

# Direct-key resolutions remembered (oldest dropped first).
DIRECT_CACHE_SIZE = 4096
# A CONTEXT read whose newest message is longer than this runs in a worker thread: cutting
# it to its room counts tokens of much of it, milliseconds of CPU (docs/decisions.md,
# "Measured costs behind the code").
CUT_INLINE_MAX_CHARS = 16_384


@dataclass(frozen=True, slots=True)
class MessageResult:
    """What became of one message of an Append, in request order."""

    ref: AppendedRef | None  # None: not persisted (privacy policy)
    redactions: int


@dataclass(frozen=True, slots=True)
class AppendResult:
    results: tuple[MessageResult, ...]
    meta: InstanceMeta
    replayed: bool
    flush_scheduled: bool


@dataclass(frozen=True, slots=True)
class InstanceHealth:
    meta: InstanceMeta
    token_usage_ratio: float
    flush_pending: bool
    over_threshold: bool
    encoding: str
    encoding_fallback: bool


@dataclass(frozen=True, slots=True)
class HealthReport:
    """GetHealth's answer, before it meets the wire."""

    store_reachable: bool
    store: str  # backend
    breaker_state: str
    encoding: str  # of the default model
    encoding_fallback: bool  # some resource counts with a fallback encoding
    notes: tuple[str, ...]
    instance: InstanceHealth | None


@dataclass(frozen=True, slots=True)
class ResourceInfo:
    id: str
    description: str
    budget_tokens: int
    strategy: str
    encoding: str
    settings: dict[str, Any]  # the effective settings, every default filled in


def _large_newest(messages: Sequence[StoredMessage]) -> bool:
    """True when the newest non-pinned message is long enough that cutting it to its room
    (a few token counts of up to its length) could hold the event loop for milliseconds."""
    for m in reversed(messages):
        if m.effective_priority != 0:
            return len(m.content) > CUT_INLINE_MAX_CHARS
    return False


def _discard(task: asyncio.Future[Any]) -> None:
    """Stop a prefetch nobody will await, without an unretrieved-exception warning."""
    if not task.done():
        task.cancel()
    elif not task.cancelled():
        task.exception()


class MemoryManager:
    def __init__(
        self, project: Project, store: MemoryStore, settings: Settings, metrics: Metrics | None = None
    ) -> None:
        """``store`` is the daemon's store; a resource with ``persistence.type: embedded``
        gets an in-process store even when the daemon runs on Redis, and one with
        ``persistence.type: redis`` is refused (ConfigError) when the daemon has no Redis."""
        self.project = project
        self.store = store
        self.settings = settings
        self.metrics = metrics or Metrics(enabled=False, resources=project.resources)
        self.stores: list[MemoryStore] = [store]
        self.runtimes: dict[str, ResourceRuntime] = {}
        problems = []
        for res in project.resources.values():
            wanted = res.persistence.type
            res_store = store
            if wanted == "redis" and store.backend != "redis":
                problems.append(f"memory '{res.id}': persistence.type is redis but the daemon has no "
                                "--redis-url (remove the field to use the daemon's store)")
            elif wanted == "embedded" and store.backend != "embedded":
                res_store = self._embedded()
            window = tokens.context_window(res.model) if res.model else None
            try:
                budget = engine.compute_budget(res, window)
            except ConfigError as exc:
                problems.extend(exc.problems)
                continue
            problems.extend(f"memory '{res.id}': {'.'.join(path)}: {why}"
                            for path, why in engine.budget_problems(res, window))
            self.runtimes[res.id] = ResourceRuntime(
                res, budget, tokens.counter_for_model(res.model), res_store,
                PrivacyFilter(res.privacy_policy, max_bytes=settings.max_message_bytes),
            )
        if problems:
            raise ConfigError(problems)
        self._direct: dict[tuple[str, str], Target] = {}
        self._flusher = Flusher(settings, self.metrics)
        self._watching = Watchers(settings.max_watchers)

    def _embedded(self) -> MemoryStore:
        from memoryd.store.embedded import EmbeddedStore

        extra = next((s for s in self.stores if s.backend == "embedded"), None)
        if extra is None:
            extra = tracing.traced(EmbeddedStore())
            self.stores.append(extra)
        return extra

    async def start(self) -> None:
        await asyncio.to_thread(tokens.preload)
        for store in self.stores:
            await store.start()

    async def close(self, *, flush_grace_s: float | None = None) -> None:
        """Let running flushes finish for at most ``flush_grace_s`` (``Flusher.close``), then
        close the stores."""
        await self._flusher.close(flush_grace_s)
        for store in self.stores:
            await store.close()

    # -- resolution ---------------------------------------------------------------

    def resolve(self, ref: RefSpec) -> Target:
        if ref.key is not None:
            target = self._resolve_direct(ref.memory_id, ref.key)
            self.metrics.config_resolved("direct")
            return target
        assert ref.agent_id is not None
        if ref.memory_id not in self.project.resources:
            raise NotFound(f"ref.memory_id: unknown memory {echo(ref.memory_id)}")
        resolved = resolve_reference(self.project, ref.agent_id, ref.memory_id, ref.context)
        self.metrics.config_resolved(resolved.level or "direct")
        return self._target(resolved)

    def _resolve_direct(self, memory_id: str, key: str) -> Target:
        """Direct-key resolution depends only on the (immutable) configuration and the key,
        and it is on every call's path (sanitising, hashing): remember recent answers."""
        cache_key = (memory_id, key)
        target = self._direct.get(cache_key)
        if target is None:
            target = self._target(resolve_direct(  # errors are not cached
                self.project, memory_id, key, max_key_bytes=self.settings.max_key_bytes
            ))
            if len(self._direct) >= DIRECT_CACHE_SIZE:
                self._direct.pop(next(iter(self._direct)))
            self._direct[cache_key] = target
        return target

    def _target(self, resolved: ResolvedRef) -> Target:
        return Target(self.runtimes[resolved.memory_id], resolved.addr, resolved.mode, resolved.workflow_id)

    def resolve_agent(self, agent_id: str, context: Mapping[str, Any]) -> tuple[int, list[ResolvedRef]]:
        agent, refs = resolve_agent(self.project, agent_id, context)
        return agent.level, refs

    # -- append -------------------------------------------------------------------

    @staticmethod
    def _prepared(rt: ResourceRuntime, msg: IncomingMessage, content: str, count: int) -> NewMessage:
        return NewMessage(
            role=msg.role, content=content, content_type=msg.content_type, priority=msg.priority,
            effective_priority=engine.effective_priority(rt.resource, msg.role, msg.content_type, msg.priority),
            token_count=count, metadata=msg.metadata, tool_calls=msg.tool_calls, tool_call_id=msg.tool_call_id,
            name=msg.name, parts=msg.parts, extra=msg.extra,
        )

    async def append(
        self, target: Target, incoming: Sequence[IncomingMessage], idempotency_key: str | None
    ) -> AppendResult:
        """Redact, drop what is not persistable, count, then store the batch atomically.

        Redaction can grow content: a redacted message is bounded by ``max_message_bytes``
        and a redacted batch by ``max_request_bytes``, as the client's own would be."""
        target.require_write("Append")
        rt = target.runtime
        mid = rt.resource.id
        prepared: list[NewMessage | None] = []
        redactions: list[int] = []
        redacted_bytes = 0
        for i, m in enumerate(incoming):
            if not rt.privacy.persistable(m.role, m.content_type, m.persist):
                prepared.append(None)
                redactions.append(0)
                continue
            extended = bool(m.tool_calls or m.parts or m.extra or m.name)
            if rt.privacy.redacts:
                try:
                    if tokens.counts_inline(m.content):
                        content, n, size = rt.privacy.redact_measured(m.content)
                    else:  # a pattern like \d over 1 MiB of digits takes seconds: off the loop
                        content, n, size = await asyncio.to_thread(rt.privacy.redact_measured, m.content)
                except ResourceExhausted as exc:
                    raise ResourceExhausted(f"messages[{i}].content: {exc.message}") from None
                if m.tool_calls or m.parts or m.extra:
                    m, more, more_size = await self._redact_fields(rt, i, m)
                    n, size = n + more, size + more_size
                redacted_bytes += size
                if redacted_bytes > self.settings.max_request_bytes:
                    raise ResourceExhausted(
                        f"messages[{i}].content: redaction makes the batch's content more than "
                        f"{self.settings.max_request_bytes} bytes (the request size limit)"
                    )
            else:
                content, n = m.content, 0
            redactions.append(n)
            if extended:
                count = await self._count_extended(rt, m, content)
            elif tokens.counts_inline(content):  # not count_message_async: a coroutine per message costs more
                count = rt.counter.count_message(m.role, content)
            else:
                count = await tokens.count_message_async(rt.counter, m.role, content)
            prepared.append(self._prepared(rt, m, content, count))
        to_store = [m for m in prepared if m is not None]
        if rt.resource.oversize == "reject":
            await self._refuse_oversized(target, prepared)
        ttl = rt.resource.persistence.ttl_s
        if to_store:
            try:
                outcome = await rt.store.append(
                    target.addr, to_store, idempotency_key=idempotency_key,
                    ttl_ms=None if ttl is None else int(ttl * 1000),
                    pinned_cap=rt.budget.pinned_cap, workflow_id=target.workflow_id,
                )
            except ToolCallRefused as exc:  # name the request's message, not the stored batch's
                stored_at = [k for k, p in enumerate(prepared) if p is not None]
                raise InvalidArgument(*exc.describe(f"messages[{stored_at[exc.position]}]")) from None
        else:
            outcome = AppendOutcome(refs=(), meta=await rt.store.meta(target.addr))
        excluded = len(prepared) - len(to_store)
        if not outcome.replayed:
            self.metrics.messages_appended(mid, len(outcome.refs))
            self.metrics.privacy(mid, excluded=excluded, redactions=sum(redactions))
        self.metrics.instance_tokens(mid, target.addr.instance_hash, outcome.meta.token_count, ttl)
        if excluded:
            log.info("messages not persisted", extra={"event": "not_persisted", "memory_id": mid,
                                                       "instance_hash": target.addr.instance_hash,
                                                       "count": excluded})
        scheduled = False
        if not outcome.replayed and engine.needs_flush(outcome.meta, rt.resource, rt.budget):
            scheduled = self._schedule_flush(target)
        refs = iter(outcome.refs)
        results = tuple(MessageResult(None if m is None else next(refs), n)
                        for m, n in zip(prepared, redactions, strict=True))
        return AppendResult(results=results, meta=outcome.meta, replayed=outcome.replayed,
                            flush_scheduled=scheduled)

    @staticmethod
    async def _redact_fields(rt: ResourceRuntime, i: int, m: IncomingMessage) -> tuple[IncomingMessage, int, int]:
        """``m`` with its tool call arguments, text parts and extra redacted (``PrivacyFilter.redact_fields``),
        off the event loop when they are long; the replacements and the redacted bytes."""
        args = (m.tool_calls, m.parts, m.extra)
        try:
            if tokens.counts_inline_chars(tokens.text_chars("", *args)):
                calls, parts, extra, n, size = rt.privacy.redact_fields(*args)
            else:
                calls, parts, extra, n, size = await asyncio.to_thread(rt.privacy.redact_fields, *args)
        except ResourceExhausted as exc:
            raise ResourceExhausted(f"messages[{i}]: {exc.message}") from None
        return dataclasses.replace(m, tool_calls=calls, parts=parts, extra=extra), n, size

    @staticmethod
    async def _count_extended(rt: ResourceRuntime, m: IncomingMessage, content: str) -> int:
        """Tokens of a message with tool calls, parts, a name or extra (``TokenCounter.count_extended``),
        counted off the event loop when its text is long."""
        count = functools.partial(rt.counter.count_extended, m.role, content, rt.resource.token_counting,
                                  tool_calls=m.tool_calls, name=m.name, parts=m.parts, extra=m.extra)
        if tokens.counts_inline_chars(tokens.text_chars(content, m.tool_calls, m.parts, m.extra)):
            return count()
        return await asyncio.to_thread(count)

    @staticmethod
    async def _refuse_oversized(target: Target, prepared: Sequence[NewMessage | None]) -> None:
        """``oversize: reject``: refuse a batch holding a message larger than its room in a
        view (promise 5). The stored pinned tokens are read only when some message is
        larger than the room left by a full pinned tier."""
        rt = target.runtime
        sizes = [(i, m.effective_priority, m.token_count) for i, m in enumerate(prepared) if m is not None]
        if all(m.pinned or m.token_count <= engine.message_room(rt.budget, m.effective_priority,
                                                                  rt.budget.pinned_cap)
               for m in prepared if m is not None):
            return
        engine.check_oversize(rt.budget, sizes, (await rt.store.meta(target.addr)).pinned_tokens)

    # -- flush --------------------------------------------------------------------

    def flush_pending(self, addr: InstanceAddr) -> bool:
        return self._flusher.pending(addr)

    async def flushes_idle(self) -> None:
        """Return when no background flush runs (tests and tools wait for folds this way)."""
        await self._flusher.idle()

    def _schedule_flush(self, target: Target) -> bool:
        return self._flusher.schedule(target)

    async def flush(self, target: Target, *, dry_run: bool = False) -> FlushResult:
        return await self._flusher.flush(target, dry_run=dry_run)

    # -- reads --------------------------------------------------------------------

    async def read_raw(
        self, target: Target, *, after_seq: int, limit: int, chunk: int
    ) -> AsyncIterator[list[StoredMessage]]:
        """Page through the stored messages oldest first, ``chunk`` at a time.

        The next page is fetched while the caller encodes and sends this one, so that on
        a long read the store's round trip and decoding overlap the sending (with Redis,
        the server's work runs on another core)."""
        store, addr = target.runtime.store, target.addr
        remaining = limit or -1  # -1: no limit
        size = chunk if remaining < 0 else min(chunk, remaining)
        page = await store.read(addr, after_seq=after_seq, limit=size)
        pending: asyncio.Future[list[StoredMessage]] | None = None
        try:
            while page:
                if remaining > 0:
                    remaining -= len(page)
                full = len(page) == size
                if full and remaining != 0:
                    size = chunk if remaining < 0 else min(chunk, remaining)
                    pending = asyncio.ensure_future(store.read(addr, after_seq=page[-1].seq, limit=size))
                yield page
                if pending is None:
                    return
                page, pending = await pending, None
        finally:
            if pending is not None:  # the caller stopped early (cancelled, or the client went away)
                _discard(pending)

    async def read_context(self, target: Target, *, max_tokens: int) -> tuple[ContextView, InstanceMeta]:
        rt = target.runtime
        state = await rt.store.state(target.addr)
        args = (state, rt.budget, max_tokens or None, "system", rt.counter.count_message)
        if len(state.messages) > THREAD_THRESHOLD or _large_newest(state.messages):
            view = await asyncio.to_thread(engine.context_view, *args)
        else:
            view = engine.context_view(*args)
        return view, state.meta

    async def meta(self, target: Target) -> InstanceMeta:
        return await target.runtime.store.meta(target.addr)

    @property
    def watchers(self) -> int:
        """Watch streams running now (at most ``settings.max_watchers``)."""
        return self._watching.count

    def watch(
        self, target: Target, *, after_seq: int, chunk: int, stop: asyncio.Event
    ) -> AsyncGenerator[WatchEvent, None]:
        """The changes of ``target``'s instance (``watching.Watchers.watch``)."""
        return self._watching.watch(target.runtime.store, target.addr, after_seq=after_seq, chunk=chunk, stop=stop)

    # -- the daemon -----------------------------------------------------------------

    def operation(self, name: str, memory_id: str) -> AbstractContextManager[Any]:
        """Times one operation for ``memoryd_operation_duration_seconds``."""
        return self.metrics.operation(name, memory_id)

    async def health(self, target: Target | None) -> HealthReport:
        store = self.store
        reachable = True
        try:
            await store.ping()
        except MemorydError:
            reachable = False
        notes = tuple(f"memory {rt.resource.id}: model {rt.resource.model!r} is unknown; "
                      f"counting with {rt.counter.encoding_name}"
                      for rt in self.runtimes.values() if rt.counter.fallback)
        instance = None
        if target is not None:
            meta = await self.meta(target)
            rt = target.runtime
            instance = InstanceHealth(
                meta=meta, token_usage_ratio=meta.token_count / rt.budget.total,
                flush_pending=self.flush_pending(target.addr), over_threshold=meta.token_count >= rt.budget.flush_at,
                encoding=rt.counter.encoding_name, encoding_fallback=rt.counter.fallback,
            )
        return HealthReport(
            store_reachable=reachable, store=store.backend, breaker_state=store.breaker_state,
            encoding=tokens.counter_for_model(None).encoding_name, encoding_fallback=bool(notes), notes=notes,
            instance=instance,
        )

    def list_resources(self) -> list[ResourceInfo]:
        return [
            ResourceInfo(id=rt.resource.id, description=rt.resource.description, budget_tokens=rt.budget.total,
                         strategy=rt.resource.flushing_strategy.type, encoding=rt.counter.encoding_name,
                         settings=effective_settings(rt.resource))
            for rt in self.runtimes.values()
        ]

    async def clear(self, target: Target) -> int:
        target.require_write("Clear")
        removed = await target.runtime.store.clear(target.addr)
        self.metrics.instance_removed(target.resource.id, target.addr.instance_hash)
        return removed

    async def end_workflow(self, workflow_id: str) -> int:
        if not workflow_id:
            raise InvalidArgument("workflow_id", "required")
        counts = [await store.end_workflow(self.project.id, workflow_id) for store in self.stores]
        return sum(counts)
