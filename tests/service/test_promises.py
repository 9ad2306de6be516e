"""The context promises (docs/tokens-and-budget.md) through the API, on the embedded store
and on a real Redis: random conversations with fixed seeds, RAW, CONTEXT and GetStats read
after every append and the flush it scheduled."""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from memoryd_client import AsyncMemoryClient, InvalidArgumentError, ResourceExhaustedError, pb

from memoryd.config.model import FlushingStrategy, MemoryResource, PriorityBlock, Project, TokenAllocation
from memoryd.engine import compute_budget
from memoryd.store.url import open_store
from memoryd.tokens import counter_for_model
from tests.promises import is_cut_of, named, through_seq, unaccounted
from tests.support import RunningServer, running_server

COUNTER = counter_for_model("gpt-4o")
WORDS = ("order", "A-4821", "bob@example.com", "12 Baker Street", "$19.99", "2026-03-01", "Alice Moreau",
         "why?", "ok", "the", "parcel", "你好", "🙂", "refund", "INV-77", "\n", "lorem")
CONFIGS: dict[str, dict[str, object]] = {
    "hybrid": {"max_tokens": 1200, "flushing_strategy": FlushingStrategy(summary_tokens=200)},
    "hybrid-limits": {
        "max_tokens": 1500, "message_limit": 4,
        "priority_blocks": (PriorityBlock(7, ("tool_result",), 150), PriorityBlock(0, ("policy",), 300)),
        "flushing_strategy": FlushingStrategy(summary_tokens=120, summarize_oldest_percent=60),
    },
    "hybrid-allocation": {"max_tokens": 1000, "token_allocation": TokenAllocation(0.2, 0.5, 0.3)},
    "fifo": {"max_tokens": 800, "flushing_strategy": FlushingStrategy(type="fifo", summarize_threshold=0.6)},
    "reject": {"max_tokens": 1000, "oversize": "reject", "flushing_strategy": FlushingStrategy(summary_tokens=300)},
}


@asynccontextmanager
async def serving(request: pytest.FixtureRequest, backend: str, res: MemoryResource) -> AsyncIterator[RunningServer]:
    store = open_store(request.getfixturevalue("redis_standalone").url) if backend == "redis" else None
    project = Project(id=f"p{uuid.uuid4().hex[:10]}", resources={res.id: res}, agents={})
    async with running_server(project, store=store) as srv:
        yield srv


async def settle(srv: RunningServer) -> None:
    """Wait for the flushes the appends scheduled (the manager's own tasks: no sleep)."""
    await srv.server.manager.flushes_idle()


