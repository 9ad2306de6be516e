"""The embedded in-process store: the zero-setup default backend.

It implements the same protocol as the Redis store and passes the same conformance
suite. State lives in this process only: it is lost on restart and not shared with
other daemons (use Redis for that). Every method runs without awaiting in the middle
of a mutation, so each mutation is atomic with respect to the event loop.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field, replace

from memoryd.errors import (
    FenceRejected,
    IdempotencyConflict,
    InstanceChanged,
    LockContention,
    PinnedTierFull,
    ToolCallRefused,
)
from memoryd.keys import InstanceAddr
from memoryd.models import (
    AppendedRef,
    AppendOutcome,
    FlushOutcome,
    FlushPlan,
    InstanceMeta,
    InstanceState,
    NewMessage,
    StoredMessage,
    Summary,
)
from memoryd.store.base import LockLease
from memoryd.store.calls import batch_calls
from memoryd.store.digest import batch_digest

DEFAULT_IDEMPOTENCY_WINDOW_MS = 86_400_000  # as the Redis store: caller keys, when the instance has no TTL


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class _Instance:
    messages: dict[int, StoredMessage] = field(default_factory=dict)  # insertion order == seq order
    # The stored seqs, ascending: a paged read finds its first message by bisection
    # instead of walking every older one (a RAW read of n messages was O(n^2 / page)).
    seqs: list[int] = field(default_factory=list)
    meta: InstanceMeta = field(default_factory=lambda: InstanceMeta(epoch=uuid.uuid4().hex))
    summary: Summary | None = None
    # key -> (digest of the batch, its refs, expiry on the store's clock); insertion order is
    # expiry order while the window stays the same, so expired records are pruned from the front.
    idempotency: dict[str, tuple[str, tuple[AppendedRef, ...], float]] = field(default_factory=dict)
    expires_at: float | None = None  # deadline on the store's clock
    workflow_id: str | None = None
    # Every tool call id made in this incarnation -> seq of the message that made it
    # (memoryd.store.calls); folds do not remove them.
    calls: dict[str, int] = field(default_factory=dict)


class EmbeddedStore:
    """In-process MemoryStore. TTL is enforced lazily on access and by a sweeper task."""

    def __init__(
        self,
        *,
        sweep_interval_s: float = 5.0,
        idempotency_window_ms: int = DEFAULT_IDEMPOTENCY_WINDOW_MS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``clock`` (seconds, monotonic) decides TTL and idempotency expiry; tests pass their own."""
        self._clock = clock
        self._idempotency_window_s = idempotency_window_ms / 1000
        self._instances: dict[InstanceAddr, _Instance] = {}
        self._locks: dict[InstanceAddr, asyncio.Lock] = {}
        self._fences: dict[InstanceAddr, int] = {}
        self._workflows: dict[tuple[str, str], set[InstanceAddr]] = {}
        self._sweep_interval_s = sweep_interval_s
        self._sweeper: asyncio.Task[None] | None = None
        self._changed: dict[InstanceAddr, asyncio.Event] = {}

    @property
    def backend(self) -> str:
        return "embedded"

    @property
    def breaker_state(self) -> str:
        return "closed"

    async def start(self) -> None:
        if self._sweeper is None:
            self._sweeper = asyncio.create_task(self._sweep_forever(), name="memoryd-embedded-ttl")

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None

    async def ping(self) -> None:
        return None

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self._sweep_interval_s)
            now = self._clock()
            for addr in [a for a, i in self._instances.items() if i.expires_at is not None and i.expires_at <= now]:
                self._drop(addr)
            for inst in self._instances.values():  # records of instances that see no keyed append
                self._prune_idempotency(inst)

    def _notify(self, addr: InstanceAddr) -> None:
        event = self._changed.pop(addr, None)
        if event is not None:
            event.set()

    async def wait_for_change(self, addr: InstanceAddr, *, after_seq: int, timeout_s: float) -> None:
        inst = self._get(addr)
        if inst is not None and inst.meta.last_seq > after_seq:
            return
        event = self._changed.setdefault(addr, asyncio.Event())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout_s)

    def _drop(self, addr: InstanceAddr) -> int:
        inst = self._instances.pop(addr, None)
        if inst is None:
            return 0
        self._notify(addr)
        if inst.workflow_id is not None:
            members = self._workflows.get((addr.project, inst.workflow_id))
            if members is not None:
                members.discard(addr)
                if not members:
                    del self._workflows[(addr.project, inst.workflow_id)]
        lock = self._locks.get(addr)
        if lock is None or not lock.locked():  # a held lock keeps its fence monotonic
            self._locks.pop(addr, None)
            self._fences.pop(addr, None)
        return len(inst.messages)

    def _get(self, addr: InstanceAddr) -> _Instance | None:
        inst = self._instances.get(addr)
        if inst is not None and inst.expires_at is not None and inst.expires_at <= self._clock():
            self._drop(addr)
            return None
        return inst

    def _touch(self, inst: _Instance, ttl_ms: int | None) -> None:
        inst.expires_at = None if ttl_ms is None else self._clock() + ttl_ms / 1000

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
        inst = self._get(addr)
        digest = batch_digest(messages) if idempotency_key else ""
        if inst is not None and idempotency_key:
            self._prune_idempotency(inst)
            record = inst.idempotency.get(idempotency_key)
            if record is not None:
                if record[0] != digest:
                    raise IdempotencyConflict(
                        "idempotency_key: already used for a different batch; nothing was stored (use a new key)"
                    )
                return AppendOutcome(refs=record[1], meta=inst.meta, replayed=True)
        calls = batch_calls(messages)
        if calls.new or calls.answers:
            known = inst.calls if inst is not None else {}
            for call_id, pos in calls.answers:
                if call_id not in known:
                    raise ToolCallRefused(pos, None, call_id)
            for call_id, pos, j in calls.new:
                if call_id in known:
                    raise ToolCallRefused(pos, j, call_id)
        pinned_now = inst.meta.pinned_tokens if inst is not None else 0
        new_pinned = sum(m.token_count for m in messages if m.pinned)
        if pinned_cap is not None and new_pinned and pinned_now + new_pinned > pinned_cap:
            raise PinnedTierFull(f"pinned tier full: {pinned_now} + {new_pinned} tokens > cap {pinned_cap}")
        if inst is None:
            inst = self._instances[addr] = _Instance()
        meta = inst.meta
        now = _now_ms()
        seq = meta.last_seq
        refs = []
        for msg in messages:
            seq += 1
            stored = StoredMessage(
                seq=seq, id=uuid.uuid4().hex, role=msg.role, content=msg.content,
                content_type=msg.content_type, priority=msg.priority,
                effective_priority=msg.effective_priority, token_count=msg.token_count,
                created_at_ms=now, metadata=dict(msg.metadata), tool_calls=msg.tool_calls,
                tool_call_id=msg.tool_call_id, name=msg.name, parts=msg.parts, extra=msg.extra,
            )
            inst.messages[seq] = stored
            inst.seqs.append(seq)
            refs.append(AppendedRef(seq, stored.id, msg.token_count, msg.effective_priority, now))
        first = meta.last_seq + 1
        for call_id, pos, _ in calls.new:
            inst.calls[call_id] = first + pos
        inst.meta = replace(
            meta,
            message_count=meta.message_count + len(messages),
            pinned_tokens=meta.pinned_tokens + new_pinned,
            recent_tokens=meta.recent_tokens + sum(m.token_count for m in messages if not m.pinned),
            last_seq=seq,
        )
        if idempotency_key:
            window = ttl_ms / 1000 if ttl_ms is not None and ttl_ms > 0 else self._idempotency_window_s
            inst.idempotency[idempotency_key] = (digest, tuple(refs), self._clock() + window)
        if workflow_id is not None:
            inst.workflow_id = workflow_id
            self._workflows.setdefault((addr.project, workflow_id), set()).add(addr)
        self._touch(inst, ttl_ms)
        self._notify(addr)
        return AppendOutcome(refs=tuple(refs), meta=inst.meta)

    def _prune_idempotency(self, inst: _Instance) -> None:
        now = self._clock()
        records = inst.idempotency
        while records:
            key = next(iter(records))
            if records[key][2] > now:
                return
            del records[key]

    async def read(self, addr: InstanceAddr, *, after_seq: int = 0, limit: int = 0) -> list[StoredMessage]:
        inst = self._get(addr)
        if inst is None:
            return []
        if after_seq <= 0 and limit == 0:
            return list(inst.messages.values())
        start = bisect.bisect_right(inst.seqs, after_seq)
        page = inst.seqs[start : start + limit] if limit else inst.seqs[start:]
        return list(map(inst.messages.__getitem__, page))

    async def state(self, addr: InstanceAddr) -> InstanceState:
        inst = self._get(addr)
        if inst is None:
            return InstanceState(meta=InstanceMeta(), summary=None, messages=())
        return InstanceState(meta=inst.meta, summary=inst.summary, messages=tuple(inst.messages.values()))

    async def meta(self, addr: InstanceAddr) -> InstanceMeta:
        inst = self._get(addr)
        return inst.meta if inst is not None else InstanceMeta()

    async def apply_flush(
        self, addr: InstanceAddr, plan: FlushPlan, *, fence: int, ttl_ms: int | None = None
    ) -> FlushOutcome:
        current_fence = self._fences.get(addr, 0)
        if fence != current_fence:
            raise FenceRejected(f"stale fence {fence}, instance is at {current_fence}")
        inst = self._get(addr)
        if inst is None:
            return FlushOutcome(removed_seqs=(), meta=InstanceMeta())
        if plan.epoch and plan.epoch != inst.meta.epoch:
            raise InstanceChanged("the instance was cleared and created again since the flush read it")
        removed = [inst.messages.pop(seq) for seq in plan.remove_seqs if seq in inst.messages]
        if removed:
            inst.seqs = list(inst.messages)
        meta = inst.meta
        summary_tokens = meta.summary_tokens
        if plan.summary is not None:
            inst.summary = plan.summary
            summary_tokens = plan.summary.token_count
        inst.meta = replace(
            meta,
            message_count=meta.message_count - len(removed),
            pinned_tokens=meta.pinned_tokens - sum(m.token_count for m in removed if m.pinned),
            recent_tokens=meta.recent_tokens - sum(m.token_count for m in removed if not m.pinned),
            summary_tokens=summary_tokens,
            flush_count=meta.flush_count + 1,
            last_flush_at_ms=_now_ms(),
            evicted=meta.evicted + (len(removed) if plan.strategy == "fifo" else 0),
        )
        self._touch(inst, ttl_ms)
        self._notify(addr)
        return FlushOutcome(removed_seqs=tuple(m.seq for m in removed), meta=inst.meta)

    async def clear(self, addr: InstanceAddr) -> int:
        self._get(addr)
        return self._drop(addr)

    @asynccontextmanager
    async def _locked(self, addr: InstanceAddr, acquire_timeout_s: float) -> AsyncIterator[LockLease]:
        lock = self._locks.setdefault(addr, asyncio.Lock())
        try:
            await asyncio.wait_for(lock.acquire(), acquire_timeout_s)
        except TimeoutError:
            raise LockContention(f"instance lock not acquired within {acquire_timeout_s:.3g}s") from None
        try:
            fence = self._fences.get(addr, 0) + 1
            self._fences[addr] = fence
            yield LockLease(fence=fence)
        finally:
            lock.release()

    def lock(
        self, addr: InstanceAddr, *, ttl_ms: int, acquire_timeout_s: float
    ) -> AbstractAsyncContextManager[LockLease]:
        """In-process lock: it cannot expire, so ``ttl_ms`` is not needed here."""
        return self._locked(addr, acquire_timeout_s)

    async def end_workflow(self, project: str, workflow_id: str) -> int:
        members = list(self._workflows.get((project, workflow_id), ()))
        for addr in members:
            self._drop(addr)
        return len(members)

