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
    blocks = (PriorityBlock(priority=0, content_types=("policy",), max_tokens=30),)
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


# -- issue 17: the context promises (docs/tokens-and-budget.md, "The promises") ---------------------

from memoryd.config.model import FlushingStrategy, TokenAllocation  # noqa: E402
from memoryd.tokens import counter_for_model  # noqa: E402
from tests.promises import MARKER, covers, is_cut_of, unaccounted  # noqa: E402
from tests.service.test_privacy_and_metrics import scrape, value  # noqa: E402
from tests.support import RunningServer  # noqa: E402

COUNTER = counter_for_model("gpt-4o")


async def settle(srv: RunningServer) -> None:
    """Wait for the flushes the appends scheduled (the manager's own tasks: no sleep)."""
    await srv.server.manager.flushes_idle()


def text_of(tokens_wanted: int, word: str = "lorem") -> str:
    """Content costing about ``tokens_wanted`` tokens as a user message."""
    return " ".join([word] * max(1, tokens_wanted - 4))


async def promises_hold(c: AsyncMemoryClient, key: str, acked: set[int], budget: int,
                        contents: dict[int, str]) -> tuple[list[pb.Message], list[pb.Message], str]:
    """Check promises 1, 3, 4, 5 and 7 as a user sees them; return RAW, CONTEXT and the summary."""
    raw = await c.read_all("chat", key=key, view="raw")
    view = await context(c, key)
    summaries = [m.content for m in view if m.kind == pb.MESSAGE_KIND_SUMMARY]
    summary = summaries[0] if summaries else ""
    stored = {m.seq for m in raw}
    assert sum(m.token_count for m in view) <= budget  # 1
    assert not unaccounted(acked, stored, summary)  # 4
    assert all(m.content == contents[m.seq] for m in raw)  # 5: RAW byte-exact
    recent = [m for m in view if m.kind != pb.MESSAGE_KIND_SUMMARY and m.effective_priority != 0]
    newest = max((m for m in raw if m.effective_priority != 0), key=lambda m: m.seq, default=None)
    if newest is not None:  # 3
        assert recent and recent[-1].seq == newest.seq and is_cut_of(recent[-1].content, newest.content, newest.seq)
    kinds = [0 if m.effective_priority == 0 and m.kind != pb.MESSAGE_KIND_SUMMARY else
             1 if m.kind == pb.MESSAGE_KIND_SUMMARY else 2 for m in view]
    assert kinds == sorted(kinds) and [m.seq for m in recent] == sorted(m.seq for m in recent)  # 7
    return raw, view, summary


async def append(c: AsyncMemoryClient, key: str, batch: list[dict[str, object]],
                 acked: set[int], contents: dict[int, str]) -> None:
    resp = await c.append("chat", batch, key=key)
    for r, m in zip(resp.results, batch, strict=True):
        acked.add(r.seq)
        contents[r.seq] = str(m["content"])


async def test_regression_a_huge_message_in_a_batch_takes_nothing_with_it() -> None:
    """Default resource: the batch was acknowledged, then RAW was empty and the summary a bare header."""
    async with running_server(project(max_tokens=8000)) as srv, srv.client() as c:
        acked: set[int] = set()
        contents: dict[int, str] = {}
        await append(c, "k", [{"role": "user", "content": "héllo wörld — 你好 🌍"},
                              {"role": "user", "content": "second"},
                              {"role": "user", "content": "x" * 100_000}], acked, contents)
        await settle(srv)
        raw, view, summary = await promises_hold(c, "k", acked, 8000, contents)
    assert [m.seq for m in raw][-1] == 3 and raw[-1].content == "x" * 100_000
    assert MARKER.search(view[-1].content) and view[-1].seq == 3
    assert covers(summary, 1) and covers(summary, 2)


async def test_regression_pinned_prompt_ten_turns_and_an_oversized_message() -> None:
    async with running_server(project(max_tokens=8000)) as srv, srv.client() as c:
        acked: set[int] = set()
        contents: dict[int, str] = {}
        await append(c, "k", [{"role": "system", "content": "You are the support agent of ACME."}], acked, contents)
        for i in range(10):
            await append(c, "k", [{"role": "user", "content": f"turn {i}: where is order A-{1000 + i}?"}],
                         acked, contents)
        await append(c, "k", [{"role": "user", "content": text_of(8500)}], acked, contents)
        await settle(srv)
        raw, view, summary = await promises_hold(c, "k", acked, 8000, contents)
    assert view[0].content == "You are the support agent of ACME." and summary
    assert len(raw) >= 2  # the pinned prompt and the oversized message, at least


