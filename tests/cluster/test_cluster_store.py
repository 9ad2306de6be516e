"""Redis Cluster specifics: instances spread over the masters, every script on one slot,
EndWorkflow across slots. (The whole conformance suite also runs on this cluster.)"""

from __future__ import annotations

import pytest
import redis.exceptions as rex
from redis.crc import key_slot

from memoryd.models import NewMessage
from memoryd.store.redis import RedisStore
from memoryd.store.redis import scripts as lua
from memoryd.store.redis.breaker import BreakerSettings
from memoryd.store.redis.layout import InstanceKeys, workflow_index
from memoryd.store.url import open_store
from tests.redis_servers import RedisClusterProcs
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
    store = open_store(redis_cluster.url, breaker=BreakerSettings(timeout_s=2))
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
