"""Flushes of instances: planned in the pure engine, applied under the instance lock.

A flush takes the instance lock, reads the state, plans in the engine (in a worker thread
for large instances) and applies the plan with the store's fenced apply-flush, which checks
the lock's fence and the instance's epoch: an append made meanwhile is never lost, and a plan
never applies to a wiped and re-created instance. Background flushes, scheduled by an append
that crossed the threshold, run at most one per instance per daemon.

External folds (PlanFlush / ApplyFlush, docs/external-summaries.md): the caller's model writes
the summary of a plan the daemon made; the plan token names the state it was made on and the
store refuses the fold if another fold happened since. On a resource with ``flushing_strategy:
external`` a crossed threshold starts a timer instead of a fold: after ``external_timeout``
without a fold, the daemon folds by the hybrid rule.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from memoryd import engine, tokens, tracing
from memoryd.errors import (
    FailedPrecondition,
    InstanceChanged,
    InvalidArgument,
    LockContention,
    ResourceExhausted,
)
from memoryd.keys import InstanceAddr
from memoryd.metrics import Metrics, status_label
from memoryd.models import FlushOutcome, FlushPlan, InstanceMeta, InstanceState, StoredMessage, Summary
from memoryd.plantoken import PlanTokens
from memoryd.settings import Settings
from memoryd.store.base import LockLease
from memoryd.targets import Target

log = logging.getLogger("memoryd.manager")

# A lock acquisition that waited this long found the lock held (the first retry backs off >= 5 ms).
LOCK_CONTENDED_S = 0.005
# Above this many messages, planning and view selection run in a worker thread.
THREAD_THRESHOLD = 2000


@dataclass(frozen=True, slots=True)
class ExternalPlan:
    """PlanFlush's answer: the token naming the state, what the fold takes out, the
    summary it replaces and the most tokens the new summary may hold."""

    token: str
    messages: tuple[StoredMessage, ...]
    current_summary: str
    summary_max_tokens: int
    meta: InstanceMeta


@dataclass(frozen=True, slots=True)
class ExternalFold:
    """ApplyFlush's answer: the seqs folded, the summary stored, the counters after."""

    removed_seqs: tuple[int, ...]
    summary: Summary | None
    meta: InstanceMeta


@dataclass(frozen=True, slots=True)
class FlushResult:
    plan: FlushPlan
    applied: bool
    removed_seqs: tuple[int, ...]
    meta: InstanceMeta


def _now_ms() -> int:
    return int(time.time() * 1000)


PLAN_SECRET = "plan-token"  # the store's shared secret keying plan tokens when none is configured


