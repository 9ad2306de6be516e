"""RedisStore: the MemoryStore protocol on Redis standalone, Sentinel or Cluster.

Every mutation is one Lua script (``scripts.py``) over keys sharing the instance's
hash tag (``layout.py``); scripts are called by SHA through redis-py's Script objects,
which re-load them on NOSCRIPT (after SCRIPT FLUSH, a restart or a failover). Every
call runs under the circuit breaker with the per-call timeout (``memoryd.store.redis.breaker``),
and what it raises becomes a memoryd error in one place (``translate``).
Decoded messages are cached per instance (``cache.py``) and re-validated against the
instance's identity (epoch) and counters on every read: another daemon may change it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import itertools
import logging
import random
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import replace
from typing import Any, TypeVar

import redis.exceptions as rex
from redis.asyncio import Redis

from memoryd.config.model import CircuitBreaker
from memoryd.errors import (
    FenceRejected,
    FoldedMeanwhile,
    IdempotencyConflict,
    InstanceChanged,
    LastSeqChanged,
    MemorydError,
    PinnedTierFull,
    StoreUnavailable,
    ToolCallRefused,
)
from memoryd.keys import InstanceAddr
from memoryd.models import (
    KEEP_ALL_HISTORY,
    PINNED_PRIORITY,
    AppendedRef,
    AppendOutcome,
    DeleteOutcome,
    FlushOutcome,
    FlushPlan,
    HistoryPolicy,
    InstanceMeta,
    InstanceState,
    NewMessage,
    StoredMessage,
    Summary,
    TailState,
)
from memoryd.store.base import LockLease
from memoryd.store.calls import batch_calls
from memoryd.store.digest import batch_digest
from memoryd.store.redis import codec, scripts
from memoryd.store.redis.breaker import (
    Breaker,
    is_infrastructure_error,
    is_timeout,
    raised_inside_redis_py,
)
from memoryd.store.redis.cache import DEFAULT_MAX_MESSAGES as DEFAULT_CACHE_MESSAGES
from memoryd.store.redis.cache import CachedInstance, ReadCache, accounts_for, token_sums
from memoryd.store.redis.connection import (
    ConnectionSettings,
    RedisClient,
    close_client,
    make_client,
    parser_name,
)
from memoryd.store.redis.layout import (
    META_FIELDS,
    PRIORITY_COUNT_PREFIX,
    SECRET_PREFIX,
    SUMMARY_FIELDS,
    InstanceKeys,
    workflow_index,
)
from memoryd.store.redis.lock import InstanceLock
from memoryd.store.redis.scripts import AppendReply, ApplyFlushReply, DeleteReply
from memoryd.store.redis.wire import LeanCheckout, ScriptCaller

log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_IDEMPOTENCY_WINDOW_MS = 86_400_000  # caller keys, when the instance has no TTL
RETRY_WINDOW_MS = 60_000  # the store's own key for appends without one (safe internal retries)
END_WORKFLOW_PARALLELISM = 16
WAIT_MARGIN_S = 1.0
SOCKET_TIMEOUT_MARGIN_S = 0.5
CONNECT_BACKOFF_BASE_S = 0.05  # until Redis is first reached: 0.1 s, doubling ...
CONNECT_BACKOFF_CAP_S = 2.0  # ... up to this, half of it random
CONNECT_LOG_EVERY = 10  # attempts between warnings while Redis stays unreachable
# A cached instance of at most this many messages serves a context read whole (revalidated
# like state()): cheaper than the tail script's reply for small instances, which most are.
CACHED_TAIL_MAX = 2_048
STATE_SNAPSHOT_ATTEMPTS = 2  # beyond the XREAD BLOCK time before a blocking read is abandoned
WAIT_ON_TROUBLE_S = 0.1


def _raw(response: Any, **_: Any) -> Any:
    return response


_ID_PREFIX = secrets.token_hex(8)  # per process: ids stay unique across daemons
_id_counter = itertools.count(1)


ScriptCall = Callable[[Sequence[Any], Sequence[Any]], Awaitable[Any]]


def _script_caller(client: RedisClient, source: str, *, lean: bool) -> ScriptCall:
    """EVALSHA through the pool on standalone/Sentinel (``wire.ScriptCaller``); a Cluster
    routes by key, and ``wire=stock`` asks for, redis-py's ``Script``."""
    if lean and isinstance(client, Redis):
        return ScriptCaller(client, source)
    script = client.register_script(source)
    return lambda keys, args: script(keys=keys, args=args)


