"""Three `memoryd serve` processes on one Redis, 16 concurrent writers each on the same
instance, flushes running all along: every acknowledged message is either still stored or
was removed by exactly one applied flush (so it is in the summary), none is stored twice,
and each writer's messages keep the order it wrote them in. With history kept (the
default), every acknowledged message is in the HISTORY view exactly once, at its seq,
folded exactly when a fold removed it, in each writer's order. On standalone and Cluster.

Folds are made by ``FOLDERS`` (one call: the seqs it folded, or None when it applied
nothing): the rule-based fold alone, and rule-based and external (PlanFlush/ApplyFlush through
another daemon) folds racing."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import pytest
from memoryd_client import AbortedError, AsyncMemoryClient, pb

from memoryd.keys import InstanceAddr
from memoryd.store.url import open_store
from tests.support import daemon_process, free_port, wait_serving

DAEMONS = 3
WRITERS = 16
APPENDS_PER_WRITER = 20
KEY = "shared-conversation"

PROJECT = """\
project: {project}
memories:
  - id: shared
    max_tokens: 1000000          # no background flush: every flush is an explicit, observed one
    flushing_strategy:
      type: hybrid_summary
      summarize_oldest_percent: 40
      summary_tokens: 80
"""


EXTERNAL_APPLIED: list[int] = []  # folds applied by external_fold, for the check that some were

Folder = Callable[[Sequence[AsyncMemoryClient], int], Awaitable[Sequence[int] | None]]


async def rule_based_fold(clients: Sequence[AsyncMemoryClient], d: int) -> Sequence[int] | None:
    """Daemon ``d``'s own fold (Flush: the rule-based summary) under the instance lock."""
    resp = await clients[d].flush("shared", key=KEY)
    return list(resp.removed_seqs) if resp.applied else None


async def external_fold(clients: Sequence[AsyncMemoryClient], d: int) -> Sequence[int] | None:
    """A fold whose summary the caller writes: PlanFlush through daemon ``d``, the "model"
    writes while the appends go on, ApplyFlush through the next daemon (the plan token is
    keyed by the secret the Redis keeps, so any daemon verifies it)."""
    plan = await clients[d].plan_flush("shared", key=KEY)
    if not plan.seqs:
        return None
    await asyncio.sleep(0)  # the model call: other tasks append meanwhile
    summary = f"Folded #{plan.seqs[0]}-#{plan.seqs[-1]}."
    done = await clients[(d + 1) % len(clients)].apply_flush("shared", plan.plan_token, summary, key=KEY)
    assert list(done.removed_seqs) == list(plan.seqs), "an applied plan folds exactly its seqs"
    EXTERNAL_APPLIED.append(len(plan.seqs))
    return list(done.removed_seqs)


async def either_fold(clients: Sequence[AsyncMemoryClient], d: int) -> Sequence[int] | None:
    """Rule-based and external folds racing each other: daemon 0 folds by rule, the others externally."""
    return await (rule_based_fold if d == 0 else external_fold)(clients, d)


FOLDERS: dict[str, Folder] = {"rule-based": rule_based_fold, "rule-based+external": either_fold}


def assert_history_lossless(history: Sequence[pb.Message], acked: dict[str, int], order: dict[str, list[int]],
                            removed: Sequence[int]) -> None:
    """Every acknowledged message in HISTORY exactly once, at its seq, byte for byte; folded
    exactly when a fold removed it; HISTORY oldest first, so each writer's order is kept."""
    seqs = [m.seq for m in history]
    assert seqs == sorted(set(seqs)), "HISTORY out of order, or a seq twice"
    by_seq = {m.seq: m for m in history}
    twice = [c for c, n in Counter(m.content for m in history).items() if n > 1]
    assert not twice, f"in history twice: {[(m.seq, m.content, m.folded) for m in history if m.content in twice]}"
    folded = set(removed)
    for content, seq in acked.items():
        assert seq in by_seq, f"{content} (seq {seq}) lost from history"
        assert by_seq[seq].content == content and by_seq[seq].folded == (seq in folded)
    assert len(history) == len(acked)
    position = {m.seq: i for i, m in enumerate(history)}
    for name, writer_seqs in order.items():
        assert [position[s] for s in writer_seqs] == sorted(position[s] for s in writer_seqs), name


