"""The circuit breaker: what counts, what fails fast, how it recovers (pybreaker under asyncio).

The first tests drive ``Breaker`` with plain coroutines raising the exceptions redis-py
raises (the breaker's logic, no store); the last ones use a real redis-server.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest
import redis.exceptions as rex

from memoryd.errors import MemorydError, PinnedTierFull, StoreUnavailable
from memoryd.keys import InstanceAddr
from memoryd.models import NewMessage
from memoryd.store.redis import RedisStore
from memoryd.store.redis.breaker import Breaker, BreakerSettings, is_infrastructure_error
from memoryd.store.redis.layout import InstanceKeys
from memoryd.store.url import open_store
from tests.redis_servers import RedisProcess


class Calls:
    def __init__(self) -> None:
        self.n = 0

    def failing(self, exc: BaseException) -> Callable[[], Awaitable[None]]:
        async def op() -> None:
            self.n += 1
            raise exc

        return op

    async def ok(self) -> str:
        self.n += 1
        return "ok"


async def until(predicate: Callable[[], bool], what: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached in {timeout_s}s")
        await asyncio.sleep(0.01)  # polling interval


async def test_infrastructure_failures_open_it_then_calls_fail_fast() -> None:
    b, calls = Breaker(BreakerSettings(timeout_s=1, max_failures=3, reset_timeout_s=60)), Calls()
    for exc in (rex.ConnectionError("refused"), rex.TimeoutError("slow"), rex.BusyLoadingError("loading")):
        with pytest.raises(StoreUnavailable):
            await b.call(calls.failing(exc))
    assert b.state == "open" and calls.n == 3
    with pytest.raises(StoreUnavailable, match="breaker open"):
        await b.call(calls.ok)
    assert calls.n == 3  # not attempted


async def test_answers_from_redis_do_not_count() -> None:
    b, calls = Breaker(BreakerSettings(timeout_s=1, max_failures=2, reset_timeout_s=60)), Calls()
    for exc in (rex.ResponseError("WRONGTYPE"), rex.NoScriptError("NOSCRIPT"), PinnedTierFull("full"),
                rex.ResponseError("ERR Error running script")) * 3:
        with pytest.raises(type(exc)):
            await b.call(calls.failing(exc))
    assert b.state == "closed" and b.failures == 0


async def test_a_success_resets_the_consecutive_count() -> None:
    b, calls = Breaker(BreakerSettings(timeout_s=1, max_failures=3, reset_timeout_s=60)), Calls()
    for _ in range(5):
        with pytest.raises(StoreUnavailable):
            await b.call(calls.failing(rex.ConnectionError()))
        with pytest.raises(StoreUnavailable):
            await b.call(calls.failing(rex.ConnectionError()))
        assert await b.call(calls.ok) == "ok"
    assert b.state == "closed"


async def test_per_call_timeout_counts_as_a_failure() -> None:
    b = Breaker(BreakerSettings(timeout_s=0.05, max_failures=5, reset_timeout_s=60))
    with pytest.raises(StoreUnavailable, match="timeout"):
        await b.call(asyncio.Event().wait)
    assert b.failures == 1


async def test_cancellation_is_neither_failure_nor_success() -> None:
    b, calls = Breaker(BreakerSettings(timeout_s=5, max_failures=3, reset_timeout_s=60)), Calls()
    for _ in range(2):
        with pytest.raises(StoreUnavailable):
            await b.call(calls.failing(rex.ConnectionError()))
    started = 0

    async def hang() -> None:
        nonlocal started
        started += 1
        await asyncio.Event().wait()

    hung = [asyncio.create_task(b.call(hang)) for _ in range(10)]
    await until(lambda: started == 10, "all calls running")
    for t in hung:
        t.cancel()
    results = await asyncio.gather(*hung, return_exceptions=True)
    assert all(isinstance(r, asyncio.CancelledError) for r in results)
    assert b.failures == 2  # pybreaker's calling() would have reset it (an excluded error is a success)
    with pytest.raises(StoreUnavailable):
        await b.call(calls.failing(rex.ConnectionError()))
    assert b.state == "open"


async def test_half_open_admits_one_trial_and_closes_on_success() -> None:
    b, calls = Breaker(BreakerSettings(timeout_s=5, max_failures=1, reset_timeout_s=0.05)), Calls()
    with pytest.raises(StoreUnavailable):
        await b.call(calls.failing(rex.ConnectionError()))
    await until(lambda: b.state == "half-open", "half-open")
    gate = asyncio.Event()

    admitted = False

    async def trial() -> str:
        nonlocal admitted
        admitted = True
        await gate.wait()
        return "trial"

    first = asyncio.create_task(b.call(trial))
    await until(lambda: admitted, "trial admitted")
    with pytest.raises(StoreUnavailable):
        await b.call(calls.ok)  # a second caller during the trial fails fast
    assert calls.n == 1
    gate.set()
    assert await first == "trial"
    assert b.state == "closed"
    assert await b.call(calls.ok) == "ok"


async def test_failed_trial_reopens_for_another_reset_timeout() -> None:
    b, calls = Breaker(BreakerSettings(timeout_s=5, max_failures=1, reset_timeout_s=0.05)), Calls()
    with pytest.raises(StoreUnavailable):
        await b.call(calls.failing(rex.ConnectionError()))
    await until(lambda: b.state == "half-open", "half-open")
    with pytest.raises(StoreUnavailable):
        await b.call(calls.failing(rex.ConnectionError()))
    assert b.state == "open"


async def test_probe_closes_the_breaker_without_traffic() -> None:
    b = Breaker(BreakerSettings(timeout_s=1, max_failures=1, reset_timeout_s=0.05))
    healthy = False
    probes = 0

    async def probe() -> None:
        nonlocal probes
        probes += 1
        if not healthy:
            raise rex.ConnectionError("still down")

    task = asyncio.create_task(b.run_probe(probe))
    try:
        with pytest.raises(StoreUnavailable):
            await b.call(Calls().failing(rex.ConnectionError()))
        await until(lambda: probes >= 2, "probes while down")
        assert b.state != "closed"
        healthy = True
        await until(lambda: b.state == "closed", "closed by the probe")
    finally:
        task.cancel()


def test_error_classification() -> None:
    infra = [rex.ConnectionError(), rex.TimeoutError(), rex.BusyLoadingError(), rex.AuthenticationError(),
             rex.ClusterDownError("x"), rex.MasterDownError("x"), rex.TryAgainError(), rex.ReadOnlyError(),
             rex.SlotNotCoveredError(), TimeoutError(), ConnectionRefusedError(), StoreUnavailable("x")]
    answers = [rex.ResponseError(), rex.NoScriptError(), rex.DataError(), MemorydError("x"), ValueError()]
    assert all(is_infrastructure_error(e) for e in infra)
    assert not any(is_infrastructure_error(e) for e in answers)


# -- on a real redis-server -----------------------------------------------------------------


def _msg() -> NewMessage:
    return NewMessage(role="user", content="x", content_type="text", priority=None, effective_priority=5,
                      token_count=1)


async def test_script_errors_are_not_an_outage(redis_standalone: RedisProcess, addr: InstanceAddr) -> None:
    store = open_store(redis_standalone.url, breaker=BreakerSettings(timeout_s=2, max_failures=2))
    await store.start()
    try:
        with redis_standalone.client() as raw:
            raw.set(InstanceKeys.of(addr).meta, "not a hash")  # WRONGTYPE inside the script
        for _ in range(5):
            with pytest.raises(MemorydError) as info:
                await store.append(addr, [_msg()])
            assert not isinstance(info.value, StoreUnavailable)
        assert store.breaker_state == "closed"
    finally:
        await store.close()


async def test_cancelled_calls_do_not_trip_the_breaker(redis_standalone: RedisProcess, addr: InstanceAddr) -> None:
    store = open_store(redis_standalone.url, breaker=BreakerSettings(timeout_s=5, max_failures=2))
    await store.start()
    assert isinstance(store, RedisStore)
    with redis_standalone.client() as raw:
        raw.execute_command("CLIENT PAUSE", 5000, "WRITE")  # scripts wait; UNPAUSE still runs
        try:
            calls = [asyncio.create_task(store.append(addr, [_msg()])) for _ in range(6)]
            await until(lambda: store.in_flight == len(calls), "all calls sent and waiting for Redis")
            for t in calls:
                t.cancel()
            await asyncio.gather(*calls, return_exceptions=True)
        finally:
            raw.execute_command("CLIENT UNPAUSE")
    try:
        assert store.breaker_state == "closed" and store.breaker.failures == 0
        # Cancelled connections were dropped: no connection hands this call an old reply.
        out = await store.append(addr, [_msg()])
        stored = await store.read(addr)
        assert out.refs[0].seq == stored[-1].seq and out.refs[0].id == stored[-1].id
    finally:
        await store.close()
