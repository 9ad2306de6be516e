"""No daemon mistakes a wiped and re-created instance for the one it read before.

Several RedisStore objects on one Redis stand for several daemons, each with its own read
cache. An instance can be wiped in four ways (Clear by this daemon or another, TTL expiry,
EndWorkflow) and then created again by an append, restarting at seq 1 — possibly with the
same counters as before. Every read by every daemon must return what Redis holds, and a
flush planned from one incarnation must never remove messages of the next (docs/redis.md,
"Instance identity"; promise 4 of docs/tokens-and-budget.md relies on it).

The model-based test runs a seeded random sequence of operations; ``MEMORYD_MODEL_STEPS``
and ``MEMORYD_MODEL_SEED`` make it a longer soak (docs/redis.md says how).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from memoryd.keys import InstanceAddr
from memoryd.models import FlushPlan, InstanceMeta, StoredMessage, Summary
from memoryd.store.redis.layout import InstanceKeys
from memoryd.store.redis.store import RedisStore
from memoryd.store.url import open_store
from tests.store.conftest import TEST_BREAKER, backend_url, new_addr
from tests.store.test_conformance import msg, pinned, wait_for

BACKENDS = ("standalone", "cluster")
DAEMONS = 3
STEPS = int(os.environ.get("MEMORYD_MODEL_STEPS", "300"))
SEED = int(os.environ.get("MEMORYD_MODEL_SEED", "20261207"))


@pytest.fixture(params=BACKENDS)
async def daemons(request: pytest.FixtureRequest) -> AsyncIterator[list[RedisStore]]:
    url = backend_url(request, request.param)
    stores = []
    for _ in range(DAEMONS):
        s = open_store(url, breaker=TEST_BREAKER)
        assert isinstance(s, RedisStore)
        await s.start()
        stores.append(s)
    try:
        yield stores
    finally:
        for s in stores:
            await s.close()


async def expire_now(store: RedisStore, addr: InstanceAddr) -> None:
    """What TTL expiry does, without waiting a TTL: every data key expires in 1 ms."""
    keys = InstanceKeys.of(addr)
    for key in keys.data:
        await store.client.pexpire(key, 1)
    # every key, not only meta: each got its own 1 ms, set a moment after the one before
    await wait_for(lambda: store.client.exists(*keys.data), lambda n: n == 0, "instance expired", timeout_s=5)
    assert await store.meta(addr) == InstanceMeta()


async def flush_oldest(store: RedisStore, addr: InstanceAddr, n: int) -> tuple[list[StoredMessage], int]:
    """A flush as a daemon makes one: lock, read the state, fold its ``n`` oldest unpinned
    messages into a summary of their text, apply under the fence and the read's epoch."""
    async with store.lock(addr, ttl_ms=10_000, acquire_timeout_s=5) as lease:
        state = await store.state(addr)
        folded = [m for m in state.messages if not m.pinned][:n]
        summary = Summary("S:" + "|".join(m.content for m in folded), 5,
                          max((m.seq for m in folded), default=0), 0)
        plan = FlushPlan("hybrid_summary", tuple(m.seq for m in folded), summary, 0, 0, epoch=state.meta.epoch)
        outcome = await store.apply_flush(addr, plan, fence=lease.fence)
    return folded, len(outcome.removed_seqs)


# -- the defect as reported, for each way an instance is wiped -----------------------------------------------


@pytest.mark.parametrize("wipe", ["clear_self", "clear_other", "expire", "end_workflow"])
async def test_wiped_content_never_comes_back(daemons: list[RedisStore], wipe: str) -> None:
    a, b = daemons[0], daemons[1]
    addr, wf = new_addr(), f"wf-{uuid.uuid4().hex}"
    await a.append(addr, [msg("OLD a"), msg("OLD b")], workflow_id=wf)
    assert [m.content for m in await a.read(addr)] == ["OLD a", "OLD b"]
    assert [m.content for m in (await a.state(addr)).messages] == ["OLD a", "OLD b"]  # cached by A now
    if wipe == "clear_self":
        await a.clear(addr)
    elif wipe == "clear_other":
        await b.clear(addr)
    elif wipe == "expire":
        await expire_now(b, addr)
    else:
        assert await b.end_workflow(addr.project, wf) == 1
    await b.append(addr, [msg("NEW a"), msg("NEW b")])  # same token counts as the OLD ones
    await a.append(addr, [msg("NEW c")])
    new = ["NEW a", "NEW b", "NEW c"]
    assert [m.content for m in await a.read(addr)] == new
    assert [m.content for m in await a.read(addr, after_seq=1, limit=1)] == ["NEW b"]
    assert [m.content for m in (await a.state(addr)).messages] == new
    tail = await a.tail_state(addr, min_tokens=10**9, min_messages=-1)  # a context read's input, cached
    assert tail is not None and [m.content for m in tail.as_state().messages] == new
    folded, removed = await flush_oldest(a, addr, 2)
    assert [m.content for m in folded] == ["NEW a", "NEW b"] and removed == 2
    state = await b.state(addr)
    assert [m.content for m in state.messages] == ["NEW c"]
    assert state.summary is not None and "OLD" not in state.summary.content


