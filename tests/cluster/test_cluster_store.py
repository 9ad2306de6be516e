"""Redis Cluster specifics: instances spread over the masters, every script on one slot,
EndWorkflow across slots. (The whole conformance suite also runs on this cluster.)"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import grpc
import pytest
import redis.exceptions as rex
from redis.asyncio import RedisCluster
from redis.crc import key_slot

from memoryd.config.model import CircuitBreaker
from memoryd.errors import StoreUnavailable
from memoryd.models import NewMessage
from memoryd.status import grpc_code
from memoryd.store.redis import RedisStore
from memoryd.store.redis import scripts as lua
from memoryd.store.redis.layout import InstanceKeys, workflow_index
from memoryd.store.url import open_store
from tests.redis_servers import RedisClusterProcs, start_cluster, temporary
from tests.store.conftest import new_addr


def msg(i: int) -> NewMessage:
    return NewMessage(role="user", content=f"m{i}", content_type="text", priority=None, effective_priority=5,
                      token_count=1)


def slot_owners(cluster: RedisClusterProcs) -> dict[int, int]:
    """slot -> port of the master serving it."""
    with cluster.nodes[0].client() as c:
        slots = c.execute_command("CLUSTER SLOTS")
    owners = {}
    for lo, hi, master, *_ in slots:
        for s in range(int(lo), int(hi) + 1):
            owners[s] = int(master[1])
    return owners


async def test_instances_spread_over_all_masters_and_each_lives_on_one_slot(redis_cluster: RedisClusterProcs) -> None:
    store = open_store(redis_cluster.url, breaker=CircuitBreaker(timeout_s=2))
    assert isinstance(store, RedisStore)
    await store.start()
    try:
        owners = slot_owners(redis_cluster)
        used_masters = set()
        wf = f"wf-{new_addr().key}"
        addrs = [new_addr() for _ in range(24)]
        for i, a in enumerate(addrs):
            await store.append(a, [msg(i)], workflow_id=wf, idempotency_key="k", ttl_ms=60_000)
            keys = InstanceKeys.of(a)
            slots = {int(await store.client.execute_command("CLUSTER KEYSLOT", k)) for k in (*keys.data, keys.lock)}
            assert len(slots) == 1
            used_masters.add(owners[slots.pop()])
        assert used_masters == {n.port for n in redis_cluster.nodes}
        index_slot = int(await store.client.execute_command("CLUSTER KEYSLOT", workflow_index("proj", wf)))
        assert index_slot in owners
        assert await store.end_workflow("proj", wf) == 24  # instances on every master
        for a in addrs:
            assert await store.read(a) == []
    finally:
        await store.close()


def test_redis_refuses_a_script_over_two_instances(redis_cluster: RedisClusterProcs) -> None:
    """Why passing the suite on a cluster proves single-slot scripts: Redis would refuse them."""
    node = redis_cluster.nodes[0]
    a, b = InstanceKeys.of(new_addr()), InstanceKeys.of(new_addr())
    while key_slot(a.msgs.encode()) == key_slot(b.msgs.encode()):
        b = InstanceKeys.of(new_addr())
    with node.client() as c, pytest.raises(rex.ResponseError, match="hash to the same slot"):  # CROSSSLOT
        c.eval(lua.CLEAR, 5, a.msgs, a.meta, a.summary, b.idem, b.idem_expiry)


async def test_a_fault_inside_redis_py_mid_failover_is_unavailable_and_retryable(
    redis_cluster: RedisClusterProcs,
) -> None:
    """Regression (issue 15, item 5): during a Cluster master restart redis-py's client looked a
    node up as None and raised AttributeError from its own code, which reached the caller as
    INTERNAL. It is UNAVAILABLE (retryable), and a retry succeeds once redis-py has re-read the
    topology. The state is the one of redis-py#3835: a slot whose node is None in its slot map."""
    store = open_store(redis_cluster.url, breaker=CircuitBreaker(timeout_s=2.0, reset_timeout_s=0.2))
    await store.start()
    try:
        assert isinstance(store, RedisStore) and isinstance(store.client, RedisCluster)
        addr = new_addr()
        await store.append(addr, [msg(0)])
        slot = key_slot(InstanceKeys.of(addr).meta.encode())
        store.client.nodes_manager.slots_cache[slot] = [None]  # type: ignore[list-item]
        with pytest.raises(StoreUnavailable) as info:
            await store.append(addr, [msg(1)], idempotency_key="k1")
        assert grpc_code(info.value) == grpc.StatusCode.UNAVAILABLE
        assert "AttributeError" in info.value.message
        deadline = time.monotonic() + 30
        while True:  # a client's retries
            try:
                await store.append(addr, [msg(1)], idempotency_key="k1")
                break
            except StoreUnavailable:
                assert time.monotonic() < deadline, "no retry succeeded"
                await asyncio.sleep(0.05)  # a client's retry pacing
        assert [m.content for m in await store.read(addr)] == ["m0", "m1"]
    finally:
        await store.close()


async def test_a_store_started_before_the_cluster_serves_once_it_is_up(tmp_path: Path) -> None:
    """Issue 15, item 4 on a Cluster: no node reachable at start is not fatal (redis-py raises
    RedisClusterUnreachableError, an infrastructure failure); the store keeps trying and serves
    once the nodes are back (restarted on their ports, their cluster config kept)."""
    with temporary(start_cluster, tmp_path) as cluster:
        cluster.stop()
        store = open_store(cluster.url, breaker=CircuitBreaker(timeout_s=2.0, reset_timeout_s=0.2))
        await store.start()
        try:
            addr = new_addr()
            with pytest.raises(StoreUnavailable):
                await store.append(addr, [msg(0)])
            for node in cluster.nodes:
                node.start()
            deadline = time.monotonic() + 60
            while True:
                try:
                    await store.append(addr, [msg(1)], idempotency_key="k1")
                    break
                except StoreUnavailable:
                    assert time.monotonic() < deadline, "the store never reached the cluster"
                    await asyncio.sleep(0.05)  # a client's retry pacing
            assert [m.content for m in await store.read(addr)] == ["m1"]
        finally:
            await store.close()
