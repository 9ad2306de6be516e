"""Three `memoryd serve` processes on one Redis, 16 concurrent writers each on the same
instance, flushes running all along: every acknowledged message is either still stored or
was removed by exactly one applied flush (so it is in the summary), none is stored twice,
and each writer's messages keep the order it wrote them in. On standalone and Cluster."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from pathlib import Path

import pytest
from memoryd_client import AbortedError, AsyncMemoryClient

from memoryd.keys import InstanceAddr
from memoryd.store.url import open_store
from tests.support import daemon_process, free_port, wait_serving

DAEMONS = 3
WRITERS = 16
APPENDS_PER_WRITER = 20
KEY = "shared-conversation"

PROJECT = """\
project: chaos
memories:
  - id: shared
    max_tokens: 1000000          # no background flush: every flush is an explicit, observed one
    flushing_strategy:
      type: hybrid_summary
      summarize_oldest_percent: 40
      summary_tokens: 80
"""


@pytest.mark.parametrize("deployment", ["standalone", "cluster"])
async def test_three_daemons_lose_nothing_duplicate_nothing_keep_order(
    deployment: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    url = str(request.getfixturevalue(f"redis_{deployment}").url)
    config = tmp_path / "memoryd.yaml"
    config.write_text(PROJECT)
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
                    resp = await clients[d].flush("shared", key=KEY)
                except AbortedError:
                    continue  # another daemon holds the instance lock
                if resp.applied:
                    applied += 1
                    removed.extend(resp.removed_seqs)
                await asyncio.sleep(0.01)  # flush cadence
            return applied

        flushers = [asyncio.create_task(flusher(d)) for d in range(DAEMONS)]
        await asyncio.gather(*(writer(d, w) for d in range(DAEMONS) for w in range(WRITERS)))
        writing = False
        applied = sum(await asyncio.gather(*flushers))
        final = await clients[0].flush("shared", key=KEY)  # one more, after the last append
        if final.applied:
            applied += 1
            removed.extend(final.removed_seqs)

        stored = [m async for m in clients[1].read("shared", key=KEY, view="raw")]
        stats = await clients[2].stats("shared", key=KEY)
        for c in clients:
            await c.close()

    assert applied >= 3, "flushes must have run during the writes"
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

    store = open_store(url)  # the summary covers everything flushed
    await store.start()
    try:
        state = await store.state(InstanceAddr("chaos", "shared", KEY))
        assert state.summary is not None and state.summary.through_seq >= max(removed)
        assert state.meta.flush_count == applied
    finally:
        await store.close()
