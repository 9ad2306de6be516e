"""The circuit breaker around every Redis call: pybreaker's state machine, asyncio-safe.

pybreaker 1.4.1 has no asyncio support: ``breaker.call(async_fn)`` only times the
creation of the coroutine, so failures are never counted, and ``call_async`` needs
Tornado. ``with breaker.calling(): await op()`` does count, but every exception that
is *excluded* (and CancelledError must be, or a cancelled gRPC call trips the breaker)
is recorded as a *success*: it resets the failure count and closes a half-open
breaker. So this module keeps pybreaker as the state machine (closed / open /
half-open, fail_max, reset_timeout, listeners) and feeds it outcomes itself:

* admission, before the call: open and within ``reset_timeout`` -> fail fast with
  StoreUnavailable; open and past it -> exactly one trial call at a time (pybreaker
  lets every concurrent caller through in half-open under asyncio);
* the call runs under a timeout (``deadlines.Deadlines``: one timer for all calls, not
  one ``asyncio.timeout`` per call): ``timeout_s`` for calls whose work is bounded
  (appends, scripts, pings, the lock), the longer ``bulk_timeout_s`` for *bulk* reads,
  whose reply grows with the instance (a whole instance, an unbounded range);
* afterwards the outcome is recorded synchronously through ``CircuitBreaker.call``:
  infrastructure errors (connection refused/reset, timeouts, LOADING, cluster down or
  unreachable, read-only replica after a failover, redis-py's own failures mid-failover)
  count as failures, except two kinds of timeout that are no evidence that Redis is down:
  the timeout of a bulk read (a large read is slow because it is large), and any timeout
  of a call during which Redis answered another call (Redis is up; the call was slow
  because of its own work, or the daemon's loop was busy decoding a large reply). A hung
  Redis answers nothing, so its timeouts count, as do the readiness PING's. A reply from
  Redis of any other kind (script errors, NOSCRIPT, WRONGTYPE, memoryd's own errors)
  counts as a success, because Redis answered; a cancellation records nothing.

Exceptions leave ``call`` unchanged: the Redis store translates them into memoryd's
errors in one place (``memoryd.store.redis.store.translate``), by this classification.

A background probe (``run_probe``) makes the half-open trial itself, so the breaker
closes again when Redis is back even if no traffic arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pybreaker
import redis
import redis.exceptions as rex

from memoryd.config.model import CircuitBreaker
from memoryd.errors import StoreUnavailable
from memoryd.store.redis.deadlines import Deadlines

log = logging.getLogger(__name__)
T = TypeVar("T")

CLOSED, OPEN, HALF_OPEN = pybreaker.STATE_CLOSED, pybreaker.STATE_OPEN, pybreaker.STATE_HALF_OPEN


_INFRA_ERRORS: tuple[type[BaseException], ...] = (
    StoreUnavailable,
    rex.ConnectionError,  # includes BusyLoadingError, AuthenticationError, MaxConnectionsError, sentinel errors
    rex.TimeoutError,
    rex.ClusterDownError,  # CLUSTERDOWN; includes MasterDownError (MASTERDOWN)
    rex.RedisClusterUnreachableError,  # no node of the Cluster answers (e.g. not up yet)
    rex.TryAgainError,  # TRYAGAIN during resharding
    rex.ReadOnlyError,  # writing to a replica that was the master before a failover
    rex.SlotNotCoveredError,
    OSError,  # includes TimeoutError (asyncio.timeout, sockets)
)


# redis-py's Cluster client trips over its own topology caches while a master restarts
# (a node looked up as None: AttributeError, redis-py#3835); raised inside redis-py's code,
# these are failures of the deployment as the client sees it, not bugs of memoryd.
_CLIENT_FAULTS: tuple[type[BaseException], ...] = (AttributeError, TypeError, KeyError, IndexError)
_REDIS_PY_DIR = os.path.dirname(redis.__file__) + os.sep


def raised_inside_redis_py(exc: BaseException) -> bool:
    """True for a fault (AttributeError, ...) whose innermost frame is redis-py's own code."""
    if not isinstance(exc, _CLIENT_FAULTS):
        return False
    tb = exc.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    return tb.tb_frame.f_code.co_filename.startswith(_REDIS_PY_DIR)


def is_infrastructure_error(exc: BaseException) -> bool:
    """True for failures of the connection or the deployment, the only ones the breaker counts."""
    return isinstance(exc, _INFRA_ERRORS) or raised_inside_redis_py(exc)


def is_timeout(exc: BaseException) -> bool:
    """The per-call timeout (TimeoutError) or a socket timeout inside redis-py."""
    return isinstance(exc, TimeoutError | rex.TimeoutError)