async def test_regression_oversized_message_in_a_400_token_recent_share() -> None:
    alloc = TokenAllocation(system=0.1, short_term=0.4, long_term=0.5)
    async with running_server(project(max_tokens=1000, token_allocation=alloc)) as srv, srv.client() as c:
        acked: set[int] = set()
        contents: dict[int, str] = {}
        for i in range(4):
            await append(c, "k", [{"role": "user", "content": f"note {i}: invoice INV-{7 + i}"}], acked, contents)
        await append(c, "k", [{"role": "user", "content": text_of(454)}], acked, contents)
        await settle(srv)
        raw, _view, summary = await promises_hold(c, "k", acked, 1000, contents)
    assert raw and summary and all(covers(summary, s) for s in acked - {m.seq for m in raw})


async def test_regression_fifo_keeps_the_newest_message_that_fits() -> None:
    fifo = FlushingStrategy(type="fifo")
    async with running_server(project(max_tokens=800, flushing_strategy=fifo), metrics_listen="127.0.0.1:0") as srv, \
            srv.client() as c:
        acked: set[int] = set()
        contents: dict[int, str] = {}
        for i in range(5):
            await append(c, "k", [{"role": "user", "content": f"note {i}"}], acked, contents)
        big = text_of(704)
        await append(c, "k", [{"role": "user", "content": big}], acked, contents)
        await settle(srv)
        raw = await c.read_all("chat", key="k", view="raw")
        view = await context(c, "k")
        evicted = value(scrape(srv.server.ports["metrics"]), "memoryd_messages_evicted_total",
                        memory_id="chat", strategy="fifo")
        stats = await c.stats("chat", key="k")
    assert raw and raw[-1].content == big
    assert view and view[-1].content == big and sum(m.token_count for m in view) <= 800
    assert evicted == len(acked) - len(raw) > 0  # dropping is fifo's choice: counted
    assert stats.evicted == evicted  # ... in GetStats too (promise 4)


async def test_regression_block_cap_shows_the_newest_tool_result_cut() -> None:
    blocks = (PriorityBlock(priority=7, content_types=("tool_result",), max_tokens=200),)
    async with running_server(project(priority_blocks=blocks)) as srv, srv.client() as c:
        acked: set[int] = set()
        contents: dict[int, str] = {}
        for i in range(3):
            await append(c, "k", [{"role": "user", "content": f"result {i}", "content_type": "tool_result"}],
                         acked, contents)
        await append(c, "k", [{"role": "user", "content": text_of(250), "content_type": "tool_result"}],
                     acked, contents)
        await settle(srv)
        _raw, view, _summary = await promises_hold(c, "k", acked, BUDGET, contents)
    tools = [m for m in view if m.content_type == "tool_result"]
    assert tools and tools[-1].seq == 4 and MARKER.search(tools[-1].content)
    assert sum(m.token_count for m in tools) <= 200


async def test_regression_a_large_pinned_prompt_loses_no_turn() -> None:
    async with running_server(project(max_tokens=8000)) as srv, srv.client() as c:
        acked: set[int] = set()
        contents: dict[int, str] = {}
        await append(c, "k", [{"role": "system", "content": text_of(6504, "rule")}], acked, contents)
        for i in range(5):
            await append(c, "k", [{"role": "user", "content": f"short turn {i} about ticket T-{40 + i}"}],
                         acked, contents)
            await settle(srv)
            _raw, _view, summary = await promises_hold(c, "k", acked, 8000, contents)
        stats = await c.stats("chat", key="k")
    assert stats.flush_count == 0 or (summary and stats.summary_tokens > 0)


async def test_regression_a_pinned_append_cannot_hide_the_summary() -> None:
    async with running_server(project(max_tokens=8000)) as srv, srv.client() as c:
        acked: set[int] = set()
        contents: dict[int, str] = {}
        for i in range(30):
            await append(c, "k", [{"role": "user", "content": f"turn {i}: {text_of(250)}"}], acked, contents)
        await settle(srv)
        await c.flush("chat", key="k")
        _raw, _view, summary = await promises_hold(c, "k", acked, 8000, contents)
        assert summary
        with pytest.raises(ResourceExhaustedError, match="pinned"):  # would leave less than the stated minimum
            await c.append("chat", [{"role": "system", "content": text_of(7600, "rule")}], key="k")
        await append(c, "k", [{"role": "system", "content": text_of(7000, "rule")}], acked, contents)
        await settle(srv)
        _raw, view, summary = await promises_hold(c, "k", acked, 8000, contents)
    assert summary and any(m.kind == pb.MESSAGE_KIND_SUMMARY for m in view)


