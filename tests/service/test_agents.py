"""Agent references through the API: sharing, read-only enforcement, isolation, key safety."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from memoryd_client import (
    Agent,
    AsyncMemoryClient,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    pb,
)

from memoryd.config.loader import load_project
from memoryd.config.model import MemoryReference, MemoryResource
from tests.support import REPO, RunningServer, running_server

SUPPORT = "customer-support-context"
PREFS = "user-preferences"


def ctx(conversation: str = "c-1", user: str = "u-1", **extra: Any) -> dict[str, Any]:
    return {"workflow": {"id": "wf-1", "input": {"conversationId": conversation}}, "user": {"id": user}, **extra}


@pytest.fixture
async def example() -> AsyncIterator[RunningServer]:
    async with running_server(load_project(REPO / "examples" / "project" / "memoryd.yaml")) as srv:
        yield srv


async def texts(c: AsyncMemoryClient, memory: str, agent: Agent) -> list[str]:
    return [m.content for m in await c.read_all(memory, agent=agent, view="raw")]


async def test_two_agents_share_one_memory(example: RunningServer) -> None:
    intake, resolution = Agent("intake-agent", ctx()), Agent("resolution-agent", ctx())
    async with example.client() as c:
        await c.append(SUPPORT, [{"role": "user", "content": "my router is broken"}], agent=intake)
        await c.append(SUPPORT, [{"role": "assistant", "content": "replacing it"}], agent=resolution)
        assert await texts(c, SUPPORT, intake) == ["my router is broken", "replacing it"]
        assert await texts(c, SUPPORT, resolution) == ["my router is broken", "replacing it"]


async def test_read_only_reference_reads_but_never_writes(example: RunningServer) -> None:
    writer, reader = Agent("preferences-agent", ctx()), Agent("intake-agent", ctx())
    async with example.client() as c:
        await c.append(PREFS, [{"role": "user", "content": "prefers email"}], agent=writer)
        assert await texts(c, PREFS, reader) == ["prefers email"]
        with pytest.raises(PermissionDeniedError, match="read-only"):
            await c.append(PREFS, [{"role": "user", "content": "sneaky"}], agent=reader)
        with pytest.raises(PermissionDeniedError):
            await c.flush(PREFS, agent=reader)
        with pytest.raises(PermissionDeniedError):
            await c.clear(PREFS, agent=reader)
        assert await texts(c, PREFS, writer) == ["prefers email"]
        assert (await c.stats(PREFS, agent=reader)).message_count == 1


async def test_conversations_are_isolated(example: RunningServer) -> None:
    a, b = Agent("intake-agent", ctx("conv-a")), Agent("intake-agent", ctx("conv-b"))
    async with example.client() as c:
        await c.append(SUPPORT, [{"role": "user", "content": "in a"}], agent=a)
        await c.append(SUPPORT, [{"role": "user", "content": "in b"}], agent=b)
        assert await texts(c, SUPPORT, a) == ["in a"]
        assert await texts(c, SUPPORT, b) == ["in b"]


async def test_missing_template_variable_is_invalid_argument(example: RunningServer) -> None:
    async with example.client() as c:
        with pytest.raises(InvalidArgumentError, match="conversationId"):
            await c.append(SUPPORT, [{"role": "user", "content": "x"}],
                           agent=Agent("intake-agent", {"workflow": {"id": "wf", "input": {}}}))
        with pytest.raises(InvalidArgumentError, match="conversationId"):
            await c.read_all(SUPPORT, agent=Agent("intake-agent", ctx(conversation={"nested": 1})))  # type: ignore[arg-type]


async def test_unknown_agent_memory_or_reference_is_not_found(example: RunningServer) -> None:
    async with example.client() as c:
        with pytest.raises(NotFoundError, match="agent"):
            await c.stats(SUPPORT, agent=Agent("ghost", ctx()))
        with pytest.raises(NotFoundError, match="escalation-notes"):
            await c.stats("escalation-notes", agent=Agent("intake-agent", ctx()))
        with pytest.raises(NotFoundError):
            await c.stats("no-such-memory", agent=Agent("intake-agent", ctx()))


async def test_direct_access_policy_per_resource(example: RunningServer) -> None:
    async with example.client() as c:
        with pytest.raises(PermissionDeniedError, match="direct"):
            await c.read_all(SUPPORT, key="support-c-1")
        await c.append(PREFS, [{"role": "user", "content": "likes tea"}], agent=Agent("preferences-agent", ctx()))
        assert [m.content for m in await c.read_all(PREFS, key="prefs-u-1", view="raw")] == ["likes tea"]
        with pytest.raises(PermissionDeniedError):
            await c.append(PREFS, [{"role": "user", "content": "direct write"}], key="prefs-u-1")


CRAFTED = ["../c-1", "c-1/../../u-1", "*", "{c-1}", "c-1 ", "c 1", "c-1\n", "ç-1", "c-1" + "x" * 10_000,
           "c-1.h0123456789abcdef", "", "support-c-1"]


@pytest.mark.parametrize("crafted", CRAFTED, ids=range(len(CRAFTED)))
async def test_crafted_keys_cannot_reach_another_instance(example: RunningServer, crafted: str) -> None:
    victim = Agent("intake-agent", ctx("c-1"))
    attacker = Agent("intake-agent", ctx(crafted))
    async with example.client() as c:
        await c.append(SUPPORT, [{"role": "user", "content": "victim secret"}], agent=victim)
        try:
            seen = await texts(c, SUPPORT, attacker)
        except InvalidArgumentError:
            return  # refused outright (e.g. an empty value)
        assert "victim secret" not in seen
        victim_ref = (await c.resolve_agent(victim)).references[0]
        attacker_ref = (await c.resolve_agent(attacker)).references[0]
        assert attacker_ref.instance_id != victim_ref.instance_id
        assert len(attacker_ref.key) <= 512


async def test_resolve_agent_and_list_resources(example: RunningServer) -> None:
    async with example.client() as c:
        resolved = await c.resolve_agent(Agent("intake-agent", ctx("c-9", "u-7")))
        assert resolved.level == pb.CONFIG_LEVEL_ADVANCED
        refs = {r.memory_id: r for r in resolved.references}
        assert refs[SUPPORT].key == "support-c-9" and refs[SUPPORT].mode == pb.ACCESS_MODE_READ_WRITE
        assert refs[PREFS].key == "prefs-u-7" and refs[PREFS].mode == pb.ACCESS_MODE_READ_ONLY
        assert refs[SUPPORT].instance_id.endswith("/customer-support-context/support-c-9")
        single = await c.resolve_agent(Agent("preferences-agent", ctx()))
        assert single.level == pb.CONFIG_LEVEL_SINGLE
        multi = await c.resolve_agent(Agent("escalation-agent", ctx()))
        assert multi.level == pb.CONFIG_LEVEL_MULTI and len(multi.references) == 2
        stateless = await c.resolve_agent(Agent("classifier-agent", {}))
        assert list(stateless.references) == []
        listing = await c.list_resources()
    assert listing.project == "support-demo"
    by_id = {r.id: r for r in listing.resources}
    assert set(by_id) == {SUPPORT, PREFS, "escalation-notes"}
    assert by_id[SUPPORT].budget_tokens == 4000 and by_id[SUPPORT].encoding == "o200k_base"
    assert by_id[PREFS].strategy == pb.FLUSH_STRATEGY_FIFO
    assert by_id["escalation-notes"].budget_tokens == 32_000  # 0.25 x gpt-4o's 128k window
    assert by_id[SUPPORT].settings["access"]["direct"] == "deny"


async def test_end_workflow_removes_only_workflow_scoped_instances() -> None:
    project = load_project(REPO / "examples" / "project" / "memoryd.yaml")
    scratch = MemoryResource(id="scratch", max_tokens=1000)
    agent = project.agents["intake-agent"]
    agent = type(agent)(id="worker", level=3, references=(
        MemoryReference("scratch", "read-write", "run-{{ .workflow.id }}"),
        MemoryReference(SUPPORT, "read-write", "support-{{ .workflow.input.conversationId }}"),
    ))
    project = type(project)(id=project.id, resources={**project.resources, "scratch": scratch},
                            agents={**project.agents, "worker": agent})
    async with running_server(project) as srv, srv.client() as c:
        for wf in ("wf-1", "wf-2"):
            worker = Agent("worker", {"workflow": {"id": wf, "input": {"conversationId": "conv"}}})
            await c.append("scratch", [{"role": "user", "content": f"scratch {wf}"}], agent=worker)
            await c.append(SUPPORT, [{"role": "user", "content": f"support {wf}"}], agent=worker)
        assert await c.end_workflow("wf-1") == 1
        wf1 = Agent("worker", {"workflow": {"id": "wf-1", "input": {"conversationId": "conv"}}})
        wf2 = Agent("worker", {"workflow": {"id": "wf-2", "input": {"conversationId": "conv"}}})
        assert await texts(c, "scratch", wf1) == []
        assert await texts(c, "scratch", wf2) == ["scratch wf-2"]
        assert await texts(c, SUPPORT, wf1) == ["support wf-1", "support wf-2"]  # keyed by conversation: kept
        with pytest.raises(InvalidArgumentError, match="workflow_id"):
            await c.end_workflow("")


async def test_one_agent_watches_what_another_appends(example: RunningServer) -> None:
    intake, resolution = Agent("intake-agent", ctx("watched")), Agent("resolution-agent", ctx("watched"))
    async with example.client() as writer, example.client() as watcher:
        seen: list[str] = []

        async def watch(after_seq: int, want: int) -> int:
            async for event in watcher.watch(SUPPORT, agent=resolution, after_seq=after_seq):
                seen.extend(m.content for m in event.appended.messages)
                if len(seen) >= want:
                    return event.appended.messages[-1].seq
            raise AssertionError("watch ended early")

        first = asyncio.create_task(watch(0, 20))
        for i in range(20):
            await writer.append(SUPPORT, [{"role": "user", "content": f"turn {i} ✓"}], agent=intake)
        last = await first
        for i in range(20, 30):  # while nobody watches
            await writer.append(SUPPORT, [{"role": "user", "content": f"turn {i} ✓"}], agent=intake)
        await watch(last, 30)
    assert seen == [f"turn {i} ✓" for i in range(30)]
