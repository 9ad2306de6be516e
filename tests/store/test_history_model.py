"""A model-based test of history on every backend: random appends, folds (fifo and hybrid,
planned seqs present or not), deletes (with and without if_last_seq) and clears, under a
random history policy; after every step the live messages (RAW), the HISTORY view and the
counters equal a plain reference model, and the counters equal those recomputed from content."""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memoryd.errors import LastSeqChanged
from memoryd.models import FlushPlan, HistoryPolicy, NewMessage, Summary
from memoryd.store.base import MemoryStore
from tests.store.conftest import new_addr

message_st = st.builds(
    lambda p, tok, i: NewMessage(role="system" if p else "user", content=f"c{i}", content_type="text",
                                 priority=0 if p else None, effective_priority=0 if p else 1 + i % 9,
                                 token_count=tok),
    st.booleans(), st.integers(1, 40), st.integers(0, 10_000),
)
append_st = st.tuples(st.just("append"), st.lists(message_st, min_size=1, max_size=3))
# Seqs are drawn as picks among 1 .. last_seq + 2 (``pick``): mostly stored ones, some not.
picks_st = st.lists(st.integers(0, 10_000), max_size=6, unique=True)
flush_st = st.tuples(st.just("flush"), st.sampled_from(["fifo", "hybrid_summary"]), picks_st, st.booleans())
delete_st = st.tuples(st.just("delete"), st.lists(st.integers(0, 10_000), min_size=1, max_size=4),
                      st.sampled_from([None, None, "last", "stale"]))
clear_st = st.tuples(st.just("clear"))
ops_st = st.lists(st.one_of(append_st, append_st, flush_st, flush_st, delete_st, delete_st, clear_st),
                  min_size=1, max_size=20)
policy_st = st.sampled_from([HistoryPolicy(), HistoryPolicy(max_messages=2), HistoryPolicy(max_messages=2),
                            HistoryPolicy(keep=False)])


def pick(picks: list[int], last_seq: int) -> list[int]:
    return list(dict.fromkeys(1 + p % (last_seq + 2) for p in picks))


@dataclass
class Model:
    live: dict[int, NewMessage] = field(default_factory=dict)
    history: dict[int, NewMessage] = field(default_factory=dict)
    last_seq: int = 0
    flushes: int = 0
    evicted: int = 0
    history_dropped: int = 0
    summary_tokens: int = 0
    summary_through_seq: int = 0

    def fold(self, strategy: str, seqs: list[int], summary: Summary | None, policy: HistoryPolicy) -> tuple[int, ...]:
        removed = tuple(s for s in seqs if s in self.live)
        if not self.last_seq:
            return ()  # the instance does not exist: nothing happens
        self.flushes += 1
        for s in removed:
            m = self.live.pop(s)
            if policy.keep:
                self.history[s] = m
        if strategy == "fifo":
            self.evicted += len(removed)
        if policy.keep and removed and policy.max_messages and len(self.history) > policy.max_messages:
            drop = sorted(self.history)[: len(self.history) - policy.max_messages]
            for s in drop:
                del self.history[s]
            self.history_dropped += len(drop)
        if summary is not None:
            self.summary_tokens, self.summary_through_seq = summary.token_count, summary.through_seq
        return removed


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=ops_st, policy=policy_st)
async def test_history_and_deletes_match_the_model(store: MemoryStore, ops: list[tuple], policy: HistoryPolicy) -> None:  # type: ignore[type-arg]
    addr, model = new_addr(), Model()
    for op in ops:
        if op[0] == "append":
            out = await store.append(addr, op[1])
            for m, ref in zip(op[1], out.refs, strict=True):
                model.last_seq += 1
                assert ref.seq == model.last_seq
                model.live[ref.seq] = m
        elif op[0] == "flush":
            _, strategy, picks, summarize = op
            seqs = pick(picks, model.last_seq)
            summary = Summary("s", 1 + len(seqs), max(seqs, default=0), 0) if summarize else None
            async with store.lock(addr, ttl_ms=10_000, acquire_timeout_s=5) as lease:
                out_f = await store.apply_flush(addr, FlushPlan(strategy, tuple(seqs), summary, 0, 0),
                                                fence=lease.fence, history=policy)
            assert out_f.removed_seqs == model.fold(strategy, seqs, summary, policy)
        elif op[0] == "delete":
            _, picks, guard = op
            seqs = pick(picks, model.last_seq)
            if_last_seq = {None: None, "last": model.last_seq, "stale": model.last_seq + 1}[guard]
            if guard == "stale":
                try:
                    await store.delete_messages(addr, seqs, if_last_seq=if_last_seq)
                    raise AssertionError("a stale if_last_seq deleted")
                except LastSeqChanged:
                    pass
            else:
                out_d = await store.delete_messages(addr, seqs, if_last_seq=if_last_seq)
                expected = sorted({s for s in seqs if s in model.live or s in model.history})
                assert list(out_d.deleted_seqs) == expected
                for s in expected:
                    model.live.pop(s, None)
                    model.history.pop(s, None)
        else:
            assert await store.clear(addr) == len(model.live)
            model = Model()

        live = await store.read(addr)
        assert [(m.seq, m.content, m.folded) for m in live] == [(s, model.live[s].content, False)
                                                               for s in sorted(model.live)]
        history = await store.read_history(addr)
        kept = {**{s: (m, False) for s, m in model.live.items()}, **{s: (m, True) for s, m in model.history.items()}}
        assert [(m.seq, m.content, m.folded) for m in history] == [(s, kept[s][0].content, kept[s][1])
                                                                  for s in sorted(kept)]
        paged, cursor = [], 0
        while page := await store.read_history(addr, after_seq=cursor, limit=2):
            paged.extend(page)
            cursor = page[-1].seq
        assert paged == history
        state = await store.state(addr)
        meta = state.meta
        # counters recomputed from content ...
        assert meta.message_count == len(live) == len(state.messages)
        assert meta.pinned_tokens == sum(m.token_count for m in live if m.pinned)
        assert meta.recent_tokens == sum(m.token_count for m in live if not m.pinned)
        assert meta.history_messages == sum(1 for m in history if m.folded)
        assert meta.summary_tokens == (state.summary.token_count if state.summary else 0)
        assert meta.summary_through_seq == (state.summary.through_seq if state.summary else 0)
        # ... and equal to the model's
        assert (meta.last_seq, meta.flush_count, meta.evicted, meta.history_dropped, meta.summary_tokens,
                meta.summary_through_seq) == (model.last_seq, model.flushes, model.evicted, model.history_dropped,
                                              model.summary_tokens, model.summary_through_seq)
        assert meta == await store.meta(addr)