async def test_regression_message_limit_one_folds_into_a_real_summary() -> None:
    async with running_server(project(message_limit=1)) as srv, srv.client() as c:
        acked: set[int] = set()
        contents: dict[int, str] = {}
        for i in range(6):
            await append(c, "k", [{"role": "user", "content": f"turn {i}: my order is {48210 + i}"}],
                         acked, contents)
            await settle(srv)
            _raw, _view, summary = await promises_hold(c, "k", acked, BUDGET, contents)
    assert summary and all(covers(summary, s) for s in range(1, 6))


async def test_oversize_reject_refuses_the_whole_batch_naming_the_message() -> None:
    async with running_server(project(max_tokens=1000, oversize="reject")) as srv, srv.client() as c:
        await c.append("chat", [{"role": "system", "content": "You are terse."}], key="k")
        with pytest.raises(ResourceExhaustedError) as exc:
            await c.append("chat", [{"role": "user", "content": "fine"},
                                    {"role": "user", "content": text_of(600)}], key="k")
        raw = await c.read_all("chat", key="k", view="raw")
        ok = await c.append("chat", [{"role": "user", "content": text_of(400)}], key="k")  # fits its room
    big, pinned = COUNTER.count_message("user", text_of(600)), COUNTER.count_message("system", "You are terse.")
    room = 1000 - pinned - 500  # B - pinned - the summary's reserved room
    assert f"messages[1]: {big} tokens, more than the {room} tokens of room" in str(exc.value)
    assert [m.content for m in raw] == ["You are terse."] and len(ok.results) == 1


SUPPORT_CHAT = [
    ("user", "Hi, my name is Dana Whitfield and I hope you are having a lovely day. My order ORD-48213 "
             "has not arrived yet and I am getting a little worried about it, to be honest."),
    ("assistant", "Hello Dana, thank you so much for reaching out and I am sorry to hear that. Let me look into "
                  "this for you right away. Could you confirm the delivery address on the order?"),
    ("user", "Sure, of course. It should be going to 221 Baker Street, London NW1 6XE. That is where I have "
             "lived for years, so it really should not be a problem at all."),
    ("assistant", "Thank you. I can see the parcel left our warehouse on 2026-03-02 with the courier, and it "
                  "seems to have been held at the depot because of a labelling issue."),
    ("user", "Oh no, that is annoying. Can you please resend it or refund the $149.90 I paid? I really needed "
             "it for my daughter's birthday party this weekend."),
    ("assistant", "I completely understand. I have decided to resend it with express shipping at no extra "
                  "charge; the new tracking number is 1Z999AA10123456784."),
    ("user", "That is great, thank you. Will I get an email confirmation at dana.w@example.com as well?"),
    ("assistant", "Yes, a confirmation email is on its way to dana.w@example.com right now, and you can call us "
                  "on +44 20 7946 0958 if anything else goes wrong."),
    ("user", "Perfect, thanks a lot for your help today, you have been very kind and patient with me."),
    ("assistant", "You are very welcome, Dana. Is there anything else I can help you with today?"),
]
SUPPORT_FACTS = ("ORD-48213", "221 Baker Street", "2026-03-02", "$149.90", "1Z999AA10123456784",
                 "dana.w@example.com", "+44 20 7946 0958")


async def test_regression_a_support_chat_folded_six_times_keeps_its_facts() -> None:
    """The summary of 6 folds was 99 tokens (500 allowed) and kept "- user #1: Hi, my …", not the order."""
    res = project(max_tokens=8000, flushing_strategy=FlushingStrategy(summary_tokens=200))
    async with running_server(res) as srv, srv.client() as c:
        acked: set[int] = set()
        contents: dict[int, str] = {}
        for i, (role, content) in enumerate(SUPPORT_CHAT):
            await append(c, "k", [{"role": role, "content": content}], acked, contents)
            if i >= 4:  # a fold after each of the last 6 turns
                await c.flush("chat", key="k")
        _raw, view, summary = await promises_hold(c, "k", acked, 8000, contents)
        stats = await c.stats("chat", key="k")
    assert stats.flush_count == 6
    shown = "\n".join(m.content for m in view)
    assert [f for f in SUPPORT_FACTS if f not in shown] == []
    assert summary.count("\n") >= 2 and 150 < COUNTER.count_message("system", summary) <= 200
