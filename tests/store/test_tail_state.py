"""``tail_state`` on every backend: what a context view needs, read from the newest end.

After random appends (pinned and several priorities), flushes (pinned seqs included, with and
without a summary) and clears, ``tail_state`` must agree with ``state()``: the same counters
and summary, every pinned message, the exact suffix of the non-pinned messages that the
stopping rule asks for (no shorter, no longer), and the per-priority counts.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memoryd.keys import InstanceAddr
from memoryd.models import PINNED_PRIORITY, FlushPlan, InstanceState, NewMessage, StoredMessage, Summary, TailState
from memoryd.store.base import MemoryStore
from tests.store.conftest import backend_url, cold, make_store, new_addr

message_st = st.builds(
    lambda prio, tok, i: NewMessage(role="system" if prio == 0 else "user", content=f"c{i}", content_type="text",
                                    priority=prio, effective_priority=prio, token_count=tok),
    st.sampled_from([0, 1, 2, 2, 2]), st.integers(0, 40), st.integers(0, 10_000),
)
append_st = st.tuples(st.just("append"), st.lists(message_st, min_size=1, max_size=6))
flush_st = st.tuples(st.just("flush"), st.lists(st.integers(1, 40), max_size=8, unique=True),
                     st.one_of(st.none(), st.integers(1, 30)))
clear_st = st.tuples(st.just("clear"))
delete_st = st.tuples(st.just("delete"), st.lists(st.integers(1, 40), min_size=1, max_size=4, unique=True))
ops_st = st.lists(st.one_of(append_st, append_st, append_st, flush_st, delete_st, clear_st), min_size=1, max_size=12)
asks_st = st.lists(st.tuples(st.integers(0, 200), st.integers(-1, 12)), min_size=1, max_size=4)


def expected_suffix(recent: list[StoredMessage], min_tokens: int, min_messages: int) -> list[StoredMessage]:
    """The stopping rule, stated plainly: from the newest back, stop once the messages older
    than the newest hold more than ``min_tokens`` tokens or there are more than ``min_messages``."""
    out: list[StoredMessage] = []
    for m in reversed(recent):
        out.append(m)
        if sum(x.token_count for x in out[1:]) > min_tokens or 0 <= min_messages < len(out):
            break
    return out[::-1]


def check_tail(tail: TailState, state: InstanceState, min_tokens: int, min_messages: int) -> None:
    pinned = [m for m in state.messages if m.effective_priority == PINNED_PRIORITY]
    recent = [m for m in state.messages if m.effective_priority != PINNED_PRIORITY]
    assert tail.meta == state.meta
    assert tail.summary == state.summary
    assert list(tail.pinned) == pinned
    assert list(tail.recent) == expected_suffix(recent, min_tokens, min_messages)
    counts: dict[int, int] = {}
    for m in recent:
        counts[m.effective_priority] = counts.get(m.effective_priority, 0) + 1
    assert dict(tail.priorities) == counts
    assert tail.recent_total == len(recent)
    assert tail.complete == (len(tail.recent) == len(recent))
    assert tail.as_state().messages == tuple(sorted((*pinned, *tail.recent), key=lambda m: m.seq))


async def run_ops(store: MemoryStore, addr: InstanceAddr, ops: list[Any]) -> None:
    for op in ops:
        if op[0] == "append":
            await store.append(addr, op[1])
        elif op[0] == "flush":
            summary = None if op[2] is None else Summary(f"s{op[2]}", op[2], 0, 0)
            async with store.lock(addr, ttl_ms=10_000, acquire_timeout_s=5) as lease:
                await store.apply_flush(addr, FlushPlan("hybrid_summary", tuple(op[1]), summary, 0, 0),
                                        fence=lease.fence)
        elif op[0] == "delete":  # DeleteMessages keeps the read index in step too
            await store.delete_messages(addr, op[1])
        else:
            await store.clear(addr)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=ops_st, asks=asks_st)
async def test_tail_state_agrees_with_state(store: MemoryStore, ops: list[Any], asks: list[tuple[int, int]]) -> None:
    addr = new_addr()
    await run_ops(store, addr, ops)
    state = await store.state(addr)
    for min_tokens, min_messages in asks:
        cold(store, addr)  # the script's rule, not the cache's whole copy
        tail = await store.tail_state(addr, min_tokens=min_tokens, min_messages=min_messages)
        assert tail is not None
        check_tail(tail, state, min_tokens, min_messages)


async def test_missing_instance_is_empty_and_complete(store: MemoryStore) -> None:
    tail = await store.tail_state(new_addr(), min_tokens=100, min_messages=-1)
    assert tail is not None and tail.complete and not tail.pinned and not tail.recent and tail.meta.epoch == ""


async def test_a_long_instance_is_read_from_its_end(store: MemoryStore) -> None:
    """2,000 messages with a system prompt first: the tail holds the prompt and a few dozen."""
    addr = new_addr()
    await store.append(addr, [NewMessage("system", "prompt", "text", None, 0, 7)])
    batch = [NewMessage("user", f"m{i}", "text", None, 5, 10) for i in range(200)]
    for _ in range(10):
        await store.append(addr, batch)
    cold(store, addr)  # the script's rule, not the cache's whole copy
    tail = await store.tail_state(addr, min_tokens=300, min_messages=-1)
    assert tail is not None and not tail.complete
    assert [m.content for m in tail.pinned] == ["prompt"]
    assert len(tail.recent) == 32 and tail.recent[-1].seq == 2001 and tail.recent_total == 2000
    assert dict(tail.priorities) == {5: 2000}


async def test_instances_without_the_read_index_are_read_whole(request: pytest.FixtureRequest) -> None:
    """An instance created by a daemon that predates the index has no ``pins`` field; one that
    such a daemon also appended to has counts that do not add up. Both: None (read whole)."""
    import redis

    from memoryd.store.redis.layout import InstanceKeys

    store = await make_store(request, "standalone")
    client = redis.Redis.from_url(backend_url(request, "standalone"))
    try:
        addr = new_addr()
        await store.append(addr, [NewMessage("user", "a", "text", None, 5, 3)] * 3)
        meta_key = InstanceKeys.of(addr).meta
        cold(store, addr)  # the script's rule, not the cache's whole copy
        assert await store.tail_state(addr, min_tokens=1, min_messages=-1) is not None
        client.hincrby(meta_key, "message_count", 1)  # an older daemon's append: no count per priority
        cold(store, addr)  # the script's rule, not the cache's whole copy
        assert await store.tail_state(addr, min_tokens=1, min_messages=-1) is None
        client.hincrby(meta_key, "message_count", -1)
        client.hdel(meta_key, "pins")  # created by an older daemon
        cold(store, addr)  # the script's rule, not the cache's whole copy
        assert await store.tail_state(addr, min_tokens=1, min_messages=-1) is None
        await store.append(addr, [NewMessage("user", "b", "text", None, 5, 3)])  # stays unindexed
        cold(store, addr)  # the script's rule, not the cache's whole copy
        assert await store.tail_state(addr, min_tokens=1, min_messages=-1) is None
    finally:
        client.close()
        await store.close()


async def test_small_newest_messages_behind_large_ones_take_several_pages(store: MemoryStore) -> None:
    """The first page is sized by the mean message; when the newest are much smaller than
    the mean, the read goes on page after page until they hold enough."""
    addr = new_addr()
    await store.append(addr, [NewMessage("user", "big", "text", None, 5, 100) for _ in range(500)])
    await store.append(addr, [NewMessage("user", "small", "text", None, 5, 1) for _ in range(300)])
    state = await store.state(addr)
    for min_tokens in (150, 299, 400):
        cold(store, addr)  # the script's rule, not the cache's whole copy
        tail = await store.tail_state(addr, min_tokens=min_tokens, min_messages=-1)
        assert tail is not None
        check_tail(tail, state, min_tokens, -1)
