"""What the Redis backend promises beyond the protocol: key layout, TTLs, script re-loading,
the workflow index, hiredis (on standalone, Cluster and Sentinel)."""

from __future__ import annotations

import asyncio

import pytest

from memoryd.keys import InstanceAddr
from memoryd.models import FlushPlan, NewMessage, Summary, ToolCall
from memoryd.store.base import MemoryStore
from memoryd.store.redis import RedisStore
from memoryd.store.redis import store as store_module
from memoryd.store.redis.layout import VERSION_PREFIX, InstanceKeys, workflow_index
from memoryd.store.url import open_store
from tests.store.conftest import TEST_BREAKER, backend_url, new_addr


def msg(content: str = "m", pinned: bool = False) -> NewMessage:
    return NewMessage(role="system" if pinned else "user", content=content, content_type="text",
                      priority=0 if pinned else None, effective_priority=0 if pinned else 5, token_count=4)


def redis(store: MemoryStore) -> RedisStore:
    assert isinstance(store, RedisStore)
    return store


async def ttls(store: RedisStore, addr: InstanceAddr) -> dict[str, int]:
    """PTTL of every existing key of the instance, by key name."""
    keys = InstanceKeys.of(addr)
    out = {}
    for k in keys.data:
        if await store.client.exists(k):
            out[k] = int(await store.client.pttl(k))
    return out


async def test_hiredis_parses_replies(redis_store: MemoryStore) -> None:
    assert redis(redis_store).parser == "_AsyncHiredisParser"


async def test_every_key_is_versioned_and_shares_the_instance_tag(redis_store: MemoryStore,
                                                                  addr: InstanceAddr) -> None:
    s = redis(redis_store)
    await s.append(addr, [msg()], idempotency_key="k", workflow_id="wf")
    keys = InstanceKeys.of(addr)
    for k in (*keys.data, keys.lock):
        assert k.startswith(f"{VERSION_PREFIX}{addr.hash_tag}:")
    assert workflow_index("proj", "wf").startswith(VERSION_PREFIX)
    tagged = {int(await s.client.execute_command("CLUSTER KEYSLOT", k)) for k in (*keys.data, keys.lock)} \
        if s.settings.mode == "cluster" else {0}
    assert len(tagged) == 1


async def test_every_write_applies_the_ttl_to_every_key(redis_store: MemoryStore, addr: InstanceAddr) -> None:
    s = redis(redis_store)
    caller = NewMessage(role="assistant", content="", content_type="text", priority=None, effective_priority=5,
                        token_count=4, tool_calls=(ToolCall("c1", "f", "{}"),))
    await s.append(addr, [msg(), caller], idempotency_key="k", ttl_ms=60_000)
    first = await ttls(s, addr)
    assert len(first) == 5 and all(0 < t <= 60_000 for t in first.values())  # msgs, meta, idem, idemx, calls
    async with s.lock(addr, ttl_ms=5_000, acquire_timeout_s=5) as lease:
        plan = FlushPlan("hybrid_summary", (1,), Summary("s", 1, 1, 0), 0, 0)
        await s.apply_flush(addr, plan, fence=lease.fence, ttl_ms=120_000)
    after_flush = await ttls(s, addr)  # + sum and hist (the folded message): all seven keys
    assert len(after_flush) == 7 and all(60_000 < t <= 120_000 for t in after_flush.values())
    await s.append(addr, [msg(), msg()], ttl_ms=150_000)
    assert all(120_000 < t <= 150_000 for t in (await ttls(s, addr)).values())  # history too
    await s.delete_messages(addr, [2], ttl_ms=180_000)  # a delete is a write: it refreshes every key
    after_delete = await ttls(s, addr)
    assert len(after_delete) == 7 and all(150_000 < t <= 180_000 for t in after_delete.values())
    await s.append(addr, [msg()])  # no TTL: the instance no longer expires
    assert all(t == -1 for t in (await ttls(s, addr)).values())


async def test_workflow_index_lives_as_long_as_its_longest_instance(redis_store: MemoryStore) -> None:
    s = redis(redis_store)
    wf = f"wf-{new_addr().key}"
    index = workflow_index("proj", wf)
    await s.append(new_addr(), [msg()], workflow_id=wf, ttl_ms=600_000)
    await s.append(new_addr(), [msg()], workflow_id=wf, ttl_ms=60_000)  # never shortens it
    assert 60_000 < int(await s.client.pttl(index)) <= 600_000
    await s.append(new_addr(), [msg()], workflow_id=wf)  # an instance without TTL
    assert int(await s.client.pttl(index)) == -1
    assert await s.end_workflow("proj", wf) == 3
    assert not await s.client.exists(index)


