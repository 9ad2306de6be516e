"""The Redis store's read cache never serves what another daemon changed.

Two RedisStore objects on one Redis stand for two daemons: one reads (and caches), the
other mutates; every read of the first must equal what Redis holds.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from memoryd.keys import InstanceAddr
from memoryd.models import StoredMessage, Summary
from memoryd.store.base import MemoryStore
from memoryd.store.redis.cache import CachedInstance, ReadCache
from memoryd.store.redis.store import RedisStore
from memoryd.store.url import open_store
from tests.store.conftest import REDIS_BACKENDS, TEST_BREAKER, backend_url, new_addr
from tests.store.test_conformance import msg, pinned, plan


@pytest.fixture(params=REDIS_BACKENDS)
async def pair(request: pytest.FixtureRequest) -> AsyncIterator[tuple[MemoryStore, MemoryStore]]:
    url = backend_url(request, request.param)
    reader, writer = open_store(url, breaker=TEST_BREAKER), open_store(url, breaker=TEST_BREAKER)
    await reader.start()
    await writer.start()
    try:
        yield reader, writer
    finally:
        await reader.close()
        await writer.close()


async def seen(store: MemoryStore, addr: InstanceAddr) -> list[tuple[int, str, str]]:
    return [(m.seq, m.id, m.content) for m in (await store.state(addr)).messages]


async def test_appends_by_another_daemon_are_seen(pair: tuple[MemoryStore, MemoryStore]) -> None:
    reader, writer = pair
    addr = new_addr()
    await writer.append(addr, [msg("a"), msg("b")])
    assert [c for _, _, c in await seen(reader, addr)] == ["a", "b"]
    await writer.append(addr, [msg("c")])
    assert [c for _, _, c in await seen(reader, addr)] == ["a", "b", "c"]
    assert [m.content for m in await reader.read(addr, after_seq=1, limit=1)] == ["b"]
    assert await seen(reader, addr) == await seen(writer, addr)


async def test_flush_by_another_daemon_invalidates(pair: tuple[MemoryStore, MemoryStore]) -> None:
    reader, writer = pair
    addr = new_addr()
    await writer.append(addr, [msg(f"m{i}") for i in range(5)])
    assert len(await seen(reader, addr)) == 5
    async with writer.lock(addr, ttl_ms=5000, acquire_timeout_s=2) as lease:
        await writer.apply_flush(addr, plan([1, 2], Summary("s", 3, 2, 0)), fence=lease.fence)
    state = await reader.state(addr)
    assert [m.seq for m in state.messages] == [3, 4, 5]
    assert state.summary is not None and state.summary.content == "s"
    assert [m.seq for m in await reader.read(addr)] == [3, 4, 5]


async def test_delete_by_another_daemon_is_seen(pair: tuple[MemoryStore, MemoryStore]) -> None:
    reader, writer = pair
    addr = new_addr()
    await writer.append(addr, [msg(f"m{i}") for i in range(5)])
    assert len(await seen(reader, addr)) == 5 and len(await reader.read(addr)) == 5  # cached now
    await writer.delete_messages(addr, [2, 4])
    await writer.append(addr, [msg("m5")])
    assert [m.seq for m in (await reader.state(addr)).messages] == [1, 3, 5, 6]
    assert [m.seq for m in await reader.read(addr)] == [1, 3, 5, 6]
    assert await seen(reader, addr) == await seen(writer, addr)


def test_a_cached_copy_is_not_used_after_a_delete() -> None:
    """Belt and braces: the counters alone already tell a delete of a cached message (the
    count falls below cached + new), but a delete is also named by ``delete_count``."""
    from memoryd.models import InstanceMeta

    cached = CachedInstance([], "epoch-1", flush_count=2, covered_seq=0, delete_count=1)
    assert cached.same_removals(InstanceMeta(epoch="epoch-1", flush_count=2, delete_count=1))
    assert not cached.same_removals(InstanceMeta(epoch="epoch-1", flush_count=2, delete_count=2))
    assert not cached.same_removals(InstanceMeta(epoch="epoch-1", flush_count=3, delete_count=1))
    assert not cached.same_removals(InstanceMeta(epoch="epoch-2", flush_count=2, delete_count=1))


async def test_clear_and_recreation_to_the_same_shape_is_detected(pair: tuple[MemoryStore, MemoryStore]) -> None:
    reader, writer = pair
    addr = new_addr()
    await writer.append(addr, [msg("old-1"), msg("old-2")])
    assert [c for _, _, c in await seen(reader, addr)] == ["old-1", "old-2"]
    await writer.clear(addr)
    await writer.append(addr, [msg("new-1"), msg("new-2")])  # same seqs, same counters, new ids
    assert [c for _, _, c in await seen(reader, addr)] == ["new-1", "new-2"]
    assert [m.content for m in await reader.read(addr)] == ["new-1", "new-2"]


async def test_clear_then_fewer_messages_is_detected(pair: tuple[MemoryStore, MemoryStore]) -> None:
    reader, writer = pair
    addr = new_addr()
    await writer.append(addr, [msg("x1"), msg("x2"), msg("x3")])
    await seen(reader, addr)
    await writer.clear(addr)
    assert await seen(reader, addr) == []
    await writer.append(addr, [msg("y1")])
    assert [c for _, _, c in await seen(reader, addr)] == ["y1"]


async def test_own_appends_are_cached_exactly_as_stored(pair: tuple[MemoryStore, MemoryStore]) -> None:
    """A daemon keeps what it appended (no full read needed afterwards), field for field
    what another daemon decodes from Redis."""
    writer, other = pair
    addr = new_addr()
    await writer.append(addr, [msg("a", metadata={"k": "v", "é": "ü"}), pinned("rules", tokens=7)])
    await writer.append(addr, [msg("b", priority=3, effective=3, role="assistant", content_type="json")],
                        idempotency_key="k1")
    await writer.append(addr, [msg("b", priority=3, effective=3, role="assistant", content_type="json")],
                        idempotency_key="k1")  # a replay stores nothing and caches nothing
    cached = writer._cache.get(addr)  # type: ignore[attr-defined]
    assert cached is not None and cached.covered_seq == 3
    assert (await writer.state(addr)).messages == (await other.state(addr)).messages
    assert [m.content for m in await writer.read(addr, after_seq=1)] == ["rules", "b"]


async def test_appends_interleaved_between_daemons_stay_exact(pair: tuple[MemoryStore, MemoryStore]) -> None:
    a, b = pair
    addr = new_addr()
    await a.append(addr, [msg("a1")])
    await b.append(addr, [msg("b1")])  # a's cached copy no longer continues at a's next append
    await a.append(addr, [msg("a2")])
    assert [m.content for m in (await a.state(addr)).messages] == ["a1", "b1", "a2"]
    assert (await a.state(addr)).messages == (await b.state(addr)).messages


async def test_reads_without_a_cache_page_through_redis(pair: tuple[MemoryStore, MemoryStore]) -> None:
    """``read_cache_messages=0``: every page is read from Redis, the same pages as cached."""
    cached, _ = pair
    assert isinstance(cached, RedisStore)
    uncached = RedisStore(cached.settings, breaker=TEST_BREAKER, read_cache_messages=0)
    await uncached.start()
    try:
        addr = new_addr()
        await cached.append(addr, [msg(c) for c in "abcde"])
        for after, limit in ((0, 2), (2, 2), (4, 0), (5, 3)):
            got = await uncached.read(addr, after_seq=after, limit=limit)
            assert got == await cached.read(addr, after_seq=after, limit=limit)
        assert [m.content for m in await uncached.read(addr, limit=2)] == ["a", "b"]
        assert len(uncached._cache) == 0
    finally:
        await uncached.close()


async def test_pages_of_an_uncached_instance_come_straight_from_redis(
        pair: tuple[MemoryStore, MemoryStore]) -> None:
    """A paged read by a daemon with nothing cached reads its page only (it once loaded the
    whole instance first), and its pages stay exact across another daemon's appends,
    flushes and a clear; once a CONTEXT-style state() read has cached the instance, pages
    come from the re-validated cache and are the same."""
    reader, writer = pair
    addr = new_addr()
    await writer.append(addr, [msg(f"m{i}") for i in range(1, 11)])
    assert [m.content for m in await reader.read(addr, limit=3)] == ["m1", "m2", "m3"]
    assert reader._cache.get(addr) is None  # type: ignore[attr-defined]
    assert await reader.read(addr, after_seq=3, limit=4) == await writer.read(addr, after_seq=3, limit=4)
    await writer.append(addr, [msg("m11")])
    async with writer.lock(addr, ttl_ms=5000, acquire_timeout_s=2) as lease:
        await writer.apply_flush(addr, plan([1, 2, 3, 4], Summary("s", 3, 4, 0)), fence=lease.fence)
    assert [m.seq for m in await reader.read(addr, after_seq=3, limit=3)] == [5, 6, 7]
    assert [m.content for m in await reader.read(addr, after_seq=7)] == ["m8", "m9", "m10", "m11"]
    await reader.state(addr)
    assert reader._cache.get(addr) is not None  # type: ignore[attr-defined]
    assert await reader.read(addr, after_seq=4, limit=2) == await writer.read(addr, after_seq=4, limit=2)
    await writer.clear(addr)
    await writer.append(addr, [msg("new")])
    assert [m.content for m in await reader.read(addr, limit=5)] == ["new"]


async def test_cache_is_bounded() -> None:
    cache = ReadCache(max_messages=10)
    a, b, c = (InstanceAddr("p", "r", k) for k in "abc")
    cache.put(a, CachedInstance([], "e", 0, 0))
    for addr, n in ((a, 0), (b, 6), (c, 6)):
        cache.put(addr, CachedInstance([_stored(i) for i in range(n)], "e", 0, n))
    assert cache.get(b) is None and cache.get(c) is not None  # b was least recently used
    cache.put(a, CachedInstance([_stored(i) for i in range(11)], "e", 0, 11))
    assert cache.get(a) is None  # larger than the whole cache: not kept


def _stored(seq: int) -> StoredMessage:
    return StoredMessage(seq=seq, id=str(seq), role="user", content="", content_type="text", priority=None,
                         effective_priority=5, token_count=1, created_at_ms=0)