@pytest.mark.parametrize("folding", sorted(FOLDERS))
@pytest.mark.parametrize("deployment", ["standalone", "cluster"])
async def test_three_daemons_lose_nothing_duplicate_nothing_keep_order(
    deployment: str, folding: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    fold = FOLDERS[folding]
    EXTERNAL_APPLIED.clear()
    url = str(request.getfixturevalue(f"redis_{deployment}").url)
    config = tmp_path / "memoryd.yaml"
    project = f"chaos-{folding.replace('+', '-')}"  # each run its own instance on the session's Redis
    config.write_text(PROJECT.format(project=project))
    apis = [f"127.0.0.1:{free_port()}" for _ in range(DAEMONS)]
    with contextlib.ExitStack() as stack:
        for api in apis:
            stack.enter_context(daemon_process("--listen", api, "--config", str(config), "--redis-url", url))
        for api in apis:
            await asyncio.to_thread(wait_serving, api, "memoryd.v1.MemoryService", 60.0)
        clients = [AsyncMemoryClient(api, timeout=30.0) for api in apis]
        acked: dict[str, int] = {}  # content -> seq
        order: dict[str, list[int]] = {}  # writer -> seqs in the order it wrote
        removed: list[int] = []
        writing = True

        async def writer(d: int, w: int) -> None:
            name = f"d{d}w{w}"
            seqs = order.setdefault(name, [])
            for i in range(APPENDS_PER_WRITER):
                content = f"{name}-{i}"
                resp = await clients[d].append("shared", [{"role": "user", "content": content}], key=KEY)
                seq = resp.results[0].seq
                acked[content] = seq
                seqs.append(seq)

        async def flusher(d: int) -> int:
            applied = 0
            while writing:
                try:
                    folded = await fold(clients, d)
                except AbortedError:
                    continue  # another daemon holds the instance lock (or folded since the plan)
                if folded is not None:
                    applied += 1
                    removed.extend(folded)
                await asyncio.sleep(0.01)  # flush cadence
            return applied

        flushers = [asyncio.create_task(flusher(d)) for d in range(DAEMONS)]
        await asyncio.gather(*(writer(d, w) for d in range(DAEMONS) for w in range(WRITERS)))
        writing = False
        applied = sum(await asyncio.gather(*flushers))
        # One more of each kind, after the last append: an external fold that lost every race
        # under load (a rule-based fold came between its plan and its apply) applies here.
        for d in sorted({1 % DAEMONS, 0}, reverse=True):
            final = await fold(clients, d)
            if final is not None:
                applied += 1
                removed.extend(final)

        stored = [m async for m in clients[1].read("shared", key=KEY, view="raw")]
        history = [m async for m in clients[0].read("shared", key=KEY, view="history", chunk_size=100)]
        stats = await clients[2].stats("shared", key=KEY)
        for c in clients:
            await c.close()

    assert applied >= 3, "flushes must have run during the writes"
    assert ("external" not in folding) or EXTERNAL_APPLIED, "external folds must have applied"
    assert len(acked) == DAEMONS * WRITERS * APPENDS_PER_WRITER
    stored_seqs = [m.seq for m in stored]
    assert len(set(stored_seqs)) == len(stored_seqs)
    assert Counter(m.content for m in stored).most_common(1)[0][1] == 1, "a message is stored twice"
    assert not [s for s, n in Counter(removed).items() if n > 1], "a message was flushed twice"
    assert not set(removed) & set(stored_seqs)
    by_seq = {m.seq: m.content for m in stored}
    for content, seq in acked.items():
        assert seq in by_seq or seq in removed, f"{content} (seq {seq}) lost"
        if seq in by_seq:
            assert by_seq[seq] == content
    assert len(set(acked.values())) == len(acked)  # no seq acknowledged twice
    for name, seqs in order.items():
        assert seqs == sorted(seqs), f"writer {name} out of order"
    assert stats.message_count == len(stored)
    assert_history_lossless(history, acked, order, removed)
    assert stats.history_messages == len(removed) and stats.history_dropped == 0

    store = open_store(url)  # the summary covers everything flushed
    await store.start()
    try:
        state = await store.state(InstanceAddr(project, "shared", KEY))
        assert state.summary is not None and state.summary.through_seq >= max(removed)
        assert state.meta.flush_count == applied
    finally:
        await store.close()
