"""PlanFlush / ApplyFlush and ``flushing_strategy: external`` through the real API, on the
embedded store and on a real Redis: summaries written by the caller's own model, fenced."""

from __future__ import annotations

import asyncio
import base64
import json
import random
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from memoryd_client import (
    AbortedError,
    AsyncMemoryClient,
    FailedPreconditionError,
    InvalidArgumentError,
    PermissionDeniedError,
    ResourceExhaustedError,
    pb,
)

from memoryd.config.model import FlushingStrategy, MemoryResource, Project
from memoryd.models import RefSpec
from memoryd.store.url import open_store
from memoryd.tokens import counter_for_model
from tests.service.test_promises import Checker, message
from tests.support import RunningServer, running_server

COUNTER = counter_for_model(None)
HUGE = 100_000_000  # no fold unless asked
RESOURCES = (
    MemoryResource(id="chat", max_tokens=HUGE),
    MemoryResource(id="ro", max_tokens=HUGE, direct_access="read-only"),
    MemoryResource(id="fifo", max_tokens=HUGE, flushing_strategy=FlushingStrategy(type="fifo")),
    # external, with a timeout no test waits for: only the caller folds
    MemoryResource(id="ext", max_tokens=600, flushing_strategy=FlushingStrategy(
        type="external", summarize_threshold=0.5, summary_tokens=150, external_timeout_s=3600)),
    # external, whose fallback fires soon after a fold became due
    MemoryResource(id="ext-fast", max_tokens=600, flushing_strategy=FlushingStrategy(
        type="external", summarize_threshold=0.5, summary_tokens=150, external_timeout_s=0.3)),
)


@asynccontextmanager
async def serving(request: pytest.FixtureRequest, backend: str) -> AsyncIterator[RunningServer]:
    store = open_store(request.getfixturevalue("redis_standalone").url) if backend == "redis" else None
    project = Project(id=f"x{uuid.uuid4().hex[:10]}", resources={r.id: r for r in RESOURCES}, agents={})
    async with running_server(project, store=store) as srv:
        yield srv


@pytest.fixture(params=["embedded", "redis"])
async def srv(request: pytest.FixtureRequest) -> AsyncIterator[RunningServer]:
    async with serving(request, request.param) as running:
        yield running


def said(n: int, prefix: str = "m") -> list[dict[str, object]]:
    return [{"role": "user" if i % 2 == 0 else "assistant", "content": f"{prefix}{i}"} for i in range(n)]


def model_summary(plan: pb.PlanFlushResponse) -> str:
    """A deterministic stand-in for the agent's model: the old summary and one line per
    folded message, in the rule-based summary's format, cut to the plan's cap."""
    seqs = list(plan.seqs)
    header = f"Summary of earlier conversation (through message #{max(seqs)}):"
    old = plan.current_summary.splitlines()[1:]
    lines = old + [f"- user #{m.seq}: {m.content[:40]}" for m in plan.messages]
    while lines and COUNTER.count_message("system", "\n".join([header, *lines])) > plan.summary_max_tokens:
        lines.pop(0)
    return "\n".join([header, *lines])


def ref(mid: str, key: str) -> RefSpec:
    return RefSpec(memory_id=mid, key=key, agent_id=None, context={})


async def raw(c: AsyncMemoryClient, mid: str, key: str) -> list[pb.Message]:
    return await c.read_all(mid, key=key, view="raw")


async def test_appends_made_while_the_model_writes_stay_live_in_order(srv: RunningServer) -> None:
    async with srv.client() as c:
        await c.append("chat", said(10), key="k")
        plan = await c.plan_flush("chat", key="k")
        assert list(plan.seqs) == [1, 2, 3] and [m.content for m in plan.messages] == ["m0", "m1", "m2"]
        assert plan.current_summary == "" and plan.summary_max_tokens == 500
        assert plan.stats.message_count == 10 and plan.stats.flush_count == 0
        assert [m.seq for m in await raw(c, "chat", "k")] == list(range(1, 11))  # PlanFlush changed nothing
        for i in range(100):  # the model is slow: the conversation goes on
            await c.append("chat", [{"role": "user", "content": f"late{i}"}], key="k")
        done = await c.apply_flush("chat", plan.plan_token, "The user said m0 to m2.", key="k")
        assert list(done.removed_seqs) == [1, 2, 3]
        assert done.summary.kind == pb.MESSAGE_KIND_SUMMARY and done.summary.content == "The user said m0 to m2."
        assert done.summary.seq == 3 and done.stats.message_count == 107 and done.stats.flush_count == 1
        stored = await raw(c, "chat", "k")
        assert [m.content for m in stored] == [f"m{i}" for i in range(3, 10)] + [f"late{i}" for i in range(100)]
        assert [m.seq for m in stored] == list(range(4, 111))
        history = await c.read_all("chat", key="k", view="history")  # folded by the caller, still kept
        assert [(m.seq, m.folded) for m in history] == [(s, s <= 3) for s in range(1, 111)]
        assert [m.content for m in history[:3]] == ["m0", "m1", "m2"]
        view = await c.read_all("chat", key="k")
        assert view[0].content == "The user said m0 to m2." and [m.seq for m in view[1:]] == list(range(4, 111))
        again = await c.plan_flush("chat", key="k")
        assert again.current_summary == "The user said m0 to m2." and again.stats.flush_count == 1


