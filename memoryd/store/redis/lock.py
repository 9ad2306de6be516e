"""The instance flush lock: redis-py's asyncio ``Lock`` plus what it lacks.

redis-py's Lock (SET NX PX, Lua release/extend) is the lock algorithm; this wrapper
adds, without writing a new algorithm:

* one ``Lock`` object per acquisition (its token is per *thread*, so sharing one object
  between tasks would let any task release another's lock);
* acquisition with a timeout and jittered exponential backoff -> LockContention;
* automatic extension while held (a task extending to the full TTL every TTL/3), stopped
  by a flag as well as a cancel: a renewal in flight can complete and swallow the cancel
  (redis-py sends under ``asyncio.wait_for``, which on Python 3.11 returns an inner result
  that arrived with the cancel), and the loop must end anyway;
* a fencing token taken right after acquiring (``fence``: the store's script that
  raises the instance's fence), returned as ``LockLease(fence)``. The lock is only
  advisory: a paused process, or a failover that loses the key, can leave two holders.
  The apply-flush script accepts a plan only with the current fence, so the stale
  holder's plan is refused (FenceRejected) instead of deleting what it should not.

Every Redis call goes through the store's guard (circuit breaker, per-call timeout).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Protocol, TypeVar

from redis.asyncio import Redis, RedisCluster
from redis.asyncio.lock import Lock
from redis.exceptions import LockError

from memoryd.errors import LockContention, StoreUnavailable
from memoryd.store.base import LockLease

log = logging.getLogger(__name__)
T = TypeVar("T")

BACKOFF_BASE_S = 0.01
BACKOFF_CAP_S = 0.25


class Guard(Protocol):
    """Runs one Redis operation under the store's breaker; infrastructure errors -> StoreUnavailable."""

    async def __call__(self, op: Callable[[], Awaitable[T]], /) -> T: ...


_RNG = random.Random()


def backoff_s(attempt: int, rng: random.Random | None = None) -> float:
    """Equal-jitter exponential backoff: half fixed, half random, capped."""
    step: float = min(BACKOFF_CAP_S, BACKOFF_BASE_S * (2 ** min(attempt, 16)))
    return step / 2 + (rng or _RNG).uniform(0, step / 2)


class InstanceLock:
    """One acquisition of one instance's lock; an async context manager yielding a LockLease."""

    def __init__(
        self,
        client: Redis | RedisCluster,
        name: str,
        *,
        ttl_ms: int,
        acquire_timeout_s: float,
        guard: Guard,
        fence: Callable[[], Awaitable[int]],
    ) -> None:
        if ttl_ms <= 0:
            raise ValueError("lock ttl_ms must be positive")
        self.name = name
        self._ttl_s = ttl_ms / 1000
        self._acquire_timeout_s = acquire_timeout_s
        self._guard = guard
        self._fence = fence
        self._lock = Lock(client, name, timeout=self._ttl_s, thread_local=False)
        self._extender: asyncio.Task[None] | None = None
        self._stopping = False  # the extender's stop signal, for when its cancel is lost
        self.lost = False  # set when an extension found the lock taken over (expired while held)

    async def __aenter__(self) -> LockLease:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._acquire_timeout_s
        attempt = 0
        while not await self._guard(lambda: self._lock.acquire(blocking=False)):
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise LockContention(f"instance lock not acquired within {self._acquire_timeout_s:.3g}s")
            attempt += 1
            await asyncio.sleep(min(remaining, backoff_s(attempt)))  # backoff between attempts
        try:
            fence = await self._fence()
        except BaseException:
            await self._release()
            raise
        self._extender = asyncio.create_task(self._extend_forever(), name=f"memoryd-lock-extend:{self.name}")
        return LockLease(fence=fence)

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        extender, self._extender = self._extender, None
        try:
            if extender is not None:
                self._stopping = True
                extender.cancel()
                await asyncio.wait([extender])  # its end, not its CancelledError; a cancel of ours propagates
                if not extender.cancelled() and extender.exception() is not None:
                    log.warning("instance lock renewal failed: %r", extender.exception(),
                                extra={"event": "lock_renewal_failed"})
        finally:
            await self._release()

    async def _release(self) -> None:
        try:
            await self._guard(self._lock.release)
        except LockError:
            self.lost = True
            log.warning("instance lock had expired before release", extra={"event": "lock_expired"})
        except StoreUnavailable:
            pass  # it expires by itself after its TTL

    async def _extend_forever(self) -> None:
        while not self._stopping:
            await asyncio.sleep(self._ttl_s / 3)  # the renewal period, not synchronisation
            if self._stopping:
                return
            try:
                await self._guard(lambda: self._lock.extend(self._ttl_s, replace_ttl=True))
            except LockError:
                self.lost = True
                log.warning("instance lock lost while held", extra={"event": "lock_lost"})
                return
            except StoreUnavailable:
                continue  # try again next period; the fence protects a flush if it expires meanwhile