async def test_end_workflow_ignores_foreign_index_members(redis_store: MemoryStore) -> None:
    s = redis(redis_store)
    wf, a = f"wf-{new_addr().key}", new_addr()
    await s.append(a, [msg()], workflow_id=wf)
    index = workflow_index("proj", wf)
    victim = index + ":victim"  # same slot as the index: a key a corrupted index might name
    await s.client.set(victim, "keep me")
    await s.client.sadd(index, victim)
    assert await s.end_workflow("proj", wf) == 1
    assert await s.client.get(victim) == b"keep me"
    await s.client.delete(victim)


async def test_scripts_reload_after_script_flush(redis_store: MemoryStore, addr: InstanceAddr) -> None:
    s = redis(redis_store)
    await s.append(addr, [msg("a"), msg("b")])
    await s.client.script_flush()  # on every primary of a Cluster; like a restart or failover
    await s.append(addr, [msg("c")])
    assert [m.content for m in (await s.state(addr)).messages] == ["a", "b", "c"]
    await s.client.script_flush()
    async with s.lock(addr, ttl_ms=5_000, acquire_timeout_s=5) as lease:
        out = await s.apply_flush(addr, FlushPlan("fifo", (1,), None, 0, 0), fence=lease.fence)
    assert out.removed_seqs == (1,)
    await s.client.script_flush()
    assert await s.clear(addr) == 2


async def test_a_history_left_without_its_meta_is_never_inherited(redis_store: MemoryStore,
                                                                  addr: InstanceAddr) -> None:
    """The instance's keys expire and are deleted together; should a history key ever outlive
    its meta hash (an operator's DEL, eviction under maxmemory), the incarnation created next
    starts without it: a wiped instance's history never comes back."""
    s = redis(redis_store)
    await s.append(addr, [msg("old a"), msg("old b")])
    async with s.lock(addr, ttl_ms=5_000, acquire_timeout_s=5) as lease:
        await s.apply_flush(addr, FlushPlan("hybrid_summary", (1,), None, 0, 0), fence=lease.fence)
    keys = InstanceKeys.of(addr)
    await s.client.delete(keys.meta, keys.msgs)
    assert await s.client.exists(keys.history)
    await s.append(addr, [msg("new")])
    assert [(m.content, m.folded) for m in await s.read_history(addr)] == [("new", False)]
    assert (await s.meta(addr)).history_messages == 0


async def test_history_page_script_is_reloaded_and_reads_one_moment(redis_store: MemoryStore,
                                                                    addr: InstanceAddr) -> None:
    s = redis(redis_store)
    await s.append(addr, [msg("a"), msg("b"), msg("c")])
    async with s.lock(addr, ttl_ms=5_000, acquire_timeout_s=5) as lease:
        await s.apply_flush(addr, FlushPlan("hybrid_summary", (2,), None, 0, 0), fence=lease.fence)
    await s.client.script_flush()
    assert [(m.seq, m.folded) for m in await s.read_history(addr)] == [(1, False), (2, True), (3, False)]
    await s.client.script_flush()
    assert (await s.delete_messages(addr, [2, 3])).deleted_seqs == (2, 3)


async def test_sequence_survives_a_lost_meta_hash(redis_store: MemoryStore, addr: InstanceAddr) -> None:
    """Defensive: if only the meta hash disappeared, new seqs still follow the stream's last id
    (XADD would refuse a smaller id, and a failed script keeps its earlier writes)."""
    s = redis(redis_store)
    await s.append(addr, [msg("a"), msg("b"), msg("c")])
    await s.client.delete(InstanceKeys.of(addr).meta)
    out = await s.append(addr, [msg("d")])
    assert out.refs[0].seq == 4
    assert [m.seq for m in await s.read(addr)] == [1, 2, 3, 4]


async def test_wait_for_change_wakes_on_append(redis_store: MemoryStore, addr: InstanceAddr) -> None:
    import asyncio

    s = redis(redis_store)
    await s.append(addr, [msg("a")])
    waiter = asyncio.create_task(s.wait_for_change(addr, after_seq=1, timeout_s=30))
    await s.wait_for_change(addr, after_seq=0, timeout_s=30)  # already changed: returns at once
    assert not waiter.done()
    await s.append(addr, [msg("b")])
    await asyncio.wait_for(waiter, 10)


