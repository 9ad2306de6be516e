"""Promise 8 through the real API, on the embedded store and on Redis: an agent stores its
OpenAI or Anthropic conversation as it is, and every CONTEXT read, at any budget and after
folds, converts to a history the provider accepts (``tests/provider_rules.py`` states the
rules with their sources). An Anthropic conversation read back RAW converts to exactly the
conversation that was stored.

Conversations are drawn from a seeded generator (parallel calls, late results, huge
results, pending newest groups, text between groups), so each run drives the same cases."""

from __future__ import annotations

import json
import random
import uuid
from typing import Any

import pytest
from memoryd_client import AsyncMemoryClient, InvalidArgumentError, from_anthropic, pb, to_anthropic, to_openai

from memoryd.config.model import FlushingStrategy, MemoryResource, Project
from memoryd.store.url import open_store
from tests.provider_rules import validate_anthropic, validate_openai
from tests.support import RunningServer, running_server

BUDGETS = (0, 120, 200, 350, 600, 1200, 5000)  # 0: the resource's own budget
CONVERSATIONS = 6


@pytest.fixture(params=["embedded", "redis"])
async def srv(request: pytest.FixtureRequest) -> Any:
    store = open_store(request.getfixturevalue("redis_standalone").url) if request.param == "redis" else None
    chat = MemoryResource(id="chat", max_tokens=5000, flushing_strategy=FlushingStrategy(
        type="hybrid_summary", summarize_threshold=0.9, summary_tokens=300))
    project = Project(id=f"p{uuid.uuid4().hex[:10]}", resources={chat.id: chat}, agents={})
    async with running_server(project, store=store) as running:
        yield running


def openai_conversation(rng: random.Random, n_turns: int) -> list[dict[str, Any]]:
    """An OpenAI Chat conversation as the SDK writes it; the last turn may be a pending group."""
    out: list[dict[str, Any]] = [{"role": "system", "content": "You are a support agent for ACME."}]
    call_no = 0
    for turn in range(n_turns):
        out.append({"role": "user", "content": f"Question {turn}: where is order A-{rng.randint(1000, 9999)}?"})
        for _ in range(rng.randint(0, 2)):  # tool rounds
            calls = []
            for _ in range(rng.randint(1, 3)):  # parallel calls
                call_no += 1
                args = json.dumps({"id": f"A-{call_no}", "q": "x" * rng.randint(0, 40)})
                calls.append({"id": f"call_{call_no}_{uuid.uuid4().hex[:6]}", "type": "function",
                              "function": {"name": rng.choice(["get_order", "get_user", "search"]),
                                           "arguments": args}})
            out.append({"role": "assistant", "content": rng.choice([None, "Let me check."]), "tool_calls": calls})
            for c in calls:
                size = rng.choice([5, 30, 2000])  # some results are huge
                out.append({"role": "tool", "tool_call_id": c["id"],
                            "content": json.dumps({"status": "shipped", "log": "event " * size})})
        out.append({"role": "assistant", "content": f"Answer {turn}: it shipped."})
    if rng.random() < 0.5:  # the agent is mid-call: a pending newest group
        call_no += 1
        out.append({"role": "assistant", "content": None, "tool_calls": [
            {"id": f"call_{call_no}_pending", "type": "function",
             "function": {"name": "get_order", "arguments": '{"id": "A-1"}'}}]})
    return out


def assert_groups_whole(view: list[pb.Message], raw: list[pb.Message]) -> None:
    """The view itself keeps groups whole (the converters could hide a split: they drop
    orphaned results and answer missing calls with a placeholder): every tool result shown
    comes with its call, and every shown call comes with all the results stored for it."""
    shown_calls = {c.id for m in view for c in m.tool_calls}
    shown_results = {m.tool_call_id for m in view if m.role == pb.ROLE_TOOL}
    stored_results = {m.tool_call_id for m in raw if m.role == pb.ROLE_TOOL}
    assert shown_results <= shown_calls, f"results shown without their call: {shown_results - shown_calls}"
    missing = (shown_calls & stored_results) - shown_results
    assert not missing, f"calls shown without their stored results: {missing}"


