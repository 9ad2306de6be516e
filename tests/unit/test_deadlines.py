"""The store's per-call timeout (memoryd.store.redis.deadlines): one timer for all calls, with the
contract of asyncio.timeout. Pure asyncio: calls that never finish wait on an Event."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from memoryd.store.redis.deadlines import Deadlines

TIMEOUT = 0.05
NO_HANG = 2.0  # far above TIMEOUT: a call that is never cancelled would fail the test, not hang it


async def _forever() -> None:
    await asyncio.Event().wait()


async def _timed_out(d: Deadlines) -> float:
    """Seconds until ``d`` gave up on a call that never finishes (asserts it did, with TimeoutError)."""
    start = time.monotonic()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(d.run(_forever), NO_HANG)
    return time.monotonic() - start


async def test_a_call_that_outlasts_the_timeout_gets_timeout_error_and_leaves_nothing_behind() -> None:
    d = Deadlines(TIMEOUT)
    assert await _timed_out(d) >= TIMEOUT

    async def cancel_requests_left() -> int:
        with pytest.raises(TimeoutError):
            await d.run(_forever)
        task = asyncio.current_task()
        assert task is not None
        return task.cancelling()

    assert await asyncio.wait_for(cancel_requests_left(), NO_HANG) == 0  # the timeout's cancel was taken back
    assert len(d) == 0
    assert await d.run(lambda: asyncio.sleep(0, "after")) == "after"  # still usable


async def test_only_the_calls_past_their_deadline_are_cancelled() -> None:
    d = Deadlines(TIMEOUT)
    release = asyncio.Event()

    async def quick(i: int) -> int:
        await release.wait()
        return i

    start = time.monotonic()
    quick_calls = [asyncio.create_task(d.run(lambda i=i: quick(i))) for i in range(8)]
    slow_calls = [asyncio.create_task(d.run(_forever)) for _ in range(8)]
    await asyncio.sleep(0)  # every call has begun
    assert len(d) == 16
    release.set()
    assert await asyncio.gather(*quick_calls) == list(range(8))
    outcomes = await asyncio.wait_for(asyncio.gather(*slow_calls, return_exceptions=True), NO_HANG)
    assert all(isinstance(o, TimeoutError) for o in outcomes)
    assert time.monotonic() - start >= TIMEOUT
    assert len(d) == 0


async def test_a_call_begun_later_gets_its_own_full_timeout() -> None:
    """The timer is armed for the oldest call; a later call must not be cut short by it."""
    d = Deadlines(TIMEOUT)
    first = asyncio.create_task(_timed_out(d))
    await asyncio.sleep(TIMEOUT / 2)  # a gap between the two calls' start, not synchronisation
    second = asyncio.create_task(_timed_out(d))
    assert await first >= TIMEOUT
    assert await second >= TIMEOUT


async def test_an_outside_cancellation_stays_a_cancellation() -> None:
    d = Deadlines(TIMEOUT)
    started = asyncio.Event()

    async def waits() -> None:
        started.set()
        await _forever()

    task = asyncio.create_task(d.run(waits))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(d) == 0


async def test_a_caller_cancelled_as_its_call_expires_is_cancelled_not_timed_out() -> None:
    d = Deadlines(TIMEOUT)
    task = asyncio.create_task(d.run(_forever))
    await asyncio.sleep(0)  # the call has begun
    time.sleep(TIMEOUT)  # noqa: ASYNC251 - the deadline must pass while the loop is held
    d._expire()  # the timer's callback, run now: the call is marked expired and cancelled
    task.cancel()  # and its caller is cancelled too, before the call resumes
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(d) == 0


async def test_a_call_nested_in_another_is_still_timed() -> None:
    d = Deadlines(TIMEOUT)
    start = time.monotonic()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(d.run(lambda: d.run(_forever)), NO_HANG)
    assert time.monotonic() - start >= TIMEOUT


def test_the_same_deadlines_work_on_a_second_event_loop() -> None:
    """A store outlives an ``asyncio.run`` in tests and tools: no timer of the old loop may linger."""
    d = Deadlines(TIMEOUT)
    assert asyncio.run(_timed_out(d)) >= TIMEOUT
    assert asyncio.run(_timed_out(d)) >= TIMEOUT


def test_a_timeout_must_be_positive() -> None:
    with pytest.raises(ValueError, match="timeout_s"):
        Deadlines(0)


async def test_a_reply_that_arrived_while_the_loop_was_held_is_taken_not_timed_out() -> None:
    """Regression (issue 15, item 3): the loop busy with other work (decoding a large read) past a
    call's deadline must not time out a call whose reply arrived in time: the reply is processed
    before the expired calls are cancelled. Here the "reply" is a byte on a socket, sent at once."""
    d = Deadlines(TIMEOUT)
    ours, theirs = socket.socketpair()
    reader, writer = await asyncio.open_connection(sock=ours)
    loop = asyncio.get_running_loop()

    def reply_then_hold_the_loop() -> None:
        theirs.send(b"r")
        time.sleep(2 * TIMEOUT)  # the loop is held past the deadline, as by a long decode

    try:
        loop.call_later(TIMEOUT / 5, reply_then_hold_the_loop)
        assert await asyncio.wait_for(d.run(lambda: reader.read(1)), NO_HANG) == b"r"
        assert len(d) == 0
        assert await _timed_out(d) >= TIMEOUT  # a call with no reply still times out
    finally:
        writer.close()
        theirs.close()
