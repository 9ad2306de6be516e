"""Watch: the changes of one instance, streamed at the consumer's pace, bounded per watcher.

A watcher reads the store (never a buffer of its own), so a slow consumer only lags behind
the store. It recognises a Clear by the instance's epoch, reports exactly which of the seqs
it delivered a flush removed, and keeps at most one event of content in hand.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from memoryd.errors import ResourceExhausted, ShuttingDown
from memoryd.keys import InstanceAddr
from memoryd.models import InstanceMeta, StoredMessage, Summary
from memoryd.store.base import MemoryStore

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Appended:
    messages: list[StoredMessage]


@dataclass(frozen=True, slots=True)
class Flushed:
    removed_seqs: list[int]  # of the messages this stream delivered
    summary: Summary | None


@dataclass(frozen=True, slots=True)
class Deleted:
    seqs: list[int]  # of the messages this stream delivered, that DeleteMessages removed


@dataclass(frozen=True, slots=True)
class Cleared:
    pass


@dataclass(frozen=True, slots=True)
class FlushDue:
    """An ``external`` resource's instance is over its threshold: a fold is due."""

    meta: InstanceMeta


WatchEvent = Appended | Flushed | Deleted | Cleared | FlushDue
DueRule = Callable[[InstanceMeta], bool]
WATCH_WAKE_S = 1.0  # longest a watcher sleeps without re-reading the store
# Watchers reading the store at once, all watchers of the daemon together: beyond it they
# queue here, outside the store's per-call timeout, so that hundreds of watchers woken by
# one append never make the memory API's own calls wait past theirs (and trip the breaker).
WATCH_READ_CONCURRENCY = 8
# Content characters in one Appended event (at least one message): what a watcher whose
# client stopped reading holds, as the event gRPC has not sent yet.
WATCH_EVENT_CHARS = 16 * 1024
# Messages in a watcher's first read, before it knows their size (the next reads aim at
# one event's worth: a read never fetches many messages only to drop them).
WATCH_FIRST_READ = 16

Runs = list[tuple[int, int]]  # ascending, disjoint [lo, hi] ranges of seqs


def _gaps(seqs: Iterable[int], start: int, end: int) -> Runs:
    """The runs of seqs in (start, end] missing from ``seqs`` (ascending)."""
    runs: Runs = []
    prev = start
    for s in seqs:
        if s <= start:
            continue
        if s > end:
            break
        if s > prev + 1:
            runs.append((prev + 1, s - 1))
        prev = s
    if end > prev:
        runs.append((prev + 1, end))
    return runs


def _minus(runs: Runs, known: Runs) -> list[int]:
    """The seqs of ``runs`` not in ``known``; each run of ``known`` lies inside one of ``runs``."""
    out: list[int] = []
    j = 0
    for lo, hi in runs:
        cur = lo
        while j < len(known) and known[j][0] <= hi:
            klo, khi = known[j]
            if klo > cur:
                out.extend(range(cur, klo))
            cur = max(cur, khi + 1)
            j += 1
        if cur <= hi:
            out.extend(range(cur, hi + 1))
    return out


def _wiped(seen: InstanceMeta, now: InstanceMeta) -> bool:
    """Whether the instance a watcher last saw as ``seen`` was wiped (Clear, TTL expiry,
    EndWorkflow) by the time it reads ``now``: its epoch changed (to "" when it is gone,
    to another when it was created again), or, for an instance written only by daemons
    that predate epochs, its sequence went back."""
    if seen.epoch:
        return now.epoch != seen.epoch
    return now.last_seq < seen.last_seq


def _event_size(page: Sequence[StoredMessage]) -> tuple[int, int]:
    """How many of ``page``'s first messages fit one event (at least one), and their size."""
    size = 0
    for n, m in enumerate(page):
        chars = len(m.content) + sum(len(k) + len(v) for k, v in m.metadata.items())
        if size + chars > WATCH_EVENT_CHARS and n:
            return n, size
        size += chars
    return len(page), size