class Flusher:
    """Runs flushes for the manager and keeps its background flushes (one per instance)."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.tokens = PlanTokens(settings.plan_token_key)
        self._flushes: dict[InstanceAddr, asyncio.Task[None]] = {}
        # external resources: the timer of a due fold, one per instance per daemon
        self._fallbacks: dict[InstanceAddr, asyncio.Task[None]] = {}

    def pending(self, addr: InstanceAddr) -> bool:
        return addr in self._flushes or addr in self._fallbacks

    def schedule(self, target: Target, meta: InstanceMeta | None = None) -> bool:
        """At most one background flush per instance per daemon; never on the append path.

        On an ``external`` resource, the fold is the caller's (PlanFlush/ApplyFlush): this
        starts the ``external_timeout`` timer instead, from the counters ``meta`` that made the
        fold due (``_fallback``)."""
        if target.resource.flushing_strategy.type == "external" and meta is not None:
            if target.addr in self._fallbacks or target.addr in self._flushes:
                return False
            self._fallbacks[target.addr] = asyncio.create_task(
                self._fallback(target, meta), name=f"fold-due-{target.addr.instance_hash}")
            return True
        return self._start(target, None)

    def _start(self, target: Target, expect_flush_count: int | None) -> bool:
        if target.addr in self._flushes:
            return False
        task = asyncio.create_task(self._background_flush(target, expect_flush_count),
                                   name=f"flush-{target.addr.instance_hash}")
        self._flushes[target.addr] = task
        return True

    async def _fallback(self, target: Target, due: InstanceMeta) -> None:
        """Fold by the hybrid rule when no fold happened ``external_timeout`` after one became
        due, so that storage stays bounded when the caller never folds.

        A fold by anyone (an ApplyFlush, another daemon's fallback) restarts the wait if the
        instance is still over its threshold; the fold itself is fenced, and refused by the
        store if any other fold lands between its read and its write (the fold count)."""
        rt = target.runtime
        try:
            while True:
                await asyncio.sleep(rt.resource.flushing_strategy.external_timeout_s)  # the timeout itself
                meta = await rt.store.meta(target.addr)
                if not engine.needs_flush(meta, rt.resource, rt.budget):
                    return
                if (meta.epoch, meta.flush_count) == (due.epoch, due.flush_count):
                    break
                due = meta  # folded (or wiped and re-created) meanwhile, and due again: a new period
        except Exception as exc:  # a background task has no caller to report to
            log.warning("external fold fallback failed: %s", type(exc).__name__,
                        extra={"event": "flush", "memory_id": rt.resource.id,
                               "instance_hash": target.addr.instance_hash, "status": "error"})
            return
        finally:
            self._fallbacks.pop(target.addr, None)
        log.info("no external fold within external_timeout: folding by rule",
                 extra={"event": "flush_fallback", "memory_id": rt.resource.id,
                        "instance_hash": target.addr.instance_hash})
        self._start(target, due.flush_count)

    @tracing.background_flush
    async def _background_flush(self, target: Target, expect_flush_count: int | None = None) -> None:
        fields = {"event": "flush", "memory_id": target.resource.id, "instance_hash": target.addr.instance_hash}
        try:
            with self.metrics.operation("background_flush", target.resource.id):
                result = await self.flush(target, expect_flush_count=expect_flush_count)
            log.info("flush", extra={**fields, "status": "ok", "removed": len(result.removed_seqs)})
        except LockContention:  # another daemon is flushing this instance: nothing to do
            log.info("flush skipped: instance lock held elsewhere", extra={**fields, "status": "contended"})
        except Exception as exc:  # a background task has no caller to report to
            log.warning("background flush failed: %s", type(exc).__name__, extra={**fields, "status": "error"})
        finally:
            self._flushes.pop(target.addr, None)

    async def _read_and_plan(self, target: Target) -> tuple[FlushPlan, InstanceState]:
        """The rule-based plan of the instance as it is now, and the state it was made from.
        The plan names that state (epoch, fold count): applied elsewhere, it is refused."""
        rt = target.runtime
        state = await rt.store.state(target.addr)
        count = functools.partial(rt.counter.count_message, "system")
        args = (state, rt.resource, rt.budget, count, _now_ms())
        if len(state.messages) > THREAD_THRESHOLD:
            plan = await asyncio.to_thread(engine.plan_flush, *args)
        else:
            plan = engine.plan_flush(*args)
        return dataclasses.replace(plan, epoch=state.meta.epoch, flush_count=state.meta.flush_count), state

    @tracing.fold
    async def _plan(self, target: Target) -> FlushPlan:
        return (await self._read_and_plan(target))[0]

    async def flush(
        self, target: Target, *, dry_run: bool = False, expect_flush_count: int | None = None
    ) -> FlushResult:
        """The rule-based fold. ``expect_flush_count``: fold only if no fold happened since
        the instance was at that count (an external resource's fallback)."""
        target.require_write("Flush")
        if dry_run:
            plan = await self._plan(target)
            return FlushResult(plan, False, (), await target.runtime.store.meta(target.addr))
        rt = target.runtime
        strategy = rt.resource.flushing_strategy.type
        async with self._fold_lock(target, strategy) as lease:
            plan = await self._plan(target)
            if expect_flush_count is not None and plan.flush_count != expect_flush_count:
                plan = dataclasses.replace(plan, remove_seqs=(), summary=None)  # folded meanwhile
            if not plan.remove_seqs and plan.summary is None:
                self.metrics.flushed(rt.resource.id, strategy, "noop")
                return FlushResult(plan, False, (), await rt.store.meta(target.addr))
            outcome = await self._apply(target, plan, lease)
        self._folded(target, strategy, max(0, plan.tokens_before - plan.tokens_after), outcome)
        return FlushResult(plan, True, outcome.removed_seqs, outcome.meta)

    @contextlib.asynccontextmanager
    async def _fold_lock(self, target: Target, strategy: str) -> AsyncIterator[LockLease]:
        """The instance lock for one fold, with the fold's metrics: the lock wait (a timeout
        counted as contention), and the outcome label of a fold that fails."""
        rt, s, mid = target.runtime, self.settings, target.runtime.resource.id
        started = time.perf_counter()
        acquired = False
        try:
            async with rt.store.lock(target.addr, ttl_ms=s.flush_lock_ttl_ms,
                                     acquire_timeout_s=s.lock_acquire_timeout) as lease:
                acquired = True
                waited = time.perf_counter() - started
                self.metrics.lock_acquire(mid, waited, acquired=True, contended=waited >= LOCK_CONTENDED_S)
                yield lease
        except Exception as exc:
            if not acquired and isinstance(exc, LockContention):
                self.metrics.lock_acquire(mid, time.perf_counter() - started, acquired=False, contended=True)
            self.metrics.flushed(mid, strategy, status_label(exc))
            raise

    @staticmethod
    async def _apply(target: Target, plan: FlushPlan, lease: LockLease) -> FlushOutcome:
        rt = target.runtime
        ttl = rt.resource.persistence.ttl_s
        return await rt.store.apply_flush(target.addr, plan, fence=lease.fence,
                                          ttl_ms=None if ttl is None else int(ttl * 1000), history=rt.history)

    def _folded(self, target: Target, strategy: str, tokens_saved: int, outcome: FlushOutcome) -> None:
        rt, mid = target.runtime, target.runtime.resource.id
        self.metrics.flushed(mid, strategy, "ok", tokens_saved=tokens_saved)
        self.metrics.messages_evicted(mid, strategy, len(outcome.removed_seqs))
        self.metrics.instance_tokens(mid, target.addr.instance_hash, outcome.meta.token_count,
                                     rt.resource.persistence.ttl_s)

    # -- external folds: the caller's model writes the summary ---------------------------

    @staticmethod
    def _require_summary_strategy(target: Target, operation: str) -> None:
        target.require_write(operation)
        if not target.resource.flushing_strategy.summarises:
            raise FailedPrecondition(f"{operation}: memory '{target.resource.id}' uses flushing_strategy fifo, "
                                     "which keeps no summary (use Flush)")

    async def plan_external(self, target: Target) -> ExternalPlan:
        """What the rule-based fold would take out now, for a summary the caller writes.
        Changes nothing and takes no lock: the token names the state, and ApplyFlush is
        refused if the state moved on (another fold, a Clear)."""
        self._require_summary_strategy(target, "PlanFlush")
        plan, state = await self._read_and_plan(target)
        folded = frozenset(plan.remove_seqs)
        messages = tuple(m for m in state.messages if m.seq in folded)
        old = state.summary
        through = max([*plan.remove_seqs, old.through_seq if old is not None else 0])
        signer = await self.tokens.ready(functools.partial(target.runtime.store.shared_secret, PLAN_SECRET))
        token = signer.issue(target.addr, epoch=state.meta.epoch, flush_count=state.meta.flush_count,
                                  through_seq=through, seqs=plan.remove_seqs)
        pinned = sum(m.token_count for m in state.messages if m.pinned)
        return ExternalPlan(token, messages, old.content if old is not None else "",
                            engine.summary_room(target.runtime.budget, pinned), state.meta)

    async def apply_external(self, target: Target, plan_token: str, summary: str) -> ExternalFold:
        """Fold exactly the planned seqs under ``summary``, iff no other fold happened since
        the plan (FoldedMeanwhile) and the instance is the one planned on (InstanceChanged):
        both checked by the store atomically with the fold, under the instance lock and its
        fence like any flush. Messages appended meanwhile have higher seqs and stay live."""
        self._require_summary_strategy(target, "ApplyFlush")
        rt = target.runtime
        signer = await self.tokens.ready(functools.partial(rt.store.shared_secret, PLAN_SECRET))
        planned = signer.verify(target.addr, plan_token)
        if not planned.seqs:  # the plan folds nothing: nothing to apply
            state = await rt.store.state(target.addr)
            return ExternalFold((), state.summary, state.meta)
        if not summary.strip():
            raise InvalidArgument("summary", f"required: the plan folds {len(planned.seqs)} messages")
        if tokens.counts_inline(summary):
            n_tokens = rt.counter.count_message("system", summary)
        else:
            n_tokens = await tokens.count_message_async(rt.counter, "system", summary)
        async with self._fold_lock(target, "external") as lease:
            before = await rt.store.meta(target.addr)
            cap = engine.summary_room(rt.budget, before.pinned_tokens)
            if n_tokens > cap:
                raise ResourceExhausted(f"summary: {n_tokens} tokens, more than the {cap} a summary may hold "
                                        "(summary_max_tokens); nothing changed")
            new = Summary(summary, n_tokens, planned.through_seq, _now_ms())
            plan = FlushPlan("external", planned.seqs, new, before.token_count, before.token_count,
                             epoch=planned.epoch, flush_count=planned.flush_count)
            outcome = await self._apply(target, plan, lease)
            if not outcome.meta.flush_count:  # the store found no instance: cleared since the plan
                raise InstanceChanged("the instance was cleared since the plan: plan again")
        self._folded(target, "external", max(0, before.token_count - outcome.meta.token_count), outcome)
        return ExternalFold(outcome.removed_seqs, new, outcome.meta)

    async def idle(self) -> None:
        """Return when no background flush runs (including those they scheduled meanwhile)."""
        while self._flushes:
            await asyncio.gather(*list(self._flushes.values()), return_exceptions=True)

    async def close(self, flush_grace_s: float | None) -> None:
        """Let running flushes finish (they hold the instance lock) for at most
        ``flush_grace_s`` (None: as long as they take) and cancel the rest.

        A cancelled flush loses nothing: it either applied its plan atomically or did not
        (the fence and the apply-flush script), and its lock lapses within its lease.
        Fallback timers of external resources are cancelled at once (they hold nothing; a
        daemon that appends to the instance later starts its own)."""
        timers = list(self._fallbacks.values())
        for timer in timers:
            timer.cancel()
        await asyncio.gather(*timers, return_exceptions=True)
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