def message(rng: random.Random, budget: int) -> dict[str, object]:
    # "tool": a tool result's content type on a user message (a role-tool message needs its
    # call: tool-call groups have their own property tests)
    role = rng.choice(["user", "user", "assistant", "tool", "system"])
    kind = rng.choice(["small", "small", "small", "medium", "huge"])
    words = {"small": rng.randint(1, 12), "medium": rng.randint(40, budget // 3), "huge": budget + 40}[kind]
    content = " ".join(rng.choice(WORDS) for _ in range(words))
    out: dict[str, object] = {"role": "user" if role == "tool" else role, "content": content}
    if role == "tool":
        out["content_type"] = "tool_result"
    elif rng.random() < 0.05:
        out["content_type"] = "policy"
    return out


class Checker:
    """What a user was told (acknowledged seqs and contents) against what they read."""

    def __init__(self, c: AsyncMemoryClient, res: MemoryResource) -> None:
        self.c, self.res = c, res
        self.budget = compute_budget(res, None)
        self.acked: dict[int, str] = {}
        self.pinned: list[int] = []

    async def append(self, batch: list[dict[str, object]]) -> None:
        try:
            resp = await self.c.append(self.res.id, batch, key="k")
        except ResourceExhaustedError:
            return  # refused whole (pinned room, oversize: reject): nothing acknowledged
        for r, m in zip(resp.results, batch, strict=True):
            self.acked[r.seq] = str(m["content"])
            if r.effective_priority == 0:
                self.pinned.append(r.seq)

    async def check(self, max_tokens: int) -> None:
        raw = await self.c.read_all(self.res.id, key="k", view="raw")
        view = await self.c.read_all(self.res.id, key="k")
        stats = await self.c.stats(self.res.id, key="k")
        stored = {m.seq: m for m in raw}
        summaries = [m for m in view if m.kind == pb.MESSAGE_KIND_SUMMARY]
        summary = summaries[0].content if summaries else ""
        assert sum(m.token_count for m in view) <= self.budget.total  # 1
        assert [m.seq for m in view if m.effective_priority == 0 and m.kind != pb.MESSAGE_KIND_SUMMARY] \
            == self.pinned == [s for s in self.pinned if s in stored]  # 2
        assert all(m.content == self.acked[m.seq] for m in raw)  # 5: RAW byte-exact
        assert stats.message_count == len(raw)
        assert stats.token_count == sum(m.token_count for m in raw) + stats.summary_tokens
        if self.res.flushing_strategy.type == "hybrid_summary":  # 4
            assert not unaccounted(set(self.acked), set(stored), summary)
            assert bool(summary) == (stats.summary_tokens > 0)  # 7: the summary's room is reserved
        if summary:  # 6
            assert any(named(summary)) and summaries[0].token_count <= self.budget.summary_cap
        self.ordered(view, raw)
        # History (issue 19): nothing acknowledged is lost -- every acknowledged message is
        # kept, live or folded, exactly once, byte for byte, oldest first (no cap is reached here).
        history = await self.c.read_all(self.res.id, key="k", view="history")
        assert [m.seq for m in history] == sorted(self.acked)
        assert all(m.content == self.acked[m.seq] and m.folded == (m.seq not in stored) for m in history)
        assert stats.history_messages == sum(m.folded for m in history) and stats.history_dropped == 0
        assert stats.summary_through_seq == (through_seq(summary) if summary else 0)
        try:
            small = await self.c.read_all(self.res.id, key="k", max_tokens=max_tokens)
        except InvalidArgumentError:
            return  # pinned + the newest turn's minimal cut do not fit the caller's limit
        assert sum(m.token_count for m in small) <= max_tokens  # 1, with the caller's limit
        self.ordered(small, raw)

    @staticmethod
    def ordered(view: list[pb.Message], raw: list[pb.Message]) -> None:
        kinds = [1 if m.kind == pb.MESSAGE_KIND_SUMMARY else 0 if m.effective_priority == 0 else 2 for m in view]
        assert kinds == sorted(kinds)  # 7
        recent = [m for m, k in zip(view, kinds, strict=True) if k == 2]
        assert [m.seq for m in recent] == sorted(m.seq for m in recent)
        newest = [m for m in raw if m.effective_priority != 0]
        if newest:  # 3
            last = newest[-1]
            assert recent and recent[-1].seq == last.seq and is_cut_of(recent[-1].content, last.content, last.seq)
            # every chat role is one token (docs/tokens-and-budget.md), so "user" prices any role
            assert recent[-1].token_count == COUNTER.count_message("user", recent[-1].content)


@pytest.mark.parametrize("backend", ["embedded", "redis"])
@pytest.mark.parametrize(("config", "seed"), [(name, seed) for name in CONFIGS for seed in (1, 2)])
async def test_random_conversations_keep_the_promises(
    request: pytest.FixtureRequest, backend: str, config: str, seed: int
) -> None:
    rng = random.Random(f"{config}-{seed}")
    res = MemoryResource(id="chat", model="gpt-4o", **CONFIGS[config])  # type: ignore[arg-type]
    async with serving(request, backend, res) as srv, srv.client() as c:
        checker = Checker(c, res)
        for _step in range(30):
            await checker.append([message(rng, checker.budget.total) for _ in range(rng.randint(1, 3))])
            await settle(srv)
            if rng.random() < 0.15:
                await c.flush("chat", key="k")
            await checker.check(max_tokens=rng.randint(1, checker.budget.total))
        assert checker.acked  # the conversation really happened
