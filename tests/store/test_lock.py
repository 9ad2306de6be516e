"""The instance lock and its fence: racing flushers, expired holders, automatic extension."""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest

from memoryd.errors import FenceRejected, LockContention
from memoryd.keys import InstanceAddr
from memoryd.models import FlushPlan, NewMessage, Summary
from memoryd.settings import Settings
from memoryd.store.base import MemoryStore
from memoryd.store.redis import RedisStore
from memoryd.store.redis.layout import InstanceKeys
from memoryd.store.redis.lock import InstanceLock, backoff_s
from memoryd.store.url import open_store
from tests.store.conftest import TEST_BREAKER, backend_url

T = TypeVar("T")


def msg(i: int) -> NewMessage:
    return NewMessage(role="user", content=f"m{i}", content_type="text", priority=None, effective_priority=5,
                      token_count=10)


async def flush_oldest(store: MemoryStore, addr: InstanceAddr, fence: int, n: int) -> tuple[int, ...]:
    """What the manager does under the lock: read, plan (the n oldest), apply."""
    state = await store.state(addr)
    seqs = tuple(m.seq for m in state.messages[:n])
    plan = FlushPlan("hybrid_summary", seqs, Summary(f"folded {seqs}", 3, seqs[-1], 0), 0, 0)
    return (await store.apply_flush(addr, plan, fence=fence)).removed_seqs


async def test_two_racing_flushers_exactly_one_applies(store: MemoryStore, addr: InstanceAddr) -> None:
    await store.append(addr, [msg(i) for i in range(10)])
    holding, release = asyncio.Event(), asyncio.Event()
    results: dict[str, object] = {}

    async def flusher(name: str) -> None:
        try:
            async with store.lock(addr, ttl_ms=10_000, acquire_timeout_s=0.3) as lease:
                holding.set()
                await release.wait()  # hold the lock until the other flusher has given up
                results[name] = await flush_oldest(store, addr, lease.fence, 4)
        except LockContention as exc:
            results[name] = exc
            release.set()

    first = asyncio.create_task(flusher("first"))
    await holding.wait()
    await flusher("second")
    await first
    assert isinstance(results["second"], LockContention)
    assert results["first"] == (1, 2, 3, 4)
    state = await store.state(addr)
    assert [m.seq for m in state.messages] == list(range(5, 11))
    assert state.meta.flush_count == 1 and state.meta.message_count == 6


async def test_many_flushers_in_turn_never_remove_a_message_twice(store: MemoryStore, addr: InstanceAddr) -> None:
    await store.append(addr, [msg(i) for i in range(24)])

    async def flusher() -> tuple[int, ...]:
        async with store.lock(addr, ttl_ms=10_000, acquire_timeout_s=20) as lease:
            return await flush_oldest(store, addr, lease.fence, 3)

    removed = await asyncio.gather(*(flusher() for _ in range(8)))
    flat = [s for r in removed for s in r]
    assert sorted(flat) == list(range(1, 25)) and len(set(flat)) == 24
    assert (await store.meta(addr)).flush_count == 8


async def test_expired_holder_is_refused_by_the_fence(request: pytest.FixtureRequest, redis_store: MemoryStore,
                                                      addr: InstanceAddr) -> None:
    """A flusher paused past its lock TTL (its whole event loop blocked, like a GC pause or a
    SIGSTOP, so even the extension task cannot run) must not apply its stale plan."""
    assert isinstance(redis_store, RedisStore)
    url = backend_url(request, redis_store.settings.mode)
    await redis_store.append(addr, [msg(i) for i in range(6)])
    locked, resume = threading.Event(), threading.Event()
    outcome: dict[str, object] = {}

    def paused_flusher() -> None:
        async def run() -> None:
            other = open_store(url, breaker=TEST_BREAKER)
            await other.start()
            try:
                lock = other.lock(addr, ttl_ms=300, acquire_timeout_s=5)
                async with lock as lease:
                    state = await other.state(addr)
                    stale = FlushPlan("hybrid_summary", tuple(m.seq for m in state.messages), Summary("stale", 1, 6, 0),
                                      0, 0)
                    locked.set()
                    resume.wait(30)  # blocks this loop: no extension, the lock expires
                    try:
                        outcome["applied"] = await other.apply_flush(addr, stale, fence=lease.fence)
                    except FenceRejected as exc:
                        outcome["rejected"] = exc
                assert isinstance(lock, InstanceLock)
                outcome["lost"] = lock.lost
            finally:
                await other.close()

        asyncio.run(run())

    thread = threading.Thread(target=paused_flusher)
    thread.start()
    try:
        assert await asyncio.to_thread(locked.wait, 30)
        # acquires only once the paused holder's lock has expired (polled with backoff)
        async with redis_store.lock(addr, ttl_ms=10_000, acquire_timeout_s=15) as lease:
            assert await flush_oldest(redis_store, addr, lease.fence, 2) == (1, 2)
    finally:
        resume.set()
        await asyncio.to_thread(thread.join, 30)
    assert "rejected" in outcome and "applied" not in outcome
    assert outcome["lost"] is True
    state = await redis_store.state(addr)
    assert [m.seq for m in state.messages] == [3, 4, 5, 6]
    assert state.summary is not None and state.summary.content == "folded (1, 2)"


