"""Counters never drift from content: random operation sequences on every backend,
checked against a plain model and against counters recomputed from the stored messages."""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memoryd.errors import IdempotencyConflict, PinnedTierFull
from memoryd.models import FlushPlan, NewMessage, Summary
from memoryd.store.base import MemoryStore
from tests.store.conftest import new_addr

PINNED_CAP = 120

message_st = st.builds(
    lambda p, tok, i: NewMessage(role="system" if p else "user", content=f"c{i}", content_type="text",
                                 priority=0 if p else None, effective_priority=0 if p else 1 + i % 9,
                                 token_count=tok),
    st.booleans(), st.integers(1, 40), st.integers(0, 10_000),
)
append_st = st.tuples(st.just("append"), st.lists(message_st, min_size=1, max_size=4),
                      st.sampled_from([None, "k1", "k2", "k3"]))
flush_st = st.tuples(st.just("flush"), st.lists(st.integers(1, 40), max_size=8, unique=True),
                     st.one_of(st.none(), st.integers(0, 30)))
clear_st = st.tuples(st.just("clear"))
ops_st = st.lists(st.one_of(append_st, append_st, flush_st, clear_st), min_size=1, max_size=14)


@dataclass
class Model:
    messages: dict[int, NewMessage] = field(default_factory=dict)
    last_seq: int = 0
    summary_tokens: int = 0
    flushes: int = 0
    keys: dict[str, object] = field(default_factory=dict)  # key -> the batch it stored


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=ops_st)
async def test_counters_match_content_after_random_operations(store: MemoryStore, ops: list[tuple]) -> None:  # type: ignore[type-arg]
    addr, model = new_addr(), Model()
    for op in ops:
        if op[0] == "append":
            _, batch, key = op
            adding = sum(m.token_count for m in batch if m.pinned)
            pinned_now = sum(m.token_count for m in model.messages.values() if m.pinned)
            same = [(m.role, m.content, m.content_type, m.priority, sorted(m.metadata.items())) for m in batch]
            try:
                out = await store.append(addr, batch, idempotency_key=key, pinned_cap=PINNED_CAP)
            except PinnedTierFull:
                assert key not in model.keys and adding and pinned_now + adding > PINNED_CAP
                continue
            except IdempotencyConflict:  # the key stored another batch: nothing stored now
                assert key in model.keys and model.keys[key] != same
                continue
            if key in model.keys:
                assert out.replayed and model.keys[key] == same
                continue
            assert not out.replayed and not (adding and pinned_now + adding > PINNED_CAP)
            for m, ref in zip(batch, out.refs, strict=True):
                model.last_seq += 1
                assert ref.seq == model.last_seq
                model.messages[ref.seq] = m
            if key:
                model.keys[key] = same
        elif op[0] == "flush":
            _, remove, summary_tokens = op
            summary = None if summary_tokens is None else Summary("s", summary_tokens, 0, 0)
            async with store.lock(addr, ttl_ms=10_000, acquire_timeout_s=5) as lease:
                plan = FlushPlan("hybrid_summary", tuple(remove), summary, 0, 0)
                out_f = await store.apply_flush(addr, plan, fence=lease.fence)
            exists = model.last_seq > 0
            expected = tuple(s for s in remove if s in model.messages) if exists else ()
            assert out_f.removed_seqs == expected
            for s in expected:
                del model.messages[s]
            if exists:
                model.flushes += 1
                if summary is not None:
                    model.summary_tokens = summary.token_count
        else:
            assert await store.clear(addr) == len(model.messages)
            model = Model()

        state = await store.state(addr)
        stored = state.messages
        assert [m.seq for m in stored] == sorted(model.messages)
        assert [m.content for m in stored] == [model.messages[s].content for s in sorted(model.messages)]
        meta = state.meta
        assert meta.message_count == len(stored)
        assert meta.pinned_tokens == sum(m.token_count for m in stored if m.pinned)
        assert meta.recent_tokens == sum(m.token_count for m in stored if not m.pinned)
        assert meta.summary_tokens == (state.summary.token_count if state.summary else 0) == model.summary_tokens
        assert meta.last_seq == model.last_seq
        assert meta.flush_count == model.flushes
        assert meta == await store.meta(addr)