async def test_state_is_consistent_under_concurrent_writes(redis_store: MemoryStore, addr: InstanceAddr,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Both ways of reading a state (pipelined snapshot, and the script it falls back to when
    the instance keeps changing) return counters that match the messages they return."""
    import asyncio

    s = redis(redis_store)
    stop = asyncio.Event()

    async def writer(w: int) -> None:
        i = 0
        while not stop.is_set():
            await s.append(addr, [msg(f"w{w}-{i}"), msg(f"w{w}-{i}", pinned=i % 3 == 0)])
            i += 1

    writers = [asyncio.create_task(writer(w)) for w in range(4)]
    try:
        for attempts in (store_module.STATE_SNAPSHOT_ATTEMPTS, 0):  # 0: always the script
            monkeypatch.setattr(store_module, "STATE_SNAPSHOT_ATTEMPTS", attempts)
            for _ in range(15):
                state = await s.state(addr)
                assert state.meta.message_count == len(state.messages)
                assert state.meta.pinned_tokens == sum(m.token_count for m in state.messages if m.pinned)
                assert state.meta.last_seq == (state.messages[-1].seq if state.messages else 0)
    finally:
        stop.set()
        await asyncio.gather(*writers)




@pytest.mark.parametrize("backend", ["standalone", "sentinel"])
async def test_one_connection_found_closed_makes_every_idle_one_reconnect(
    backend: str, request: pytest.FixtureRequest
) -> None:
    """A server restart or a proxy's idle timeout closes all idle connections at once, and
    redis-py's checkout does not notice. After the first one is found closed, no idle
    connection may be handed out unchecked: a retry must not draw another closed one."""
    store = open_store(backend_url(request, backend), breaker=TEST_BREAKER)
    await store.start()
    try:
        assert isinstance(store, RedisStore)
        addr = new_addr()
        await asyncio.gather(*(store.append(addr, [msg(f"warm {i}")]) for i in range(8)))
        pool = store.client.connection_pool
        killer = await pool.get_connection()  # held, so that every idle connection is closed
        await killer.send_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
        await killer.read_response()
        idle = len(pool._available_connections)
        assert idle >= 2
        await store.append(addr, [msg("after the kill")])  # finds one closed, retries
        taken = [await pool.get_connection() for _ in range(idle)]
        try:
            for conn in taken:
                await conn.send_command("PING")
                assert await conn.read_response() in (b"PONG", "PONG")
        finally:
            for conn in (*taken, killer):
                await pool.release(conn)
        assert store.breaker.failures == 0
    finally:
        await store.close()


@pytest.mark.parametrize("backend", ["standalone", "sentinel"])
async def test_appends_survive_connections_closed_by_the_server(backend: str, request: pytest.FixtureRequest) -> None:
    """memoryd's lean pool checkout (``wire.LeanCheckout``) with connections the server
    has closed while idle: appends reconnect and retry (each is idempotency-keyed), and
    every message is stored exactly once, without a failure counted by the breaker."""
    store = open_store(backend_url(request, backend), breaker=TEST_BREAKER)
    await store.start()
    try:
        assert isinstance(store, RedisStore)
        addr = new_addr()
        for batch in range(3):
            await asyncio.gather(*(store.append(addr, [NewMessage("user", f"{batch}:{i}", "text", None, 5, 1)])
                                   for i in range(8)))
            await store.client.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
        contents = [m.content for m in (await store.state(addr)).messages]
        assert sorted(contents) == sorted(f"{b}:{i}" for b in range(3) for i in range(8))
        assert store.breaker.failures == 0
    finally:
        await store.close()


async def test_the_bench_floor_calls_the_append_script_as_the_store_does(redis_store: MemoryStore,
                                                                          addr: InstanceAddr) -> None:
    """bench/floor_server.py runs memoryd's own append script as its floor; its arguments
    must follow the script's layout, or the daemon benchmark breaks when the layout grows."""
    from bench.floor_server import KEYS, append_args
    from memoryd.store.redis.scripts import APPEND

    keys = InstanceKeys.of(addr)
    assert [k.rsplit(":", 1)[1] for k in KEYS] == [k.rsplit(":", 1)[1] for k in keys.data]
    script = redis(redis_store).client.register_script(APPEND)
    reply = await script(keys=list(keys.data), args=append_args(1, b"floor"))
    assert int(reply[0]) == 0  # AppendReply.STORED
    stored = await redis_store.read(addr)
    assert [(m.seq, m.content, m.token_count) for m in stored] == [(1, "floor", 100)]