async def test_of_two_planners_exactly_one_applies(srv: RunningServer) -> None:
    async with srv.client() as a, srv.client() as b:
        await a.append("chat", said(20), key="k")
        plan_a, plan_b = await a.plan_flush("chat", key="k"), await b.plan_flush("chat", key="k")
        results = await asyncio.gather(a.apply_flush("chat", plan_a.plan_token, "A's summary", key="k"),
                                       b.apply_flush("chat", plan_b.plan_token, "B's summary", key="k"),
                                       return_exceptions=True)
        applied = [r for r in results if isinstance(r, pb.ApplyFlushResponse)]
        refused = [r for r in results if isinstance(r, BaseException)]
        assert len(applied) == 1 and len(refused) == 1 and isinstance(refused[0], AbortedError), results
        assert "plan again" in refused[0].details
        stats = await a.stats("chat", key="k")
        assert stats.flush_count == 1 and stats.message_count == 20 - len(plan_a.seqs)
        view = await a.read_all("chat", key="k")
        assert view[0].content == applied[0].summary.content
        # The loser plans again, on the new state, and applies.
        plan = await b.plan_flush("chat", key="k")
        assert plan.current_summary == applied[0].summary.content and plan.seqs[0] > max(plan_a.seqs)
        await b.apply_flush("chat", plan.plan_token, "B again", key="k")
        # A plan applied twice: the second time is another fold since the plan.
        with pytest.raises(AbortedError):
            await b.apply_flush("chat", plan.plan_token, "B again", key="k")


async def test_a_plan_applied_after_another_fold_is_aborted(srv: RunningServer) -> None:
    async with srv.client() as c:
        await c.append("chat", said(10), key="k")
        plan = await c.plan_flush("chat", key="k")
        await c.flush("chat", key="k")  # the rule-based fold, e.g. by another daemon
        before = await raw(c, "chat", "k")
        with pytest.raises(AbortedError):
            await c.apply_flush("chat", plan.plan_token, "too late", key="k")
        assert await raw(c, "chat", "k") == before
        assert "too late" not in (await c.read_all("chat", key="k"))[0].content


async def test_a_plan_applied_after_a_clear_is_aborted(srv: RunningServer) -> None:
    async with srv.client() as c:
        await c.append("chat", said(10), key="gone")
        plan = await c.plan_flush("chat", key="gone")
        await c.clear("chat", key="gone")
        with pytest.raises(AbortedError):
            await c.apply_flush("chat", plan.plan_token, "stale", key="gone")
        assert (await c.stats("chat", key="gone")).message_count == 0
        # Cleared and created again with the same seqs: the plan names the old incarnation.
        await c.append("chat", said(10), key="k")
        plan = await c.plan_flush("chat", key="k")
        await c.clear("chat", key="k")
        await c.append("chat", said(10, "new"), key="k")
        with pytest.raises(AbortedError):
            await c.apply_flush("chat", plan.plan_token, "stale", key="k")
        stored = await raw(c, "chat", "k")
        assert [m.content for m in stored] == [f"new{i}" for i in range(10)]
        assert (await c.stats("chat", key="k")).flush_count == 0


async def test_a_summary_over_the_cap_is_refused_and_changes_nothing(srv: RunningServer) -> None:
    async with srv.client() as c:
        await c.append("chat", said(10), key="k")
        plan = await c.plan_flush("chat", key="k")
        text = "fact " * plan.summary_max_tokens
        tokens = COUNTER.count_message("system", text)
        before = (await raw(c, "chat", "k"), await c.stats("chat", key="k"))
        with pytest.raises(ResourceExhaustedError) as err:
            await c.apply_flush("chat", plan.plan_token, text, key="k")
        assert err.value.details.startswith("summary:") and str(tokens) in err.value.details
        assert str(plan.summary_max_tokens) in err.value.details
        assert (await raw(c, "chat", "k"), await c.stats("chat", key="k")) == before
        with pytest.raises(InvalidArgumentError, match="summary"):
            await c.apply_flush("chat", plan.plan_token, "  ", key="k")
        fits = model_summary(plan)
        await c.apply_flush("chat", plan.plan_token, fits, key="k")  # the plan is still good


