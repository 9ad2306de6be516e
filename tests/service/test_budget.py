"""The token engine through the API: budgets hold in every read, summaries form, pins survive."""

from __future__ import annotations

import pytest
from memoryd_client import AsyncMemoryClient, ResourceExhaustedError, pb

from memoryd.config.model import MemoryResource, PriorityBlock, Project
from tests.support import running_server

BUDGET = 600


def project(**overrides: object) -> Project:
    fields: dict[str, object] = {"id": "chat", "max_tokens": BUDGET, "model": "gpt-4o", **overrides}
    res = MemoryResource(**fields)  # type: ignore[arg-type]
    return Project(id="p", resources={res.id: res}, agents={})


async def context(c: AsyncMemoryClient, key: str, **kw: object) -> list[pb.Message]:
    return await c.read_all("chat", key=key, **kw)


async def test_long_conversation_stays_within_budget_and_summary_grows() -> None:
    async with running_server(project()) as srv, srv.client() as c:
        await c.append("chat", [{"role": "system", "content": "You are a careful support agent."}], key="k")
        summaries: list[pb.Message] = []
        for turn in range(60):
            await c.append("chat", [
                {"role": "user", "content": f"turn {turn}: my order {turn * 7} has not arrived yet, please check"},
                {"role": "assistant", "content": f"turn {turn}: I checked order {turn * 7}; it ships tomorrow."},
            ], key="k")
            view = await context(c, "k")
            assert sum(m.token_count for m in view) <= BUDGET
            assert view[0].role == pb.ROLE_SYSTEM and view[0].content.startswith("You are a careful")
            if turn % 15 == 14:
                await c.flush("chat", key="k")
                view = await context(c, "k")
                summary = [m for m in view if m.kind == pb.MESSAGE_KIND_SUMMARY]
                assert len(summary) == 1 and summary[0].role == pb.ROLE_SYSTEM
                summaries.append(summary[0])
        stats = await c.stats("chat", key="k")
    assert stats.flush_count >= 4 and stats.encoding == "o200k_base" and stats.budget_tokens == BUDGET
    seqs = [s.seq for s in summaries]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)  # the summary covers ever more turns
    assert all(s.token_count <= 500 for s in summaries)


async def test_pinned_system_prompt_survives_10000_appends() -> None:
    async with running_server(project(max_tokens=2000)) as srv, srv.client() as c:
        await c.append("chat", [{"role": "system", "content": "PINNED: never forget me"}], key="pin")
        for start in range(0, 10_000, 500):
            await c.append("chat", [{"role": "user", "content": f"message {i}"} for i in range(start, start + 500)],
                           key="pin")
        await c.flush("chat", key="pin")
        view = await context(c, "pin")
        raw = await c.read_all("chat", key="pin", view="raw")
    assert view[0].content == "PINNED: never forget me"
    assert raw[0].content == "PINNED: never forget me" and raw[0].effective_priority == 0
    assert sum(m.token_count for m in view) <= 2000
    assert view[-1].content == "message 9999"


async def test_dry_run_flush_changes_nothing() -> None:
    async with running_server(project()) as srv, srv.client() as c:
        await c.append("chat", [{"role": "user", "content": f"hello number {i}"} for i in range(5)], key="dry")
        before = await c.read_all("chat", key="dry", view="raw")
        stats_before = await c.stats("chat", key="dry")
        plan = await c.flush("chat", key="dry", dry_run=True)
        after = await c.read_all("chat", key="dry", view="raw")
        stats_after = await c.stats("chat", key="dry")
    assert not plan.applied and len(plan.removed_seqs) >= 1
    assert [m.id for m in after] == [m.id for m in before]
    assert stats_after == stats_before


async def test_max_tokens_below_budget_is_honoured() -> None:
    async with running_server(project()) as srv, srv.client() as c:
        await c.append("chat", [{"role": "user", "content": f"short note {i}"} for i in range(20)], key="mt")
        view = await context(c, "mt", max_tokens=50)
    assert 0 < sum(m.token_count for m in view) <= 50
    assert view[-1].content == "short note 19"


async def test_pinned_overflow_is_resource_exhausted_and_stores_nothing() -> None:
    blocks = (PriorityBlock(priority=0, content_types=("policy",), max_tokens=40),)
    async with running_server(project(priority_blocks=blocks)) as srv, srv.client() as c:
        await c.append("chat", [{"role": "system", "content": "short rules"}], key="full")
        with pytest.raises(ResourceExhaustedError, match="pinned"):
            await c.append("chat", [{"role": "user", "content": "ok"},
                                    {"role": "system", "content": "a much longer policy text " * 10}], key="full")
        raw = await c.read_all("chat", key="full", view="raw")
    assert [m.content for m in raw] == ["short rules"]


async def test_append_totals_match_content() -> None:
    async with running_server(project()) as srv, srv.client() as c:
        resp = await c.append("chat", [{"role": "user", "content": "count me"},
                                       {"role": "assistant", "content": "counted"}], key="t")
        raw = await c.read_all("chat", key="t", view="raw")
    assert resp.stats.token_count == sum(m.token_count for m in raw) == sum(r.token_count for r in resp.results)
    assert all(m.token_count > 0 for m in raw)


async def test_unknown_model_falls_back_and_health_says_so() -> None:
    async with running_server(project(model="acme-llm-9000")) as srv, srv.client() as c:
        await c.append("chat", [{"role": "user", "content": "hello"}], key="fb")
        health = await c.health("chat", key="fb")
        daemon = await c.health()
        stats = await c.stats("chat", key="fb")
    assert health.encoding == "o200k_base" and health.encoding_fallback
    assert daemon.encoding_fallback and any("acme-llm-9000" in n for n in daemon.notes)
    assert stats.encoding == "o200k_base" and stats.token_count > 0
    assert health.instance.stats.message_count == 1 and 0 < health.instance.token_usage_ratio < 1


async def test_gpt4_counts_with_cl100k() -> None:
    async with running_server(project(model="gpt-4-0613")) as srv, srv.client() as c:
        resp = await c.append("chat", [{"role": "user", "content": "héllo wörld"}], key="enc")
        health = await c.health("chat", key="enc")
    assert resp.stats.encoding == "cl100k_base" and not health.encoding_fallback