class _OpenedAt(pybreaker.CircuitBreakerListener):
    """Remembers (monotonic) when the breaker opened and wakes the probe."""

    def __init__(self, owner: Breaker) -> None:
        self._owner = owner

    def state_change(self, cb: Any, old_state: Any, new_state: Any) -> None:
        self._owner._on_state(getattr(new_state, "name", str(new_state)))


class Breaker:
    """Guards calls to one store. State lives in this process only (never in the Redis it guards)."""

    def __init__(self, settings: CircuitBreaker | None = None, *, name: str = "redis") -> None:
        self.settings = settings or CircuitBreaker()
        self._opened_at = 0.0
        self._trial_running = False
        self._answers = 0  # calls Redis has answered: a timeout while it answered others is no outage
        self._opened = asyncio.Event()
        self._deadlines = Deadlines(self.settings.timeout_s)
        self._bulk_deadlines = Deadlines(self.settings.bulk_timeout)
        self._cb = pybreaker.CircuitBreaker(
            fail_max=self.settings.max_failures,
            reset_timeout=self.settings.reset_timeout_s,
            name=name,
            listeners=[_OpenedAt(self)],
        )

    def _on_state(self, state: str) -> None:
        if state == OPEN:
            self._opened_at = time.monotonic()
            self._opened.set()
            self._bulk_deadlines.expire_all()  # fail now, not after their long timeout
            log.warning("circuit breaker opened", extra={"event": "breaker_open", "breaker": self._cb.name})
        elif state == CLOSED:
            self._opened.clear()
            log.info("circuit breaker closed", extra={"event": "breaker_closed", "breaker": self._cb.name})

    @property
    def state(self) -> str:
        """"closed", "open", or "half-open" (open, reset timeout elapsed: the next call is a trial)."""
        current = str(self._cb.current_state)
        if current == OPEN and self._reset_elapsed():
            return HALF_OPEN
        return current

    @property
    def failures(self) -> int:
        return int(self._cb.fail_counter)

    def _reset_elapsed(self) -> bool:
        return time.monotonic() - self._opened_at >= self.settings.reset_timeout_s

    def _admit(self) -> bool:
        """Raise StoreUnavailable when calls must fail fast; return True for a half-open trial."""
        if self._cb.current_state == CLOSED:
            return False
        if not self._reset_elapsed() or self._trial_running:
            raise StoreUnavailable("store unavailable: circuit breaker open")
        self._trial_running = True
        return True

    def _record(self, failure: BaseException | None) -> None:
        if failure is None:
            self._answers += 1
        if failure is None and self._cb.fail_counter == 0 and self._cb.current_state == CLOSED:
            return  # the common case: a success changes nothing (skips pybreaker's bookkeeping)

        def outcome() -> None:
            if failure is not None:
                raise failure

        try:
            self._cb.call(outcome)
        except pybreaker.CircuitBreakerError:
            pass  # this failure opened the breaker (or it was already open): the caller raises anyway
        except BaseException as exc:
            if exc is not failure:
                raise

    async def call(self, op: Callable[[], Awaitable[T]], *, bulk: bool = False) -> T:
        """Run ``op`` under the breaker and the per-call timeout (``bulk``: the bulk-read timeout).

        Exceptions propagate unchanged; infrastructure failures are counted (a bulk read's
        timeout excepted), everything else is recorded as Redis having answered.
        """
        trial = self._admit()
        answers = self._answers
        try:
            result = await (self._bulk_deadlines if bulk else self._deadlines).run(op)
        except asyncio.CancelledError:
            raise  # not an outcome of the store: record nothing
        except Exception as exc:
            if not is_infrastructure_error(exc):
                self._record(None)
            elif not (is_timeout(exc) and (bulk or self._answers != answers)):
                self._record(exc)
            raise
        else:
            self._record(None)
            return result
        finally:
            if trial:
                self._trial_running = False

    async def run_probe(self, probe: Callable[[], Awaitable[object]]) -> None:
        """Forever: once open, wait out the reset timeout and make the trial call with ``probe``."""
        while True:
            await self._opened.wait()
            delay = self.settings.reset_timeout_s - (time.monotonic() - self._opened_at)
            if delay > 0:
                await asyncio.sleep(delay)  # a timer until a trial is allowed
                continue
            if self._trial_running:  # a real call is the trial; let it finish
                await asyncio.sleep(self.settings.timeout_s)
                continue
            with contextlib.suppress(Exception):
                await self.call(probe)  # success closes the breaker; failure re-opens it