async def test_a_flush_longer_than_the_lease_keeps_the_lock(redis_store: MemoryStore, addr: InstanceAddr) -> None:
    """Held past the daemon's lease: renewed, so a contender trying for a whole lease never gets it
    and the holder's plan still applies. The contender's last attempt comes after the lease ran out,
    so only a renewal can have kept the lock; the holder's loop would have to stall for two thirds
    of the lease (1.3 s by default) to lose it."""
    assert isinstance(redis_store, RedisStore)
    lease_ms = Settings().flush_lock_ttl_ms
    lock_key = InstanceKeys.of(addr).lock
    await redis_store.append(addr, [msg(0)])
    lock = redis_store.lock(addr, ttl_ms=lease_ms, acquire_timeout_s=5)
    async with lock as lease:
        assert 0 < await redis_store.client.pttl(lock_key) <= lease_ms
        with pytest.raises(LockContention):
            async with redis_store.lock(addr, ttl_ms=lease_ms, acquire_timeout_s=lease_ms / 1000):
                pytest.fail("acquired a held lock")
        assert 0 < await redis_store.client.pttl(lock_key) <= lease_ms  # still leased, never without expiry
        assert await flush_oldest(redis_store, addr, lease.fence, 1) == (1,)
    assert isinstance(lock, InstanceLock) and lock.lost is False


async def test_a_flush_ends_and_releases_even_if_a_renewal_outlives_its_cancel(redis_store: MemoryStore,
                                                                                 addr: InstanceAddr) -> None:
    """Found by the test above: leaving the lock cancels the renewal task, and a renewal in flight
    can complete anyway and swallow that cancel (redis-py sends each command under
    ``asyncio.wait_for``, which on Python 3.11 returns the result of an inner call that finished as
    the cancel came). The renewal loop then ran forever: the flush never returned and the lock was
    renewed for as long as the daemon lived. Here the first renewal is made to outlive its cancel
    that way, through the lock's store-call guard, on a real server."""
    assert isinstance(redis_store, RedisStore)
    store = redis_store
    renewing = asyncio.Event()
    calls = 0

    async def guard(op: Callable[[], Awaitable[T]]) -> T:
        nonlocal calls
        calls += 1
        if calls != 2:  # 1: acquire, 2: the first renewal, then: release or (unfixed) more renewals
            return await store._guard(op)
        inner = asyncio.ensure_future(store._guard(op))
        renewing.set()
        try:
            return await asyncio.shield(inner)
        except asyncio.CancelledError:
            return await inner  # finished anyway: the cancel is lost, as in wait_for on 3.11

    async def fence() -> int:
        return 1

    lock_key = InstanceKeys.of(addr).lock
    lock = InstanceLock(store.client, lock_key, ttl_ms=300, acquire_timeout_s=5, guard=guard, fence=fence)
    deadline = asyncio.timeout(30)  # a hang detector, far beyond any machine's speed
    async with deadline, lock:
        await renewing.wait()  # leave while the first renewal is in flight
    assert not deadline.expired(), "leaving the lock hung: the renewal loop outlived its cancel"
    assert await store.client.exists(lock_key) == 0  # released, not left to expire
    async with store.lock(addr, ttl_ms=300, acquire_timeout_s=0.01):  # free at once
        pass


# A daemon process in the middle of a flush: it holds the instance lock with the default lease
# (renewed in the background) and prints its fence; it never releases, it is killed.
HOLDER = """
import asyncio, sys
from memoryd.config.model import CircuitBreaker
from memoryd.keys import InstanceAddr
from memoryd.settings import Settings
from memoryd.store.url import open_store

async def main(url, project, resource, key):
    store = open_store(url, breaker=CircuitBreaker(timeout_s=2.0, max_failures=5, reset_timeout_s=0.5))
    await store.start()
    lock = store.lock(InstanceAddr(project, resource, key), ttl_ms=Settings().flush_lock_ttl_ms,
                      acquire_timeout_s=30)
    async with lock as lease:
        print(lease.fence, flush=True)
        await asyncio.Event().wait()

asyncio.run(main(*sys.argv[1:]))
"""


async def test_a_holder_killed_mid_flush_is_replaced_within_the_lease(
    request: pytest.FixtureRequest, redis_store: MemoryStore, addr: InstanceAddr
) -> None:
    """SIGKILL leaves the lock held until its lease runs out. With the default settings the
    lease is no longer than a flush waits for the lock, so another daemon's next flush gets it
    (it makes its last attempt once its wait has run out, after the dead holder's lease)."""
    assert isinstance(redis_store, RedisStore)
    url = backend_url(request, redis_store.settings.mode)
    defaults = Settings()
    lock_key = InstanceKeys.of(addr).lock
    await redis_store.append(addr, [msg(i) for i in range(4)])
    holder = await asyncio.create_subprocess_exec(
        sys.executable, "-c", HOLDER, url, addr.project, addr.resource, addr.key,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    assert holder.stdout is not None and holder.stderr is not None
    try:
        line = await holder.stdout.readline()
        assert line.strip().isdigit(), (await holder.stderr.read()).decode()
        assert 0 < await redis_store.client.pttl(lock_key) <= defaults.flush_lock_ttl_ms
    finally:
        holder.kill()
        await holder.communicate()
    started = time.monotonic()
    async with redis_store.lock(addr, ttl_ms=defaults.flush_lock_ttl_ms,
                                acquire_timeout_s=defaults.lock_acquire_timeout) as lease:
        replaced_after = time.monotonic() - started
        assert await flush_oldest(redis_store, addr, lease.fence, 2) == (1, 2)
    print(f"dead holder replaced after {replaced_after:.3f} s")  # reported, not asserted
    assert [m.seq for m in (await redis_store.state(addr)).messages] == [3, 4]


def test_backoff_is_jittered_and_capped() -> None:
    delays = [backoff_s(a) for a in range(1, 40)]
    assert all(0 < d <= 0.25 for d in delays)
    assert len({round(d, 6) for d in delays}) > 30