async def test_a_plan_from_a_wiped_incarnation_removes_nothing(daemons: list[RedisStore]) -> None:
    """The epoch check of apply-flush, apart from the cache: the plan was read before the wipe."""
    a, b = daemons[0], daemons[1]
    addr = new_addr()
    await a.append(addr, [msg("OLD a"), msg("OLD b")])
    old = await b.state(addr)
    await a.clear(addr)
    await a.append(addr, [msg("NEW a"), msg("NEW b")])
    async with b.lock(addr, ttl_ms=10_000, acquire_timeout_s=5) as lease:
        stale = FlushPlan("hybrid_summary", (1, 2), Summary("S:OLD", 3, 2, 0), 0, 0, epoch=old.meta.epoch)
        with pytest.raises(Exception, match="created again"):
            await b.apply_flush(addr, stale, fence=lease.fence)
    state = await a.state(addr)
    assert [m.content for m in state.messages] == ["NEW a", "NEW b"] and state.summary is None


async def test_epoch_changes_with_every_incarnation_only(daemons: list[RedisStore]) -> None:
    a, b = daemons[0], daemons[1]
    addr = new_addr()
    assert (await a.meta(addr)).epoch == ""
    first = (await a.append(addr, [msg("x")])).meta.epoch
    assert first and (await b.append(addr, [msg("y")])).meta.epoch == first
    await flush_oldest(b, addr, 1)
    assert (await a.meta(addr)).epoch == first  # a flush is not a new incarnation
    await b.clear(addr)
    assert (await a.meta(addr)).epoch == ""
    second = (await a.append(addr, [msg("z")])).meta.epoch
    assert second and second != first


# -- model-based: random operations by several daemons, every read against the model --------------------------


@dataclass
class Incarnation:
    """What Redis must hold for one instance: seq -> content, and the summary's text."""

    messages: dict[int, str] = field(default_factory=dict)
    pinned: set[int] = field(default_factory=set)
    last_seq: int = 0
    summary: str | None = None
    flushes: int = 0


async def test_random_operations_by_several_daemons_match_the_model(daemons: list[RedisStore]) -> None:
    rng = random.Random(SEED)
    addrs = [new_addr(), new_addr()]
    workflows = {addr: f"wf-{uuid.uuid4().hex}" for addr in addrs}
    model = {addr: Incarnation() for addr in addrs}
    texts = itertools.count()
    ops = ["append"] * 6 + ["raw"] * 3 + ["state"] * 3 + ["tail"] * 2 + ["flush", "clear", "expire", "end_workflow"]
    for step in range(STEPS):
        d = rng.choice(daemons)
        addr = rng.choice(addrs)
        m = model[addr]
        op = rng.choice(ops)
        where = f"step {step} ({op} by daemon {daemons.index(d)}, seed {SEED})"
        if op == "append":
            batch = [pinned(f"p{next(texts)}", tokens=3) if rng.random() < 0.1 else msg(f"m{next(texts)}", tokens=10)
                     for _ in range(rng.randint(1, 3))]
            out = await d.append(addr, batch, workflow_id=workflows[addr])
            assert [r.seq for r in out.refs] == list(range(m.last_seq + 1, m.last_seq + 1 + len(batch))), where
            for ref, new in zip(out.refs, batch, strict=True):
                m.messages[ref.seq] = new.content
                if new.pinned:
                    m.pinned.add(ref.seq)
            m.last_seq += len(batch)
        elif op == "raw":
            after, limit = rng.randint(0, m.last_seq + 1), rng.choice([0, 1, 2, 5])
            expect = [(s, c) for s, c in sorted(m.messages.items()) if s > after]
            got = [(x.seq, x.content) for x in await d.read(addr, after_seq=after, limit=limit)]
            assert got == (expect[:limit] if limit else expect), where
        elif op == "state":
            state = await d.state(addr)
            assert [(x.seq, x.content) for x in state.messages] == sorted(m.messages.items()), where
            assert (state.summary.content if state.summary else None) == m.summary, where
            assert state.meta.last_seq == m.last_seq and state.meta.flush_count == m.flushes, where
            assert state.meta.message_count == len(m.messages), where
        elif op == "tail":  # a context read's input: from the cache (small, cached) or the tail script
            tail = await d.tail_state(addr, min_tokens=10**9, min_messages=-1)
            assert tail is not None and tail.complete, where
            assert [(x.seq, x.content) for x in tail.as_state().messages] == sorted(m.messages.items()), where
            assert tail.meta.last_seq == m.last_seq and tail.meta.message_count == len(m.messages), where
        elif op == "flush":
            folded, removed = await flush_oldest(d, addr, rng.randint(1, 3))
            expect = [c for s, c in sorted(m.messages.items()) if s not in m.pinned][: len(folded)]
            assert [x.content for x in folded] == expect and removed == len(folded), where
            if m.last_seq:  # a flush of an instance that does not exist changes nothing
                for x in folded:
                    del m.messages[x.seq]
                m.summary = "S:" + "|".join(expect)
                m.flushes += 1
        elif op == "clear":
            assert await d.clear(addr) == len(m.messages), where
            model[addr] = Incarnation()
        elif op == "expire":
            await expire_now(d, addr)
            model[addr] = Incarnation()
        else:
            await d.end_workflow(addr.project, workflows[addr])
            for other in addrs:
                if workflows[other] == workflows[addr]:
                    model[other] = Incarnation()


