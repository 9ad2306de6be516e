"""Flushes of instances: planned in the pure engine, applied under the instance lock.

A flush takes the instance lock, reads the state, plans in the engine (in a worker thread
for large instances) and applies the plan with the store's fenced apply-flush, which checks
the lock's fence and the instance's epoch: an append made meanwhile is never lost, and a plan
never applies to a wiped and re-created instance. Background flushes, scheduled by an append
that crossed the threshold, run at most one per instance per daemon.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import time
from dataclasses import dataclass

from memoryd import engine, tracing
from memoryd.errors import FenceRejected, LockContention
from memoryd.keys import InstanceAddr
from memoryd.metrics import Metrics, status_label
from memoryd.models import FlushOutcome, FlushPlan, InstanceMeta
from memoryd.settings import Settings
from memoryd.targets import Target

log = logging.getLogger("memoryd.manager")

# A lock acquisition that waited this long found the lock held (the first retry backs off >= 5 ms).
LOCK_CONTENDED_S = 0.005
# Above this many messages, planning and view selection run in a worker thread.
THREAD_THRESHOLD = 2000


@dataclass(frozen=True, slots=True)
class FlushResult:
    plan: FlushPlan
    applied: bool
    removed_seqs: tuple[int, ...]
    meta: InstanceMeta


def _now_ms() -> int:
    return int(time.time() * 1000)


class Flusher:
    """Runs flushes for the manager and keeps its background flushes (one per instance)."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self._flushes: dict[InstanceAddr, asyncio.Task[None]] = {}

    def pending(self, addr: InstanceAddr) -> bool:
        return addr in self._flushes

    def schedule(self, target: Target) -> bool:
        """At most one background flush per instance per daemon; never on the append path."""
        if target.addr in self._flushes:
            return False
        task = asyncio.create_task(self._background_flush(target), name=f"flush-{target.addr.instance_hash}")
        self._flushes[target.addr] = task
        return True

    @tracing.background_flush
    async def _background_flush(self, target: Target) -> None:
        fields = {"event": "flush", "memory_id": target.resource.id, "instance_hash": target.addr.instance_hash}
        try:
            with self.metrics.operation("background_flush", target.resource.id):
                result = await self.flush(target)
            log.info("flush", extra={**fields, "status": "ok", "removed": len(result.removed_seqs)})
        except LockContention:  # another daemon is flushing this instance: nothing to do
            log.info("flush skipped: instance lock held elsewhere", extra={**fields, "status": "contended"})
        except Exception as exc:  # a background task has no caller to report to
            log.warning("background flush failed: %s", type(exc).__name__, extra={**fields, "status": "error"})
        finally:
            self._flushes.pop(target.addr, None)

    @tracing.fold
    async def _plan(self, target: Target) -> FlushPlan:
        rt = target.runtime
        state = await rt.store.state(target.addr)
        count = functools.partial(rt.counter.count_message, "system")
        args = (state, rt.resource, rt.budget, count, _now_ms())
        if len(state.messages) > THREAD_THRESHOLD:
            plan = await asyncio.to_thread(engine.plan_flush, *args)
        else:
            plan = engine.plan_flush(*args)
        return dataclasses.replace(plan, epoch=state.meta.epoch)

    async def flush(self, target: Target, *, dry_run: bool = False) -> FlushResult:
        target.require_write("Flush")
        if dry_run:
            plan = await self._plan(target)
            return FlushResult(plan, False, (), await target.runtime.store.meta(target.addr))
        s, rt = self.settings, target.runtime
        mid, strategy = rt.resource.id, rt.resource.flushing_strategy.type
        started = time.perf_counter()
        try:
            async with rt.store.lock(target.addr, ttl_ms=s.flush_lock_ttl_ms,
                                     acquire_timeout_s=s.lock_acquire_timeout) as lease:
                waited = time.perf_counter() - started
                self.metrics.lock_acquire(mid, waited, acquired=True, contended=waited >= LOCK_CONTENDED_S)
                plan = await self._plan(target)
                if not plan.remove_seqs and plan.summary is None:
                    self.metrics.flushed(mid, strategy, "noop")
                    return FlushResult(plan, False, (), await rt.store.meta(target.addr))
                ttl = rt.resource.persistence.ttl_s
                outcome: FlushOutcome = await rt.store.apply_flush(
                    target.addr, plan, fence=lease.fence, ttl_ms=None if ttl is None else int(ttl * 1000),
                    history=rt.history,
                )
        except LockContention as exc:
            if not isinstance(exc, FenceRejected):
                self.metrics.lock_acquire(mid, time.perf_counter() - started, acquired=False, contended=True)
            self.metrics.flushed(mid, strategy, status_label(exc))
            raise
        except Exception as exc:
            self.metrics.flushed(mid, strategy, status_label(exc))
            raise
        self.metrics.flushed(mid, strategy, "ok", tokens_saved=max(0, plan.tokens_before - plan.tokens_after))
        self.metrics.messages_evicted(mid, strategy, len(outcome.removed_seqs))
        self.metrics.instance_tokens(mid, target.addr.instance_hash, outcome.meta.token_count,
                                     rt.resource.persistence.ttl_s)
        return FlushResult(plan, True, outcome.removed_seqs, outcome.meta)

    async def idle(self) -> None:
        """Return when no background flush runs (including those they scheduled meanwhile)."""
        while self._flushes:
            await asyncio.gather(*list(self._flushes.values()), return_exceptions=True)

    async def close(self, flush_grace_s: float | None) -> None:
        """Let running flushes finish (they hold the instance lock) for at most
        ``flush_grace_s`` (None: as long as they take) and cancel the rest.

        A cancelled flush loses nothing: it either applied its plan atomically or did not
        (the fence and the apply-flush script), and its lock lapses within its lease."""
        pending = list(self._flushes.values())
        if not pending:
            return
        _done, late = await asyncio.wait(pending, timeout=flush_grace_s)
        for task in late:
            task.cancel()
        if late:
            log.warning("shutdown cancelled %d flush(es) still running after %ss", len(late), flush_grace_s,
                        extra={"event": "flush_cancelled"})
            await asyncio.gather(*late, return_exceptions=True)
