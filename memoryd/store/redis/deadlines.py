"""Per-call timeouts for the store's calls, kept by one timer instead of one per call.

``asyncio.timeout`` schedules a ``TimerHandle`` on the loop's heap when a call begins
and cancels it when the call ends. Every store call does this, and under load that was
a measurable share of the daemon's CPU per append (docs/decisions.md, "Measured costs
behind the code").

All calls guarded by one ``Deadlines`` share one timeout, so their deadlines come in
the order the calls begin. A call registers in an insertion-ordered dict (O(1)) and
leaves it when it ends. One timer, armed for the oldest registered deadline, cancels
every call whose deadline has passed and re-arms itself for the next. Under steady
traffic it fires about once per timeout period; with no call in flight, not at all.

A call that runs out gets ``TimeoutError``; any other cancellation passes through
unchanged. This is the contract of ``asyncio.timeout``, and its cancel-count check
(``Task.uncancel``) is copied.

The timer does not cancel anything itself: it schedules the expiry for the next turn of
the loop. When the loop was held past a deadline (a large reply being decoded), a reply
that arrived meanwhile is read in the same turn as the timer fires, and its task is woken
one turn later; cancelling in the timer's own turn would throw that reply away and time
out a call that Redis answered in time (which the breaker would count as an outage).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


class Deadlines:
    """Runs calls under one shared timeout of ``timeout_s`` seconds."""

    def __init__(self, timeout_s: float) -> None:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        self.timeout_s = timeout_s
        self._calls: dict[asyncio.Task[object], float] = {}  # in deadline order
        self._expired: set[asyncio.Task[object]] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def __len__(self) -> int:
        """Calls in flight (for tests)."""
        return len(self._calls)

    async def run(self, op: Callable[[], Awaitable[T]]) -> T:
        """``await op()``, cancelled with TimeoutError if it lasts longer than ``timeout_s``."""
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        if loop is not self._loop:
            self._adopt(loop)
        if task is None or task in self._calls or loop is not self._loop:
            # Nested in a call of this instance, or another loop while the first has calls
            # in flight: the general-purpose timer keeps the per-call guarantee.
            async with asyncio.timeout(self.timeout_s):
                return await op()
        cancelling = task.cancelling()
        deadline = loop.time() + self.timeout_s
        self._calls[task] = deadline
        if self._timer is None:
            self._timer = loop.call_at(deadline, self._on_timer)
        try:
            return await op()
        except asyncio.CancelledError:
            if task in self._expired:
                self._expired.discard(task)
                if task.uncancel() <= cancelling:
                    raise TimeoutError(f"store call exceeded {self.timeout_s} s") from None
            raise
        finally:
            self._calls.pop(task, None)
            self._expired.discard(task)

    def _adopt(self, loop: asyncio.AbstractEventLoop) -> None:
        """Move to ``loop`` (a new ``asyncio.run``, as in tests) unless calls are in flight."""
        if self._calls:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._loop = loop

    def expire_all(self) -> None:
        """Time out every call in flight now (the breaker opened: none of them will be answered)."""
        if not self._calls:
            return
        current = asyncio.current_task()
        for task in list(self._calls):
            if task is current:
                continue
            del self._calls[task]
            if not task.done():
                self._expired.add(task)
                task.cancel()

    def _on_timer(self) -> None:
        """Expire one turn later, after the tasks whose replies this turn read have run."""
        assert self._loop is not None
        self._timer = self._loop.call_at(self._loop.time(), self._expire)

    def _expire(self) -> None:
        self._timer = None
        loop = self._loop
        assert loop is not None
        now = loop.time()
        calls = self._calls
        while calls:
            task, deadline = next(iter(calls.items()))
            if deadline > now:
                self._timer = loop.call_at(deadline, self._on_timer)
                return
            del calls[task]
            if not task.done():
                self._expired.add(task)
                task.cancel()
