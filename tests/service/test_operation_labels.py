"""The ``operation`` label values docs/observability.md lists are exactly the ones the daemon emits.

Every RPC is called once through the Python client against a real server, a background
flush is provoked, and /metrics is scraped over HTTP.
"""

from __future__ import annotations

import asyncio
import re
import time

import pytest
from memoryd_client import Agent, MemorydClientError

from tests.service.test_metrics_scrape import scrape
from tests.support import REPO, running_server

MEM = "default"  # the default resource: 8,000 tokens, folds at 80 %
OPERATION_METRIC = "memoryd_operation_duration_seconds_count"


def documented_operations() -> set[str]:
    text = (REPO / "docs" / "observability.md").read_text()
    row = next(line for line in text.splitlines() if line.startswith("| `memoryd_operation_duration_seconds`"))
    meaning = row.split("|")[4]  # | metric | type | labels | meaning |
    return set(re.findall(r"`([a-z_]+)`", meaning))


async def emitted_operations(port: int) -> set[str]:
    _, samples = await scrape(port)
    return {dict(labels)["operation"] for name, labels in samples if name == OPERATION_METRIC}


async def test_documented_operation_labels_are_the_emitted_ones() -> None:
    async with running_server(metrics_listen="127.0.0.1:0") as srv, srv.client() as c:
        port = srv.server.ports["metrics"]
        words = " ".join(f"fact{i}" for i in range(400))
        for i in range(20):  # ~8,000+ tokens: crosses the threshold, a background flush runs
            await c.append(MEM, [{"role": "user", "content": f"{i} {words}"}], key="k")
        await c.read_all(MEM, key="k")
        await c.stats(MEM, key="k")
        await c.health(MEM, key="k")
        await c.flush(MEM, key="k", dry_run=True)
        await c.list_resources()
        with pytest.raises(MemorydClientError):
            await c.resolve_agent(Agent("no-such-agent"))
        async for _ in c.watch(MEM, key="k"):
            break
        await c.clear(MEM, key="k")
        await c.end_workflow("wf-1")
        deadline = time.monotonic() + 15
        while "background_flush" not in (seen := await emitted_operations(port)):
            assert time.monotonic() < deadline, f"no background flush was recorded: {seen}"
            await asyncio.sleep(0.05)  # polling a scrape, not synchronisation
    assert seen == documented_operations()