def reseal(token: str, edit: dict[str, object]) -> str:
    """``token`` with its payload edited and its MAC kept: a forgery."""
    version, payload, mac = token.split(".")
    body = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    body.update(edit)
    forged = base64.urlsafe_b64encode(json.dumps(body).encode()).rstrip(b"=").decode()
    return f"{version}.{forged}.{mac}"


async def test_forged_garbled_and_foreign_tokens_are_refused(srv: RunningServer) -> None:
    async with srv.client() as c:
        await c.append("chat", said(10), key="k")
        await c.append("chat", said(10), key="other")
        token = (await c.plan_flush("chat", key="k")).plan_token
        garbled = token[:-3] + ("AAA" if not token.endswith("AAA") else "BBB")
        bad = {
            "empty": "",
            "garbled": garbled,
            "truncated": token[: len(token) // 2],
            "other version": "pt9" + token[3:],
            "forged seqs": reseal(token, {"s": [[1, 10]]}),  # would fold the newest turn
            "forged fold count": reseal(token, {"f": 7}),
            "not base64": "pt1.%%%.%%%",
        }
        for name, value in bad.items():
            with pytest.raises(InvalidArgumentError, match="plan_token") as err:
                await c.apply_flush("chat", value, "s", key="k")
            assert len(err.value.details) < 300, name
        with pytest.raises(InvalidArgumentError, match="another instance"):
            await c.apply_flush("chat", token, "s", key="other")
        stats = await c.stats("chat", key="k")
        assert stats.flush_count == 0 and stats.message_count == 10
    # A token of another daemon (another key) verifies nowhere else.
    async with running_server(srv.server.manager.project) as other, other.client() as c2:
        await c2.append("chat", said(10), key="k")
        with pytest.raises(InvalidArgumentError, match="plan_token"):
            await c2.apply_flush("chat", token, "s", key="k")


async def test_read_only_references_and_fifo_resources_are_refused(srv: RunningServer) -> None:
    async with srv.client() as c:
        with pytest.raises(PermissionDeniedError):
            await c.plan_flush("ro", key="k")
        with pytest.raises(PermissionDeniedError):
            await c.apply_flush("ro", "pt1.x.y", "s", key="k")
        await c.append("fifo", said(5), key="k")
        for call in (c.plan_flush("fifo", key="k"), c.apply_flush("fifo", "pt1.x.y", "s", key="k")):
            with pytest.raises(FailedPreconditionError) as err:
                await call
            assert err.value.code.name == "FAILED_PRECONDITION" and "fifo" in err.value.details


async def test_an_empty_plan_applies_as_nothing(srv: RunningServer) -> None:
    async with srv.client() as c:
        await c.append("chat", said(1), key="k")  # one recent message: the newest turn is never folded
        plan = await c.plan_flush("chat", key="k")
        assert not plan.seqs and not plan.messages
        done = await c.apply_flush("chat", plan.plan_token, "", key="k")
        assert not done.removed_seqs and done.stats.flush_count == 0 and done.stats.message_count == 1


async def watch_until(c: AsyncMemoryClient, mid: str, key: str, kinds: list[str],
                      seen: list[pb.WatchResponse], got: dict[str, asyncio.Event]) -> None:
    """Collect ``key``'s events until the event kinds in ``kinds`` were seen, in that order;
    ``got[kind]`` is set when an event of that kind arrives (``got["ready"]`` at the start)."""
    want = list(kinds)
    stream = c.watch(mid, key=key)
    got["ready"].set()
    async for event in stream:
        seen.append(event)
        kind = event.WhichOneof("event")
        got.setdefault(kind, asyncio.Event()).set()
        if want and kind == want[0]:
            want.pop(0)
            if not want:
                return


def events() -> dict[str, asyncio.Event]:
    return {k: asyncio.Event() for k in ("ready", "appended", "flush_due", "flushed")}


async def test_external_signals_a_due_fold_and_the_caller_folds(srv: RunningServer) -> None:
    async with srv.client() as c:
        await c.append("ext", said(2), key="k")  # the instance exists before the watch starts
        seen: list[pb.WatchResponse] = []
        got = events()
        watcher = asyncio.create_task(watch_until(c, "ext", "k", ["flush_due", "flushed"], seen, got))
        await got["ready"].wait()
        health = await c.health("ext", key="k")
        assert not health.instance.over_threshold and not health.instance.flush_pending
        i = 0
        while not (await c.append("ext", [{"role": "user", "content": f"turn {i} " + "x " * 20}],
                                  key="k")).flush_scheduled:
            i += 1
        health = await c.health("ext", key="k")
        assert health.instance.over_threshold and health.instance.flush_pending
        assert health.instance.stats.strategy == pb.FLUSH_STRATEGY_EXTERNAL
        await asyncio.wait_for(got["flush_due"].wait(), 30)
        plan = await c.plan_flush("ext", key="k")
        await c.apply_flush("ext", plan.plan_token, model_summary(plan), key="k")
        await asyncio.wait_for(watcher, 30)
        kinds = [e.WhichOneof("event") for e in seen]
        due = kinds.index("flush_due")
        assert kinds[:due] == ["appended"] * due and kinds[-1] == "flushed"
        assert seen[due].flush_due.stats.token_count >= 300  # summarize_threshold x budget
        flushed = seen[-1].flushed
        assert list(flushed.removed_seqs) == list(plan.seqs) and flushed.summary.content == model_summary(plan)
        # A fallback that finds the fold it was due for done already folds nothing.
        fold = await srv.server.manager.flush(srv.server.manager.resolve(ref("ext", "k")),
                                              expect_flush_count=plan.stats.flush_count)
        assert not fold.applied and (await c.stats("ext", key="k")).flush_count == 1


async def test_external_falls_back_to_the_rule_after_external_timeout(srv: RunningServer) -> None:
    async with srv.client() as c:
        await c.append("ext-fast", said(2), key="k")
        seen: list[pb.WatchResponse] = []
        got = events()
        watcher = asyncio.create_task(watch_until(c, "ext-fast", "k", ["flush_due", "flushed"], seen, got))
        await got["ready"].wait()
        i = 0
        while not (await c.append("ext-fast", [{"role": "user", "content": f"turn {i} " + "x " * 20}],
                                  key="k")).flush_scheduled:
            i += 1
        await asyncio.wait_for(watcher, 30)  # nobody folds: the daemon does, by the hybrid rule
        summary = seen[-1].flushed.summary.content
        assert summary.startswith("Summary of earlier conversation")
        stats = await c.stats("ext-fast", key="k")
        assert stats.flush_count == 1 and stats.token_count < 600


@pytest.mark.parametrize("backend", ["embedded", "redis"])
@pytest.mark.parametrize("seed", [1, 2])
async def test_context_promises_hold_with_external_folds(
    request: pytest.FixtureRequest, backend: str, seed: int
) -> None:
    """Random conversations on an external resource whose caller folds now and then (and
    the daemon by rule when asked): the promises a user reads stay true."""
    rng = random.Random(f"external-{seed}")
    res = MemoryResource(id="chat", model="gpt-4o", max_tokens=1200, flushing_strategy=FlushingStrategy(
        type="external", summary_tokens=200, external_timeout_s=3600))
    store = open_store(request.getfixturevalue("redis_standalone").url) if backend == "redis" else None
    project = Project(id=f"p{uuid.uuid4().hex[:10]}", resources={res.id: res}, agents={})
    async with running_server(project, store=store) as running, running.client() as c:
        checker = Checker(c, res)
        folds = 0
        for _step in range(30):
            await checker.append([message(rng, checker.budget.total) for _ in range(rng.randint(1, 3))])
            roll = rng.random()
            if roll < 0.4:
                plan = await c.plan_flush("chat", key="k")
                if plan.seqs:
                    await c.apply_flush("chat", plan.plan_token, model_summary(plan), key="k")
                    folds += 1
            elif roll < 0.5:
                await c.flush("chat", key="k")
            await checker.check(max_tokens=rng.randint(1, checker.budget.total))
        assert folds


async def test_a_plan_made_through_one_daemon_applies_through_another_sharing_redis(
    request: pytest.FixtureRequest,
) -> None:
    """No plan_token_key configured: the key is the secret the Redis keeps, so a plan made
    through one daemon applies through another one of the same Redis, and after a restart."""
    url = request.getfixturevalue("redis_standalone").url
    project = Project(id=f"x{uuid.uuid4().hex[:10]}", resources={r.id: r for r in RESOURCES}, agents={})
    async with running_server(project, store=open_store(url)) as a, a.client() as ca:
        await ca.append("chat", said(10), key="k")
        plan = await ca.plan_flush("chat", key="k")
    async with running_server(project, store=open_store(url)) as b, b.client() as cb:  # a restart, or a peer
        done = await cb.apply_flush("chat", plan.plan_token, "Folded through another daemon.", key="k")
        assert list(done.removed_seqs) == list(plan.seqs)
        await cb.append("chat", said(10), key="k2")
        plan2 = await cb.plan_flush("chat", key="k2")
        async with running_server(project, store=open_store(url)) as c, c.client() as cc:
            done2 = await cc.apply_flush("chat", plan2.plan_token, "And through a third.", key="k2")
            assert list(done2.removed_seqs) == list(plan2.seqs)