def translate(exc: Exception) -> Exception:
    """The one mapping of what a Redis call raises (redis-py, sockets, the per-call timeout)
    to memoryd's errors, by the breaker's classification: infrastructure failures and
    Redis out of memory -> StoreUnavailable (UNAVAILABLE, retryable); any other reply of
    Redis -> MemorydError; memoryd's own errors and LockError (the lock wrapper decides)
    unchanged, as is anything else (a bug of memoryd stays visible)."""
    if isinstance(exc, MemorydError | rex.LockError):
        return exc
    if isinstance(exc, rex.OutOfMemoryError):
        return StoreUnavailable(f"store unavailable (out of memory): {exc}")
    if is_infrastructure_error(exc):
        kind = "timeout" if is_timeout(exc) else type(exc).__name__
        return StoreUnavailable(f"store unavailable ({kind}): {exc}")
    if isinstance(exc, rex.RedisError | rex.RedisClusterException):
        return MemorydError(f"redis error: {type(exc).__name__}: {exc}")
    return exc


def new_id() -> str:
    """A unique message id, several times cheaper than uuid4 on the append path."""
    return f"{_ID_PREFIX}{next(_id_counter):012x}"


def _seq_of(m: StoredMessage) -> int:
    return m.seq


def _counters_match(state: InstanceState) -> bool:
    return accounts_for(state.meta, len(state.messages), *token_sums(state.messages))


_COUNT_PREFIX = PRIORITY_COUNT_PREFIX.encode()
_META_KEYS = tuple(f.encode() for f in META_FIELDS)


def _whole_tail(meta: InstanceMeta, summary: Summary | None, messages: Sequence[StoredMessage]) -> TailState:
    """A complete TailState of every message (a cached instance's)."""
    pinned = tuple(m for m in messages if m.effective_priority == PINNED_PRIORITY)
    recent = tuple(m for m in messages if m.effective_priority != PINNED_PRIORITY)
    return TailState(meta, summary, pinned, recent, collections.Counter(m.effective_priority for m in recent))


def _decode_tail(reply: Sequence[Any]) -> TailState | None:
    """``scripts.TAIL``'s reply, accepted only when the read index accounts exactly for the
    counters (message count, pinned count and tokens): an instance also written by a daemon
    that predates the index fails that, and is read whole by the caller (None)."""
    flat = reply[0]
    if not flat:
        return TailState(meta=InstanceMeta(), summary=None, pinned=(), recent=(), priorities={})
    if len(reply) == 1:
        return None
    fields = dict(zip(flat[::2], flat[1::2], strict=True))
    meta = codec.decode_meta([fields.get(k) for k in _META_KEYS])
    counts = {int(k[len(_COUNT_PREFIX):]): int(v) for k, v in fields.items() if k.startswith(_COUNT_PREFIX)}
    pinned = tuple(map(codec.decode_entry, reply[2]))
    recent = tuple(codec.decode_entry(r) for r in reversed(reply[3]))
    n_pinned = counts.pop(0, 0)
    priorities = {p: n for p, n in counts.items() if n > 0}
    tail = TailState(meta=meta, summary=codec.decode_summary(reply[1]), pinned=pinned, recent=recent,
                     priorities=priorities)
    if (
        n_pinned != len(pinned)
        or n_pinned + tail.recent_total != meta.message_count
        or sum(m.token_count for m in pinned) != meta.pinned_tokens
        or (tail.complete and sum(m.token_count for m in recent) != meta.recent_tokens)
    ):
        return None
    return tail