class Watchers:
    """The daemon's Watch streams: how many run, and how many read the store at once."""

    def __init__(self, max_watchers: int) -> None:
        self.max_watchers = max_watchers
        self.count = 0  # Watch streams running now
        self._reads = asyncio.Semaphore(WATCH_READ_CONCURRENCY)

    async def watch(
        self, store: MemoryStore, addr: InstanceAddr, *, after_seq: int, chunk: int, stop: asyncio.Event,
        due: DueRule | None = None,
    ) -> AsyncGenerator[WatchEvent, None]:
        """Changes of one instance, read from the store at the consumer's pace.

        Bounded per watcher: the generator is paced by gRPC flow control (a client that
        stops reading stops it at its next yield), an Appended event carries at most
        WATCH_EVENT_CHARS of content, and what a Flushed event needs (which delivered seqs
        are still stored) is kept as runs of the seqs *missing* from the delivered range,
        not as a set of every delivered seq. Resuming with ``after_seq`` replays what was
        missed. At most ``max_watchers`` run at once (ResourceExhausted beyond);
        the daemon's shutdown ends every watcher with ShuttingDown (UNAVAILABLE).

        ``due`` (external resources): FlushDue once per fold period -- when the counters the
        watcher reads say a fold is due, after the Appended that made it so, and again
        only after a fold or a Clear (a fold that left the instance over its threshold
        starts a new period).
        """
        if self.count >= self.max_watchers:
            raise ResourceExhausted(f"Watch: this daemon already serves {self.count} watchers "
                                    "(--max-watchers); close one or retry later")
        self.count += 1
        try:
            changes = self._changes(store, addr, after_seq=after_seq, chunk=chunk, stop=stop, due=due)
            async with contextlib.aclosing(changes):  # closed with the stream, not by the GC
                async for event in changes:
                    yield event
        finally:
            self.count -= 1

    async def _changes(
        self, store: MemoryStore, addr: InstanceAddr, *, after_seq: int, chunk: int, stop: asyncio.Event,
        due: DueRule | None,
    ) -> AsyncGenerator[WatchEvent, None]:
        start = cursor = after_seq  # delivered: the stored seqs in (start, cursor] ...
        gone: Runs = []  # ... except these (missing when read, or already reported removed)
        limit = min(chunk, WATCH_FIRST_READ)
        # after_seq is taken to refer to the incarnation that exists now: past its end is no Clear
        seen = await self._read(functools.partial(store.meta, addr))
        flushes, deletes = seen.flush_count, seen.delete_count
        signalled: tuple[str, int] | None = None  # the (epoch, fold count) of the last FlushDue

        def newly_due(meta: InstanceMeta) -> bool:
            nonlocal signalled
            if due is None or signalled == (meta.epoch, meta.flush_count) or not due(meta):
                return False
            signalled = (meta.epoch, meta.flush_count)
            return True

        while True:
            if stop.is_set():
                raise ShuttingDown("Watch: the daemon is shutting down; resume with after_seq")
            # The page first, then the meta that vouches for it: an unchanged epoch (and flush
            # count) since the last look means no Clear or flush came before the read either.
            page = await self._read(functools.partial(store.read, addr, after_seq=cursor, limit=limit))
            meta = await self._read(functools.partial(store.meta, addr))
            absent = not meta.epoch and not meta.last_seq
            if _wiped(seen, meta) or (absent and cursor):  # gone under the cursor: a wiped incarnation
                start = cursor = 0
                seen, gone, limit = meta, [], min(chunk, WATCH_FIRST_READ)
                flushes, deletes = meta.flush_count, meta.delete_count
                yield Cleared()
                continue  # the page may be the new incarnation's: read again from 0
            seen = meta
            if meta.flush_count != flushes or meta.delete_count != deletes:
                # A flush (or a delete) removed messages: which of those delivered are gone now.
                # Both in one interval are reported as the flush (its removed_seqs).
                flushed = meta.flush_count != flushes
                flushes, deletes = meta.flush_count, meta.delete_count
                state = await self._read(functools.partial(store.state, addr))
                if state.meta.epoch != meta.epoch:
                    continue  # wiped meanwhile: the next look reports it
                missing = _gaps((m.seq for m in state.messages), start, cursor)
                removed, gone = _minus(missing, gone), missing
                if flushed:
                    yield Flushed(removed, state.summary)
                elif removed:
                    yield Deleted(removed)
                continue  # the page may hold messages this flush or delete removed: read again
            if page:
                n, size = _event_size(page)
                if n < len(page):  # the rest is read again next time
                    page = page[:n]
                # the next read: about one event's worth at the size of these messages
                limit = max(1, min(chunk, WATCH_EVENT_CHARS * n // max(size, 1)))
                for run in _gaps((m.seq for m in page), cursor, page[-1].seq):
                    if gone and gone[-1][1] + 1 == run[0]:
                        gone[-1] = (gone[-1][0], run[1])
                    else:
                        gone.append(run)
                cursor = page[-1].seq
                yield Appended(page)
                if newly_due(meta):
                    yield FlushDue(meta)
                continue
            if newly_due(meta):
                yield FlushDue(meta)
                continue
            waiter = asyncio.ensure_future(store.wait_for_change(addr, after_seq=cursor, timeout_s=WATCH_WAKE_S))
            stopper = asyncio.ensure_future(stop.wait())
            try:
                await asyncio.wait((waiter, stopper), return_when=asyncio.FIRST_COMPLETED)
            finally:
                for fut in (waiter, stopper):
                    fut.cancel()

    async def _read(self, call: Callable[[], Awaitable[T]]) -> T:
        async with self._reads:
            return await call()