# -- a race: appends, clears and cached reads by three daemons at once -------------------------------------------


async def test_clear_append_race_leaves_every_daemon_agreeing(daemons: list[RedisStore]) -> None:
    """Whatever the interleaving: no read returns a message acknowledged before a Clear that
    ended before the read began; after the race every daemon reads what Redis holds, no message
    acknowledged before the last Clear began is there, and every one acknowledged after it ended is."""
    addr = new_addr()
    clock = itertools.count()  # orders the events of the race (one event loop)
    acked: list[tuple[str, int]] = []  # (content, when the append was acknowledged)
    acked_at: dict[str, int] = {}
    clears: list[tuple[int, int]] = []  # (began, ended)
    wiped_before = -1  # a message acknowledged before this moment was cleared by a finished Clear
    stop = asyncio.Event()
    resurrected: list[str] = []

    async def appender(d: RedisStore, name: str) -> None:
        for i in range(60):
            content = f"{name}-{i}"
            await d.append(addr, [msg(content)])
            acked.append((content, when := next(clock)))
            acked_at[content] = when

    async def clearer(d: RedisStore) -> None:
        nonlocal wiped_before
        while not stop.is_set():
            began = next(clock)
            await d.clear(addr)
            clears.append((began, next(clock)))
            wiped_before = max(wiped_before, began)
            await asyncio.sleep(0)

    def check(floor: int, seen: list[StoredMessage]) -> None:
        resurrected.extend(x.content for x in seen if acked_at.get(x.content, floor) < floor)

    async def reader(d: RedisStore) -> None:
        while not stop.is_set():
            floor = wiped_before
            check(floor, list((await d.state(addr)).messages))
            floor = wiped_before
            check(floor, await d.read(addr))

    background = [asyncio.create_task(clearer(daemons[2])), asyncio.create_task(reader(daemons[0])),
                  asyncio.create_task(reader(daemons[1]))]
    deadline = time.monotonic() + 60
    await asyncio.gather(*(appender(daemons[i % DAEMONS], f"w{i}") for i in range(6)))
    stop.set()
    await asyncio.gather(*background)
    assert time.monotonic() < deadline and clears
    assert not resurrected, f"reads returned cleared messages: {resurrected[:5]}"

    truth = RedisStore(daemons[0].settings, breaker=TEST_BREAKER)  # nothing cached: what Redis holds
    await truth.start()
    try:
        held = [x.content for x in (await truth.state(addr)).messages]
    finally:
        await truth.close()
    for d in daemons:
        assert [x.content for x in (await d.state(addr)).messages] == held
        assert [x.content for x in await d.read(addr)] == held
    last_began, last_ended = clears[-1]
    assert not {c for c, when in acked if when < last_began} & set(held), "cleared messages came back"
    assert {c for c, when in acked if when > last_ended} <= set(held), "acknowledged messages were lost"
    assert len(held) == len(set(held))
