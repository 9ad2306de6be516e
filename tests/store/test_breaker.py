"""The circuit breaker: what counts, what fails fast, how it recovers (pybreaker under asyncio).

The first tests drive ``Breaker`` with plain coroutines raising the exceptions redis-py
raises (the breaker's logic, no store: exceptions leave it unchanged, the store translates
them); the last ones use a real redis-server.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import redis.exceptions as rex
from redis._parsers.helpers import parse_info

from memoryd.config.model import CircuitBreaker
from memoryd.errors import MemorydError, PinnedTierFull, StoreUnavailable
from memoryd.keys import InstanceAddr
from memoryd.models import NewMessage
from memoryd.store.redis import RedisStore
from memoryd.store.redis.breaker import Breaker, is_infrastructure_error
from memoryd.store.redis.layout import InstanceKeys
from memoryd.store.redis.store import translate
from memoryd.store.url import open_store, parse_url
from tests.redis_servers import RedisProcess, start_standalone, temporary
from tests.store.conftest import new_addr


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
    b, calls = Breaker(CircuitBreaker(timeout_s=1, max_failures=3, reset_timeout_s=60)), Calls()
    for exc in (rex.ConnectionError("refused"), rex.TimeoutError("slow"), rex.BusyLoadingError("loading")):
        with pytest.raises(type(exc)):
            await b.call(calls.failing(exc))
    assert b.state == "open" and calls.n == 3
    with pytest.raises(StoreUnavailable, match="breaker open"):
        await b.call(calls.ok)
    assert calls.n == 3  # not attempted


async def test_answers_from_redis_do_not_count() -> None:
    b, calls = Breaker(CircuitBreaker(timeout_s=1, max_failures=2, reset_timeout_s=60)), Calls()
    for exc in (rex.ResponseError("WRONGTYPE"), rex.NoScriptError("NOSCRIPT"), PinnedTierFull("full"),
                rex.ResponseError("ERR Error running script")) * 3:
        with pytest.raises(type(exc)):
            await b.call(calls.failing(exc))
    assert b.state == "closed" and b.failures == 0


async def test_a_success_resets_the_consecutive_count() -> None:
    b, calls = Breaker(CircuitBreaker(timeout_s=1, max_failures=3, reset_timeout_s=60)), Calls()
    for _ in range(5):
        with pytest.raises(rex.ConnectionError):
            await b.call(calls.failing(rex.ConnectionError()))
        with pytest.raises(rex.ConnectionError):
            await b.call(calls.failing(rex.ConnectionError()))
        assert await b.call(calls.ok) == "ok"
    assert b.state == "closed"


async def test_per_call_timeout_counts_as_a_failure() -> None:
    b = Breaker(CircuitBreaker(timeout_s=0.05, max_failures=5, reset_timeout_s=60))
    with pytest.raises(TimeoutError):
        await b.call(asyncio.Event().wait)
    assert b.failures == 1


async def test_cancellation_is_neither_failure_nor_success() -> None:
    b, calls = Breaker(CircuitBreaker(timeout_s=5, max_failures=3, reset_timeout_s=60)), Calls()
    for _ in range(2):
        with pytest.raises(rex.ConnectionError):
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
    with pytest.raises(rex.ConnectionError):
        await b.call(calls.failing(rex.ConnectionError()))
    assert b.state == "open"


async def test_half_open_admits_one_trial_and_closes_on_success() -> None:
    b, calls = Breaker(CircuitBreaker(timeout_s=5, max_failures=1, reset_timeout_s=0.05)), Calls()
    with pytest.raises(rex.ConnectionError):
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
    b, calls = Breaker(CircuitBreaker(timeout_s=5, max_failures=1, reset_timeout_s=0.05)), Calls()
    with pytest.raises(rex.ConnectionError):
        await b.call(calls.failing(rex.ConnectionError()))
    await until(lambda: b.state == "half-open", "half-open")
    with pytest.raises(rex.ConnectionError):
        await b.call(calls.failing(rex.ConnectionError()))
    assert b.state == "open"


async def test_probe_closes_the_breaker_without_traffic() -> None:
    b = Breaker(CircuitBreaker(timeout_s=1, max_failures=1, reset_timeout_s=0.05))
    healthy = False
    probes = 0

    async def probe() -> None:
        nonlocal probes
        probes += 1
        if not healthy:
            raise rex.ConnectionError("still down")

    task = asyncio.create_task(b.run_probe(probe))
    try:
        with pytest.raises(rex.ConnectionError):
            await b.call(Calls().failing(rex.ConnectionError()))
        await until(lambda: probes >= 2, "probes while down")
        assert b.state != "closed"
        healthy = True
        await until(lambda: b.state == "closed", "closed by the probe")
    finally:
        task.cancel()


async def test_a_timeout_while_redis_answered_other_calls_is_not_counted() -> None:
    """Redis answering another call meanwhile shows it is up: the slow call was slow for its own
    reasons (its work, or the daemon's loop busy decoding a large reply). With no answer in
    between (a hung Redis), the timeout counts."""
    b, calls = Breaker(CircuitBreaker(timeout_s=0.1, max_failures=1, reset_timeout_s=60)), Calls()
    started = asyncio.Event()

    async def slow() -> None:
        started.set()
        await asyncio.Event().wait()

    slow_call = asyncio.create_task(b.call(slow))
    await started.wait()
    assert await b.call(calls.ok) == "ok"  # answered while the slow call waits
    with pytest.raises(TimeoutError):
        await slow_call
    assert b.state == "closed" and b.failures == 0
    with pytest.raises(TimeoutError):
        await b.call(asyncio.Event().wait)  # nothing answered meanwhile
    assert b.state == "open"


async def test_bulk_reads_have_their_own_longer_timeout_which_is_not_counted() -> None:
    b, calls = Breaker(CircuitBreaker(timeout_s=0.01, max_failures=1, reset_timeout_s=60, bulk_timeout_s=0.1)), Calls()
    gate = asyncio.Event()
    asyncio.get_running_loop().call_later(0.03, gate.set)  # the bulk read's work: longer than timeout_s

    async def large_read() -> str:
        await gate.wait()
        return "all of it"

    assert await b.call(large_read, bulk=True) == "all of it"
    with pytest.raises(TimeoutError):
        await b.call(asyncio.Event().wait, bulk=True)
    assert b.state == "closed" and b.failures == 0
    with pytest.raises(rex.ConnectionError):  # a bulk read that cannot reach Redis does count
        await b.call(calls.failing(rex.ConnectionError()), bulk=True)
    assert b.state == "open"
    assert CircuitBreaker(timeout_s=0.5).bulk_timeout == 10.0
    assert CircuitBreaker(timeout_s=2.0).bulk_timeout == 40.0


def _fault_inside_redis_py() -> AttributeError:
    try:
        parse_info(None)  # redis-py's own code trips over a None, as its Cluster client mid-failover
    except AttributeError as exc:
        return exc
    raise AssertionError("no AttributeError")


def _fault_outside_redis_py() -> AttributeError:
    try:
        None.splitlines()  # type: ignore[attr-defined]
    except AttributeError as exc:
        return exc
    raise AssertionError("no AttributeError")


def test_error_classification() -> None:
    infra = [rex.ConnectionError(), rex.TimeoutError(), rex.BusyLoadingError(), rex.AuthenticationError(),
             rex.ClusterDownError("x"), rex.MasterDownError("x"), rex.TryAgainError(), rex.ReadOnlyError(),
             rex.SlotNotCoveredError(), rex.RedisClusterUnreachableError("x"), TimeoutError(),
             ConnectionRefusedError(), StoreUnavailable("x"), _fault_inside_redis_py()]
    answers = [rex.ResponseError(), rex.NoScriptError(), rex.DataError(), MemorydError("x"), ValueError(),
               _fault_outside_redis_py()]
    assert all(is_infrastructure_error(e) for e in infra)
    assert not any(is_infrastructure_error(e) for e in answers)


def test_translation_to_memoryd_errors() -> None:
    """One function maps what a Redis call raises; a bug of memoryd's own stays visible."""
    for exc in (rex.ConnectionError("x"), TimeoutError(), rex.OutOfMemoryError("OOM"),
                rex.RedisClusterUnreachableError("x"), _fault_inside_redis_py()):
        assert isinstance(translate(exc), StoreUnavailable), exc
    assert "timeout" in translate(TimeoutError()).args[0]
    answered = translate(rex.ResponseError("WRONGTYPE"))
    assert type(answered) is MemorydError and "WRONGTYPE" in answered.message
    for unchanged in (PinnedTierFull("full"), rex.LockError("lost"), _fault_outside_redis_py()):
        assert translate(unchanged) is unchanged


# -- on a real redis-server -----------------------------------------------------------------


def _msg() -> NewMessage:
    return NewMessage(role="user", content="x", content_type="text", priority=None, effective_priority=5,
                      token_count=1)


async def test_script_errors_are_not_an_outage(redis_standalone: RedisProcess, addr: InstanceAddr) -> None:
    store = open_store(redis_standalone.url, breaker=CircuitBreaker(timeout_s=2, max_failures=2))
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
    store = open_store(redis_standalone.url, breaker=CircuitBreaker(timeout_s=5, max_failures=2))
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


LARGE_INSTANCE = 20_000  # messages; every read below reads all of them (no read cache)
READERS = 10
APPEND_ATTEMPTS = 4  # the clients' RetryPolicy: UNAVAILABLE is retried with backoff
APPEND_BACKOFF_S = 0.05


async def test_concurrent_large_reads_do_not_open_the_breaker_and_other_tenants_keep_appending(
    redis_standalone: RedisProcess,
) -> None:
    """Regression (issue 15, item 3): concurrent reads of a large instance exceeded the per-call
    timeout, were counted as Redis failures, opened the breaker, and another tenant's appends
    failed UNAVAILABLE until it closed. The per-call timeout here is twice what one such read
    takes alone, so the concurrent reads exceed it (the old code failed them and opened)."""
    large, other = new_addr(), new_addr()
    filler = RedisStore(parse_url(redis_standalone.url), read_cache_messages=0,
                        breaker=CircuitBreaker(timeout_s=10))
    await filler.start()
    try:
        for _ in range(0, LARGE_INSTANCE, 1000):
            await filler.append(large, [_msg() for _ in range(1000)])
        alone = 0.0  # what one read of it takes on this machine, right now
        for _ in range(2):
            began = time.monotonic()
            assert len((await filler.state(large)).messages) == LARGE_INSTANCE
            alone = max(alone, time.monotonic() - began)
    finally:
        await filler.close()
    store = RedisStore(parse_url(redis_standalone.url), read_cache_messages=0,
                       breaker=CircuitBreaker(timeout_s=2 * alone, max_failures=3, reset_timeout_s=60))
    await store.start()
    states: set[str] = set()
    reading = True

    async def read_all() -> int:
        return len((await store.state(large)).messages)

    async def append_meanwhile() -> int:
        appended = 0
        while reading:
            for attempt in range(APPEND_ATTEMPTS):
                states.add(store.breaker_state)
                try:
                    await store.append(other, [_msg()], idempotency_key=f"append-{appended}")  # as clients retry
                    break
                except StoreUnavailable:
                    if attempt == APPEND_ATTEMPTS - 1:
                        raise
                    await asyncio.sleep(APPEND_BACKOFF_S * 2 ** attempt)  # a client's retry backoff
            appended += 1
        return appended

    try:
        appender = asyncio.create_task(append_meanwhile())
        try:
            counts = await asyncio.gather(*(read_all() for _ in range(READERS)))
        finally:
            reading = False
        appended = await appender
        assert counts == [LARGE_INSTANCE] * READERS
        assert appended > 0 and (await store.meta(other)).message_count == appended
        assert states == {"closed"} and store.breaker_state == "closed"
    finally:
        await store.close()


async def test_a_paused_redis_still_opens_the_breaker(tmp_path: Path) -> None:
    """A real outage (redis-server stopped with SIGSTOP: connections stay open, nothing answers)
    still opens the breaker, which also ends the bulk reads in flight; once Redis runs again
    the probe closes it."""
    with temporary(start_standalone, tmp_path) as server:
        settings = CircuitBreaker(timeout_s=0.2, max_failures=3, reset_timeout_s=2, bulk_timeout_s=600)
        store = RedisStore(parse_url(server.url), read_cache_messages=0, breaker=settings)
        await store.start()
        try:
            addr = new_addr()
            await store.append(addr, [_msg()])
            assert server.proc is not None
            server.proc.send_signal(signal.SIGSTOP)
            try:
                large_read = asyncio.create_task(store.state(addr))
                await until(lambda: store.in_flight == 1, "the read sent")
                for i in range(3):
                    with pytest.raises(StoreUnavailable, match="timeout"):
                        await store.append(addr, [_msg()], idempotency_key=f"k{i}")
                with pytest.raises(StoreUnavailable, match="circuit breaker open"):
                    await store.append(addr, [_msg()])
                with pytest.raises(StoreUnavailable):  # ended when the breaker opened, not after 600 s
                    await asyncio.wait_for(large_read, 60)
            finally:
                server.proc.send_signal(signal.SIGCONT)
            await until(lambda: store.breaker_state == "closed", "closed by the probe once Redis runs")
            await store.append(addr, [_msg()])
        finally:
            await store.close()