class RedisStore:
    """MemoryStore on Redis. Create with ``memoryd.store.url.open_store`` and ``await start()``."""

    def __init__(
        self,
        settings: ConnectionSettings,
        *,
        breaker: CircuitBreaker | None = None,
        idempotency_window_ms: int = DEFAULT_IDEMPOTENCY_WINDOW_MS,
        read_attempts: int = 2,
        read_cache_messages: int = DEFAULT_CACHE_MESSAGES,
    ) -> None:
        self._breaker = Breaker(breaker, name=f"redis:{settings.redacted()}")
        floor = self._breaker.settings.bulk_timeout + SOCKET_TIMEOUT_MARGIN_S
        if settings.socket_timeout_s is not None and settings.socket_timeout_s < floor:
            # the per-call timeouts govern; the socket timeout is only the backstop behind
            # them, and must not cut short a bulk read waiting for its (large) reply
            settings = replace(settings, socket_timeout_s=floor)
        self.settings = settings
        self._idempotency_window_ms = idempotency_window_ms
        self._read_attempts = max(1, read_attempts)
        self._sem = asyncio.Semaphore(settings.max_connections)
        self._client: RedisClient | None = None
        self._blocking: RedisClient | None = None  # XREAD BLOCK for wait_for_change, its own pool
        self._waiters = asyncio.Semaphore(settings.max_connections)  # the blocking pool's connections
        self._scripts: dict[str, ScriptCall] = {}
        self._probe: asyncio.Task[None] | None = None
        self._up = False  # Redis answered once since start(); until then every call fails fast
        self._connector: asyncio.Task[None] | None = None
        self._cache = ReadCache(read_cache_messages)
        # Called with the seconds of each Redis round trip (memoryd.metrics.track_store sets it).
        self.observe_command: Callable[[float], None] | None = None

    # -- lifecycle ------------------------------------------------------------------------

    @property
    def backend(self) -> str:
        return "redis"

    @property
    def breaker_state(self) -> str:
        """The breaker's state; "open" also until Redis is first reached (calls fail fast then too)."""
        return self._breaker.state if self._up else "open"

    @property
    def breaker(self) -> Breaker:
        return self._breaker

    @property
    def parser(self) -> str:
        """The reply parser in use (``_AsyncHiredisParser`` when hiredis is active)."""
        return parser_name()

    @property
    def in_flight(self) -> int:
        """Calls holding a connection right now (at most ``settings.max_connections``)."""
        return self.settings.max_connections - self._sem._value

    @property
    def pool_size(self) -> int:
        return self.settings.max_connections

    @property
    def client(self) -> RedisClient:
        if self._client is None:
            raise StoreUnavailable("redis store not started")
        return self._client

    async def start(self) -> None:
        if self._client is not None:
            return
        client = make_client(self.settings)
        client.set_response_callback("XRANGE", _raw)  # decoded in codec: no per-entry dicts
        self._client = client
        # Blocking reads hold a connection for up to their timeout: a separate pool, so
        # watchers can never starve the calls of the memory API. No socket timeout: the
        # asyncio timeout around each XREAD bounds it (cancellation drops the connection).
        self._blocking = make_client(replace(self.settings, socket_timeout_s=None))
        self._scripts = {name: _script_caller(client, src, lean=self.settings.lean_wire)
                         for name, src in scripts.ALL.items()}
        if "Hiredis" not in self.parser:
            log.warning("hiredis is not active: replies parse several times slower", extra={"event": "no_hiredis"})
        try:
            await self._connect()
        except Exception as exc:
            failure = translate(exc)
            if not isinstance(failure, StoreUnavailable):  # Redis answered with an error: its configuration
                await self.close()
                raise failure from exc
            # Not up yet (a sidecar may start before Redis): serve NOT_SERVING and keep trying.
            log.warning("redis not reachable yet, retrying in the background: %s", failure.message,
                        extra={"event": "store_unreachable", "store": self.settings.redacted()})
            self._connector = asyncio.create_task(self._connect_until_up(), name="memoryd-redis-connect")
        except BaseException:
            await self.close()
            raise
        self._probe = asyncio.create_task(self._breaker.run_probe(self._ping_op), name="memoryd-breaker-probe")

    async def _connect(self) -> None:
        """Reach Redis once, outside the breaker (it guards a store that was up): load the scripts
        (one round trip each, to every primary of a Cluster: the bulk timeout bounds them all)."""
        async with asyncio.timeout(self._breaker.settings.bulk_timeout):
            await self._load_scripts()
        self._up = True
        log.info("redis store started", extra={"event": "store_started", "store": self.settings.redacted()})

    async def wait_up(self) -> None:
        """Return once Redis has been reached: at once when ``start`` reached it, else when
        the background reconnection does (for tools and tests that must not race it)."""
        connector = self._connector
        if connector is not None and not self._up:
            await asyncio.shield(connector)

    async def _connect_until_up(self) -> None:
        """Retry ``_connect`` with jittered exponential backoff until Redis answers."""
        attempt = 0
        while True:
            attempt += 1
            step = min(CONNECT_BACKOFF_CAP_S, CONNECT_BACKOFF_BASE_S * 2 ** min(attempt, 16))
            await asyncio.sleep(step / 2 + random.uniform(0, step / 2))  # backoff between attempts
            try:
                await self._connect()
                return
            except Exception as exc:
                failure = translate(exc)
                level = logging.WARNING if attempt % CONNECT_LOG_EVERY == 0 else logging.DEBUG
                if not isinstance(failure, StoreUnavailable):
                    level = logging.ERROR  # Redis answered with an error, or a bug: say so every time
                log.log(level, "redis not usable yet (attempt %d): %s", attempt, failure,
                        extra={"event": "store_unreachable", "store": self.settings.redacted()})

    async def _load_scripts(self) -> None:
        # SCRIPT LOAD goes to every primary on a Cluster; later NOSCRIPTs re-load by themselves.
        for source in scripts.ALL.values():
            await self.client.script_load(source)

    async def close(self) -> None:
        if self._connector is not None:
            self._connector.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._connector
            self._connector = None
        if self._probe is not None:
            self._probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe
            self._probe = None
        for client in (self._client, self._blocking):
            if client is not None:
                with contextlib.suppress(rex.RedisError, OSError):
                    await close_client(client)
        self._client = self._blocking = None

    async def _ping_op(self) -> None:
        await self.client.ping()

    async def ping(self) -> None:
        await self._run(self._ping_op)

    async def shared_secret(self, name: str) -> bytes:
        """``SET NX GET``: the first daemon's random value wins, atomically, and every daemon
        (and every restart) reads the same one; kept without TTL, like the data it keys."""
        key, fresh = SECRET_PREFIX + name, secrets.token_hex(32)

        async def op() -> bytes:
            old = await self.client.set(key, fresh, nx=True, get=True)
            return bytes.fromhex(old.decode() if isinstance(old, bytes) else fresh)

        return await self._run(op, retry=True)

    # -- the guarded call -----------------------------------------------------------------

    async def _run(self, op: Callable[[], Awaitable[T]], *, retry: bool = False, bulk: bool = False) -> T:
        """One store operation: breaker + per-call timeout + pool bound; errors -> memoryd errors.

        ``retry``: on a connection error, try again (with jittered backoff, within the same
        per-call timeout). Only for operations whose repetition is harmless: reads, and
        appends (always idempotency-keyed); never for apply-flush, clear or the lock.
        ``bulk``: a read whose reply grows with the instance (the breaker's bulk timeout,
        and its timeout is not counted as an outage).
        """
        if not self._up:
            raise StoreUnavailable("store unavailable: redis not reached yet")

        async def attempt() -> T:
            async with self._sem:
                failures = 0
                while True:
                    try:
                        return await self._timed(op)
                    except rex.ConnectionError:
                        failures += 1
                        self._idle_connections_suspect()
                        if not retry or failures >= self._read_attempts:
                            raise
                    await asyncio.sleep(random.uniform(0.002, 0.01) * failures)  # backoff before retrying

        try:
            return await self._breaker.call(attempt, bulk=bulk)
        except Exception as exc:
            failure = self._failure(exc)
            if failure is exc:
                raise
            raise failure from exc

    def _failure(self, exc: Exception) -> Exception:
        """``translate``; after a fault inside redis-py's Cluster client, also ask it to re-read
        the topology, so that a retry finds the nodes as they are now."""
        if raised_inside_redis_py(exc):
            request_refresh = getattr(self._client, "_request_refresh", None)  # redis-py's Cluster client
            if callable(request_refresh):
                request_refresh()
        return translate(exc)

    async def _timed(self, op: Callable[[], Awaitable[T]]) -> T:
        observe = self.observe_command
        if observe is None:
            return await op()
        start = time.perf_counter()
        try:
            return await op()
        finally:
            observe(time.perf_counter() - start)

    def _idle_connections_suspect(self) -> None:
        pool = getattr(self._client, "connection_pool", None)  # the Cluster client has none
        if isinstance(pool, LeanCheckout):
            pool.mark_idle_for_reconnect()

    async def _guard(self, op: Callable[[], Awaitable[T]], /) -> T:
        return await self._run(op)

    def _script(self, name: str, keys: Sequence[str], args: Sequence[Any]) -> Callable[[], Awaitable[Any]]:
        script = self._scripts[name]
        return lambda: script(keys, args)

    # -- the protocol ---------------------------------------------------------------------

    async def append(
        self,
        addr: InstanceAddr,
        messages: Sequence[NewMessage],
        *,
        idempotency_key: str | None = None,
        ttl_ms: int | None = None,
        pinned_cap: int | None = None,
        workflow_id: str | None = None,
    ) -> AppendOutcome:
        keys = InstanceKeys.of(addr)
        if not messages:
            return AppendOutcome(refs=(), meta=await self.meta(addr))
        ttl = ttl_ms if ttl_ms is not None and ttl_ms > 0 else -1
        if idempotency_key:
            field = "k:" + hashlib.blake2b(idempotency_key.encode(), digest_size=16).hexdigest()
            window = ttl if ttl > 0 else self._idempotency_window_ms
        else:  # our own key: a retry after a lost reply cannot store the batch twice
            field, window = "s:" + new_id(), RETRY_WINDOW_MS
        ids = [new_id() for _ in messages]
        args: list[Any] = [ttl, -1 if pinned_cap is None else pinned_cap, field, window,
                           codec.record_tail(ids, messages), len(messages),
                           batch_digest(messages) if idempotency_key else ""]
        for msg, mid in zip(messages, ids, strict=True):
            args.extend(codec.message_args(msg, mid))
        calls = batch_calls(messages)
        args.extend(codec.call_args(calls))
        if workflow_id is not None:
            # Indexed *before* the append: a crash in between leaves an index entry for an
            # instance that may not exist (harmless), never an instance EndWorkflow misses.
            index = workflow_index(addr.project, workflow_id)
            await self._run(self._script("workflow_add", [index], [keys.prefix, ttl]), retry=True)
        reply = await self._run(self._script("append", keys.data, args), retry=True)
        code = reply[0]
        if code == AppendReply.PINNED_FULL:
            raise PinnedTierFull(f"pinned tier full: {reply[1]} + {reply[2]} tokens > cap {pinned_cap}")
        if code == AppendReply.UNKNOWN_CALL:
            call_id, pos = calls.answers[int(reply[1]) - 1]
            raise ToolCallRefused(pos, None, call_id)
        if code == AppendReply.DUPLICATE_CALL:
            call_id, pos, j = calls.new[int(reply[1]) - 1]
            raise ToolCallRefused(pos, j, call_id)
        if code == AppendReply.KEY_CONFLICT:
            raise IdempotencyConflict(
                "idempotency_key: already used for a different batch; nothing was stored (use a new key)"
            )
        meta = codec.decode_meta(reply[-1])
        if code == AppendReply.REPLAYED:
            refs = codec.parse_record(reply[1])
            # Our own retry after a lost reply finds the record of this very call: not a replay.
            own = [r.id for r in refs] == ids
            return AppendOutcome(refs=refs, meta=meta, replayed=not own)
        first_seq, now_ms = int(reply[1]), int(reply[2])
        self._cache.remember_appended(addr, first_seq, now_ms, ids, messages, meta)
        refs = tuple(
            AppendedRef(seq=first_seq + i, id=mid, token_count=m.token_count,
                        effective_priority=m.effective_priority, created_at_ms=now_ms)
            for i, (mid, m) in enumerate(zip(ids, messages, strict=True))
        )
        return AppendOutcome(refs=refs, meta=meta)

    async def read(self, addr: InstanceAddr, *, after_seq: int = 0, limit: int = 0) -> list[StoredMessage]:
        # A cached instance is re-validated (one round trip) and served from memory. Any
        # other page is one XRANGE: a paged read never loads the whole instance first (that
        # cost a 10,000-message read most of its time before the first page left, and was
        # thrown away for instances larger than the cache), and manager.read_raw fetches
        # the next page while this one is sent. The cache is filled by state() and appends.
        cached = self._cache.get(addr)
        if cached is not None:
            if await self._revalidate(InstanceKeys.of(addr), cached) is not None:
                return cached.after(after_seq, limit)
            self._cache.drop(addr)
        key = InstanceKeys.of(addr).msgs
        start = f"{max(after_seq, 0) + 1}-0"
        rows = await self._run(lambda: self.client.xrange(key, min=start, max="+", count=limit or None),
                               retry=True, bulk=True)
        return list(map(codec.decode_entry, rows or ()))

    async def state(self, addr: InstanceAddr) -> InstanceState:
        """Meta, summary and messages of one moment.

        Read as one pipeline (meta, summary, messages, meta again: one round trip) and
        accepted when both meta reads agree and the counters match the messages; every
        mutation moves last_seq or flush_count, so a mutation in between is detected.
        A busy instance that keeps changing falls back to one read-only script, always
        consistent but ~4x costlier for Redis (a Lua script copies the whole reply).
        """
        keys = InstanceKeys.of(addr)
        fields = list(META_FIELDS)
        cached = self._cache.get(addr)
        if cached is not None:
            fresh = await self._revalidate(keys, cached)
            if fresh is not None:
                return InstanceState(meta=fresh[0], summary=fresh[1], messages=tuple(cached.messages))
            self._cache.drop(addr)

        async def snapshot() -> list[Any]:
            pipe = self.client.pipeline(transaction=False)
            pipe.hmget(keys.meta, fields)
            pipe.hmget(keys.summary, list(SUMMARY_FIELDS))
            pipe.xrange(keys.msgs)
            pipe.hmget(keys.meta, fields)
            return list(await pipe.execute())

        for _ in range(STATE_SNAPSHOT_ATTEMPTS):
            before, summary, rows, after = await self._run(snapshot, retry=True, bulk=True)
            if before == after:
                state = InstanceState(
                    meta=codec.decode_meta(after),
                    summary=codec.decode_summary(summary),
                    messages=tuple(codec.decode_entry(r) for r in rows),
                )
                if _counters_match(state):
                    self._cache.remember(addr, state)
                    return state
        meta, summary, rows = await self._run(
            self._script("state", (keys.msgs, keys.meta, keys.summary), ()), retry=True, bulk=True
        )
        state = InstanceState(
            meta=codec.decode_meta(meta),
            summary=codec.decode_summary(summary),
            messages=tuple(codec.decode_entry(r) for r in rows),
        )
        self._cache.remember(addr, state)
        return state

    async def _revalidate(
        self, keys: InstanceKeys, cached: CachedInstance
    ) -> tuple[InstanceMeta, Summary | None] | None:
        """Bring ``cached`` up to date with what was appended since, and return the meta and
        summary of that moment; None when anything else changed (another incarnation of the
        instance, a flush, or a mutation during the read). Callers take the messages from
        ``cached`` (a RAW page needs no copy of all of them).

        The epoch is what makes this safe: a cleared (or expired) instance that is appended
        to again restarts at seq 1 and may reach the cached seq with the same counters, but
        never with the same epoch."""
        fields = list(META_FIELDS)

        async def snapshot() -> list[Any]:
            pipe = self.client.pipeline(transaction=False)
            pipe.hmget(keys.meta, fields)
            pipe.hmget(keys.summary, list(SUMMARY_FIELDS))
            pipe.xrange(keys.msgs, min=f"{cached.covered_seq + 1}-0")
            pipe.hmget(keys.meta, fields)
            return list(await pipe.execute())

        before, summary, new_rows, after = await self._run(snapshot, retry=True, bulk=True)
        if before != after:
            return None
        meta = codec.decode_meta(after)
        if not cached.same_removals(meta):
            return None
        new = [codec.decode_entry(r) for r in new_rows]
        if not cached.counters_match(meta, new):
            return None
        cached.extend(new, meta.last_seq)
        self._cache.grew(len(new))
        return meta, codec.decode_summary(summary)

    async def tail_state(self, addr: InstanceAddr, *, min_tokens: int, min_messages: int) -> TailState | None:
        """One read-only script (``scripts.TAIL``): consistent by itself, and its reply is what
        the view may need, not the stream. A small instance (at most ``CACHED_TAIL_MAX``
        messages) that the script returned whole is remembered in the read cache, and served
        from it next time after the same revalidation as ``state`` (one small pipeline instead
        of a script returning the tail's entries: docs/redis.md, "Reads")."""
        keys = InstanceKeys.of(addr)
        cached = self._cache.get(addr)
        if cached is not None and len(cached.messages) <= CACHED_TAIL_MAX:
            fresh = await self._revalidate(keys, cached)
            if fresh is not None:
                return _whole_tail(fresh[0], fresh[1], cached.messages)
            self._cache.drop(addr)
        reply = await self._run(
            self._script("tail", (keys.msgs, keys.meta, keys.summary), (min_tokens, min_messages)),
            retry=True, bulk=True,
        )
        tail = _decode_tail(reply)
        if tail is not None and tail.complete and tail.meta.message_count <= CACHED_TAIL_MAX:
            self._cache.remember(addr, tail.as_state())  # the whole instance, read in one script
        return tail

    async def meta(self, addr: InstanceAddr) -> InstanceMeta:
        key = InstanceKeys.of(addr).meta
        values = await self._run(lambda: self.client.hmget(key, list(META_FIELDS)), retry=True)
        return codec.decode_meta(values)

    async def read_history(self, addr: InstanceAddr, *, after_seq: int = 0, limit: int = 0) -> list[StoredMessage]:
        """Live and folded messages with seq > after_seq, oldest first: one consistent script
        reads a page of each (at most ``limit`` of each), merged by seq and cut to ``limit``."""
        keys = InstanceKeys.of(addr)
        after = max(after_seq, 0)
        live, hist = await self._run(self._script("history_page", (keys.msgs, keys.history),
                                                  (f"{after + 1}-0", f"({after}", limit)), retry=True, bulk=True)
        folded = [codec.decode_history(hist[i], hist[i + 1]) for i in range(0, len(hist), 2)]
        merged = sorted([*map(codec.decode_entry, live), *folded], key=_seq_of)
        return merged[:limit] if limit else merged

    async def delete_messages(
        self, addr: InstanceAddr, seqs: Sequence[int], *, if_last_seq: int | None = None, ttl_ms: int | None = None
    ) -> DeleteOutcome:
        keys = InstanceKeys.of(addr)
        unique = sorted(set(seqs))
        args: list[Any] = [ttl_ms if ttl_ms is not None and ttl_ms > 0 else -1,
                           "" if if_last_seq is None else str(if_last_seq), *unique]
        reply = await self._run(self._script("delete_messages", keys.data, args))
        if reply[0] == DeleteReply.LAST_SEQ_CHANGED:
            raise LastSeqChanged(f"if_last_seq: the instance's last seq is {int(reply[1])}, not {if_last_seq}; "
                                 "nothing was deleted")
        deleted = tuple(sorted(int(x) for x in reply[1]))
        if deleted:
            self._cache.drop(addr)  # other daemons' caches see delete_count move
        return DeleteOutcome(deleted_seqs=deleted, meta=codec.decode_meta(reply[2]))

    async def apply_flush(
        self, addr: InstanceAddr, plan: FlushPlan, *, fence: int, ttl_ms: int | None = None,
        history: HistoryPolicy = KEEP_ALL_HISTORY,
    ) -> FlushOutcome:
        keys = InstanceKeys.of(addr)
        s = plan.summary
        args: list[Any] = [
            fence,
            ttl_ms if ttl_ms is not None and ttl_ms > 0 else -1,
            "1" if s is not None else "0",
            s.content if s is not None else "",
            s.token_count if s is not None else 0,
            s.through_seq if s is not None else 0,
            s.updated_at_ms if s is not None else 0,
            plan.epoch,
            "1" if plan.strategy == "fifo" else "0",
            "" if plan.flush_count is None else plan.flush_count,
            "1" if history.keep else "0",
            history.max_messages,
        ]
        if len(args) != scripts.APPLY_FLUSH_FIRST_SEQ - 1:  # the script reads the seqs from there
            raise AssertionError("apply_flush arguments and scripts.APPLY_FLUSH_FIRST_SEQ disagree")
        args.extend(plan.remove_seqs)
        reply = await self._run(self._script("apply_flush", keys.data, args))
        if reply[0] == ApplyFlushReply.STALE_FENCE:
            raise FenceRejected(f"stale fence {fence}, instance is at {int(reply[1])}")
        if reply[0] == ApplyFlushReply.OTHER_EPOCH:
            self._cache.drop(addr)
            raise InstanceChanged("the instance was cleared and created again since the flush read it")
        if reply[0] == ApplyFlushReply.OTHER_FOLD:
            raise FoldedMeanwhile(f"another fold happened since the plan (fold {int(reply[1])}, planned at "
                                  f"{plan.flush_count}): plan again")
        if reply[0] == ApplyFlushReply.GONE:
            return FlushOutcome(removed_seqs=(), meta=InstanceMeta())
        return FlushOutcome(removed_seqs=tuple(int(x) for x in reply[1]), meta=codec.decode_meta(reply[2]))

    async def clear(self, addr: InstanceAddr) -> int:
        deleted, _existed = await self._clear_keys(InstanceKeys.of(addr))
        return deleted

    async def _clear_keys(self, keys: InstanceKeys) -> tuple[int, int]:
        deleted, existed = await self._run(self._script("clear", keys.data, ()))
        return int(deleted), int(existed)

    def lock(
        self, addr: InstanceAddr, *, ttl_ms: int, acquire_timeout_s: float
    ) -> AbstractAsyncContextManager[LockLease]:
        keys = InstanceKeys.of(addr)

        async def fence() -> int:
            return int(await self._run(self._script("fence", [keys.meta], ())))

        return InstanceLock(
            self.client, keys.lock, ttl_ms=ttl_ms, acquire_timeout_s=acquire_timeout_s, guard=self._guard, fence=fence
        )

    async def wait_for_change(self, addr: InstanceAddr, *, after_seq: int, timeout_s: float) -> None:
        """XREAD BLOCK for an entry after ``after_seq``: appends wake it at once; a flush or
        clear (which add no entry) is seen by the caller's re-read after ``timeout_s``."""
        blocking = self._blocking
        if blocking is None or self.breaker_state != "closed":
            await asyncio.sleep(min(timeout_s, WAIT_ON_TROUBLE_S))  # the caller's next read reports it
            return
        key = InstanceKeys.of(addr).msgs
        try:
            # More waiters than blocking connections (redis-py's pool raises when exhausted):
            # the others wait for one, and return after timeout_s, as a blocked XREAD would.
            async with asyncio.timeout(timeout_s):
                await self._waiters.acquire()
        except TimeoutError:
            return
        try:
            async with asyncio.timeout(timeout_s + WAIT_MARGIN_S):
                await blocking.xread({key: f"{max(after_seq, 0)}-0"}, count=1, block=max(1, int(timeout_s * 1000)))
        except Exception as exc:
            if not isinstance(translate(exc), MemorydError):
                raise  # a bug of memoryd, not trouble with Redis
            await asyncio.sleep(min(timeout_s, WAIT_ON_TROUBLE_S))  # a wake-up signal only: never raise
        finally:
            self._waiters.release()

    async def end_workflow(self, project: str, workflow_id: str) -> int:
        index = workflow_index(project, workflow_id)
        members: set[Any] = await self._run(lambda: self.client.smembers(index), retry=True, bulk=True)
        prefixes: list[InstanceKeys] = []
        for m in members:
            try:
                prefixes.append(InstanceKeys.from_prefix(m.decode()))
            except (ValueError, UnicodeDecodeError):
                log.warning("ignoring a foreign workflow index member", extra={"event": "bad_index_member"})
        existed = 0
        for i in range(0, len(prefixes), END_WORKFLOW_PARALLELISM):
            chunk = prefixes[i: i + END_WORKFLOW_PARALLELISM]
            results = await asyncio.gather(*(self._clear_keys(k) for k in chunk))
            existed += sum(1 for _deleted, n in results if n > 0)
        if members:
            # SREM, not DEL: an instance indexed meanwhile by a concurrent append stays listed.
            await self._run(lambda: self.client.srem(index, *members))
        return existed