async def check_every_budget(c: AsyncMemoryClient, key: str) -> None:
    raw = await c.read_all("chat", key=key, view="raw")
    for budget in BUDGETS:
        try:
            view = await c.read_all("chat", key=key, max_tokens=budget)
        except InvalidArgumentError as exc:  # a budget below pinned + the newest turn's minimum is refused
            refused = exc
        else:
            refused = None
        if refused is not None:
            assert "max_tokens" in refused.details and budget and budget < 600, (budget, refused)
            continue
        assert view, budget
        assert_groups_whole(view, raw)
        validate_openai(to_openai(view))
        validate_anthropic(*to_anthropic(view))


async def test_openai_conversations_read_back_as_histories_openai_and_anthropic_accept(srv: RunningServer) -> None:
    rng = random.Random(18)
    async with srv.client() as c:
        for n in range(CONVERSATIONS):
            key = f"openai-{n}"
            for m in openai_conversation(rng, rng.randint(1, 5)):  # one append per message, as an agent does
                await c.append("chat", [m], key=key)
                if rng.random() < 0.3:
                    await check_every_budget(c, key)
            await check_every_budget(c, key)
            await c.flush("chat", key=key)  # a fold: groups go whole into the summary
            await check_every_budget(c, key)
            raw = await c.read_all("chat", key=key, view="raw")
            validate_openai(to_openai(raw))


ANTHROPIC_SYSTEM = "You are a support agent for ACME."
ANTHROPIC_MESSAGES: list[dict[str, Any]] = [
    {"role": "user", "content": "Where is order A-48213?"},
    {"role": "assistant", "content": [
        {"type": "thinking", "thinking": "I should look the order up.", "signature": "sig-1"},
        {"type": "text", "text": "Let me check both systems."},
        {"type": "tool_use", "id": "toolu_01", "name": "get_order", "input": {"id": "A-48213"}},
        {"type": "tool_use", "id": "toolu_02", "name": "get_shipment", "input": {"order": "A-48213", "full": True}},
    ]},
    {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "toolu_01", "content": '{"status": "shipped"}'},
        {"type": "tool_result", "tool_use_id": "toolu_02", "content": "carrier timeout", "is_error": True},
        {"type": "text", "text": "Also, can you email me?"},
    ]},
    {"role": "assistant", "content": [{"type": "text", "text": "It shipped; I will email you at bob@example.com."}]},
    {"role": "user", "content": [
        {"type": "text", "text": "Here is the receipt."},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/receipt.png"}},
    ]},
    {"role": "assistant", "content": [{"type": "text", "text": "Thanks, received."}]},
]


def blocks(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """String contents as the one text block they stand for (Anthropic takes either form)."""
    return [{**m, "content": [{"type": "text", "text": m["content"]}]} if isinstance(m["content"], str) else m
            for m in messages]


async def test_an_anthropic_conversation_is_stored_as_it_is_and_read_back_the_same(srv: RunningServer) -> None:
    async with srv.client() as c:
        await c.append("chat", from_anthropic(ANTHROPIC_MESSAGES, system=ANTHROPIC_SYSTEM), key="anthropic")
        raw = await c.read_all("chat", key="anthropic", view="raw")
        system, messages = to_anthropic(raw)
        assert system == ANTHROPIC_SYSTEM
        assert messages == blocks(ANTHROPIC_MESSAGES)
        validate_anthropic(system, messages)
        await check_every_budget(c, "anthropic")


def test_from_anthropic_refuses_what_it_cannot_store() -> None:
    with pytest.raises(ValueError, match=r"messages\[0\].content\[0\].type"):
        from_anthropic([{"role": "user", "content": [{"type": "audio", "data": "x"}]}])
    with pytest.raises(ValueError, match=r"messages\[0\].role"):
        from_anthropic([{"role": "system", "content": "x"}])
