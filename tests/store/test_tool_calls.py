"""Issue 18 on every store: the new message fields round-trip byte for byte, and a tool
result is stored only when its call is earlier in the batch or already in the instance,
checked atomically with the append (two appenders cannot both get past it).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memoryd.errors import ToolCallRefused
from memoryd.keys import InstanceAddr
from memoryd.models import ContentPart, FlushPlan, NewMessage, StoredMessage, ToolCall
from memoryd.store.base import MemoryStore
from tests.message_strategies import json_object_text, parts, short_id, text, tool_call
from tests.store.conftest import ALL_BACKENDS, make_store, new_addr


@pytest.fixture(params=ALL_BACKENDS)
async def two(request: pytest.FixtureRequest) -> AsyncIterator[tuple[MemoryStore, MemoryStore]]:
    """A writer and a reader of the same data: on Redis two stores (two daemons), so the
    reader decodes what Redis holds instead of what the writer cached; embedded: one store."""
    writer = await make_store(request, request.param)
    reader = writer if request.param == "embedded" else await make_store(request, request.param)
    try:
        yield writer, reader
    finally:
        await writer.close()
        if reader is not writer:
            await reader.close()


def assistant(*call_ids: str, content: str = "") -> NewMessage:
    return NewMessage(role="assistant", content=content, content_type="text", priority=None, effective_priority=5,
                      token_count=5, tool_calls=tuple(ToolCall(c, "get_order", f'{{"id": "{c}"}}') for c in call_ids))


def result(call_id: str, content: str = "ok") -> NewMessage:
    return NewMessage(role="tool", content=content, content_type="text", priority=None, effective_priority=5,
                      token_count=3, tool_call_id=call_id)


def user(content: str = "hi") -> NewMessage:
    return NewMessage(role="user", content=content, content_type="text", priority=None, effective_priority=5,
                      token_count=2)


def fields(m: NewMessage | StoredMessage) -> tuple[object, ...]:
    return (m.role, m.content, m.tool_calls, m.tool_call_id, m.name, m.parts, m.extra, dict(m.metadata))


async def test_results_answer_calls_of_the_batch_or_the_instance(store: MemoryStore, addr: InstanceAddr) -> None:
    await store.append(addr, [user(), assistant("c1", "c2"), result("c1")])
    await store.append(addr, [result("c2"), user("next")])  # c2 was stored by the first batch
    stored = await store.read(addr)
    assert [(m.role, m.tool_call_id) for m in stored] == [
        ("user", ""), ("assistant", ""), ("tool", "c1"), ("tool", "c2"), ("user", "")]
    assert [c.id for c in stored[1].tool_calls] == ["c1", "c2"]


@pytest.mark.parametrize(("batch", "position", "call"), [
    ([result("nope")], 0, None),  # never made
    ([user(), result("c9"), assistant("c9")], 1, None),  # made later in the batch
    ([user(), assistant("c1")], 1, 0),  # the instance already has c1
    ([assistant("new", "c1")], 0, 1),
])
async def test_a_batch_contradicting_the_instance_stores_nothing(
    store: MemoryStore, addr: InstanceAddr, batch: list[NewMessage], position: int, call: int | None,
) -> None:
    await store.append(addr, [assistant("c1"), result("c1")])
    before = (await store.read(addr), await store.meta(addr))
    with pytest.raises(ToolCallRefused) as err:
        await store.append(addr, batch, idempotency_key="k")
    assert (err.value.position, err.value.call) == (position, call)
    assert (await store.read(addr), await store.meta(addr)) == before
    # nothing of the refused batch was registered either: its calls are still unknown
    with pytest.raises(ToolCallRefused):
        await store.append(addr, [result("new")])


async def test_calls_outlive_a_fold_but_not_the_instance(store: MemoryStore, addr: InstanceAddr) -> None:
    await store.append(addr, [assistant("c1"), user()])
    async with store.lock(addr, ttl_ms=5_000, acquire_timeout_s=5) as lease:
        plan = FlushPlan("hybrid_summary", (1,), None, 0, 0, epoch=(await store.meta(addr)).epoch)
        await store.apply_flush(addr, plan, fence=lease.fence)
    await store.append(addr, [result("c1")])  # its call was folded, not forgotten
    await store.clear(addr)
    with pytest.raises(ToolCallRefused):
        await store.append(addr, [result("c1")])
    await store.append(addr, [assistant("c1")])  # a new incarnation may use the id again


async def test_a_retried_batch_with_calls_replays(store: MemoryStore, addr: InstanceAddr) -> None:
    batch = [assistant("c1"), result("c1")]
    first = await store.append(addr, batch, idempotency_key="k")
    again = await store.append(addr, batch, idempotency_key="k")
    assert again.replayed and again.refs == first.refs


async def test_racing_appenders_never_store_a_result_without_its_call(store: MemoryStore) -> None:
    """A result racing its call is stored only after it; two batches making one id: one wins."""
    for _ in range(10):
        addr = new_addr()
        outcomes = await asyncio.gather(store.append(addr, [result("c1")]), store.append(addr, [assistant("c1")]),
                                        store.append(addr, [assistant("c1")]), return_exceptions=True)
        stored = await store.read(addr)
        makers = [m for m in stored if m.tool_calls]
        assert len(makers) == 1
        answers = [m for m in stored if m.role == "tool"]
        assert all(a.seq > makers[0].seq for a in answers)
        assert (not isinstance(outcomes[0], BaseException)) == bool(answers)
        assert sum(isinstance(o, ToolCallRefused) for o in outcomes) == 3 - len(stored)


message = st.builds(
    lambda role, content, calls, name, parts_, extra, metadata: NewMessage(
        role=role, content="" if parts_ else content, content_type="text", priority=None, effective_priority=5,
        token_count=1, metadata=metadata, tool_calls=calls if role == "assistant" else (), name=name,
        parts=parts_, extra=extra),
    st.sampled_from(["user", "assistant", "system", "developer"]), text,
    st.lists(tool_call, max_size=3, unique_by=lambda c: c.id).map(tuple), st.just("") | text,
    st.just(()) | parts, st.just("") | json_object_text(), st.dictionaries(text, text, max_size=2),
)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=st.lists(message, min_size=1, max_size=4), answer=st.booleans(), suffix=short_id)
async def test_every_field_round_trips_byte_exact(
    two: tuple[MemoryStore, MemoryStore], batch: list[NewMessage], answer: bool, suffix: str,
) -> None:
    writer, reader = two
    addr = new_addr()
    made = [c.id for m in batch for c in m.tool_calls]
    if len(made) != len(set(made)):  # ids are unique per instance (a batch with a repeat is refused)
        batch = [replace(m, tool_calls=tuple(c._replace(id=f"{i}.{j}.{suffix}") for j, c in enumerate(m.tool_calls)))
                 for i, m in enumerate(batch)]
        made = [c.id for m in batch for c in m.tool_calls]
    if answer and made:
        batch.append(replace(result(made[0], "→ résultat"), name="get_order",
                             parts=(ContentPart("text", text="a"),), content=""))
    await writer.append(addr, batch)
    for store in (reader, writer):  # decoded from the store, and as the writer cached it
        for stored in (await store.read(addr), (await store.state(addr)).messages):
            assert [fields(m) for m in stored] == [fields(m) for m in batch]
