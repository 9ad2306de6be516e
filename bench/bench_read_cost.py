"""What a CONTEXT read costs as an instance grows (issue 19, item 4): 1,000 / 100,000 /
1,000,000 live messages, and 1,000 live messages in front of 1,000,000 of history, on the
embedded store and on Redis, side by side in one run.

Reads go through the real gRPC API (an in-process daemon and the Python client, one caller,
a 4,000-token budget, a pinned system prompt and ~430-byte messages of 90 tokens). Data is
loaded straight into the stores (a Lua loop on Redis, batched store appends on the
embedded store), not through the API. Beside them, in the same process:

* floor: raw redis-py XREVRANGE of 64 entries of the same stream (what the read needs from
  Redis at the least, without the daemon);
* before: the whole-state read this change replaced (``store.state`` + ``context_view``)
  at 1,000 and 100,000 messages (a few samples: it takes up to a second).

    PYTHONPATH=. .venv/bin/python bench/bench_read_cost.py [--n 300] [--sizes 1000,100000,1000000]

Starts its own redis-server on a free port (a 1,000,000-message instance takes ~0.6 GB) and
stops it. Prints a Markdown table (bench/README.md, "Read cost"). Not a test: nothing asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from redis.asyncio import Redis  # noqa: E402

from memoryd.config.model import CircuitBreaker, MemoryResource, Project  # noqa: E402
from memoryd.engine import context_view  # noqa: E402
from memoryd.manager import MemoryManager  # noqa: E402
from memoryd.models import FlushPlan, HistoryPolicy, NewMessage, RefSpec  # noqa: E402
from memoryd.settings import Settings  # noqa: E402
from memoryd.store.base import MemoryStore  # noqa: E402
from memoryd.store.embedded import EmbeddedStore  # noqa: E402
from memoryd.store.redis.layout import InstanceKeys  # noqa: E402
from memoryd.store.url import open_store  # noqa: E402
from tests.redis_servers import start_standalone  # noqa: E402
from tests.support import running_server  # noqa: E402

CONTENT = "The customer reports that the parcel with order number 12345 has not arrived yet; " * 5  # ~430 B
TOKENS, PROMPT_TOKENS = 90, 40
RESOURCE = MemoryResource(id="chat", max_tokens=4000, model="gpt-4o")
PROJECT = Project(id="bench", resources={RESOURCE.id: RESOURCE}, agents={})
CHUNK = 20_000
FOLD_CHUNK = 10_000  # seqs per apply_flush when folding the history rows' messages

# Writes entries ARGV[1] .. ARGV[1] + ARGV[2] - 1 of KEYS[1] in memoryd's entry format
# (layout.ENTRY_FIELDS); entry 1 of a live stream is the pinned system prompt.
LOAD = """
local first, n = tonumber(ARGV[1]), tonumber(ARGV[2])
for seq = first, first + n - 1 do
  local prompt = ARGV[4] == '1' and seq == 1
  redis.call('XADD', KEYS[1], string.format('%d-0', seq),
    't', prompt and ARGV[5] or ARGV[6], 'p', prompt and '0' or '5', 'c', '1767225600000',
    'i', string.format('bench%012x', seq), 'r', prompt and 'system' or 'user', 'x', ARGV[3], 'y', 'text',
    'q', '', 'm', '', 'k', '')
end
return n
"""


def pct(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


async def timed(fn: Callable[[], Awaitable[object]], n: int, warmup: int = 20) -> list[float]:
    for _ in range(warmup):
        await fn()
    out = []
    for _ in range(n):
        t = time.perf_counter()
        await fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


async def load_redis(url: str, keys: InstanceKeys, live: int) -> None:
    r = Redis.from_url(url)
    load = r.register_script(LOAD)
    for first in range(1, live + 1, CHUNK):
        await load(keys=[keys.msgs], args=[first, min(CHUNK, live - first + 1), CONTENT, "1", PROMPT_TOKENS, TOKENS])
    await r.hset(keys.meta, mapping={
        "message_count": live, "pinned_tokens": PROMPT_TOKENS, "recent_tokens": TOKENS * (live - 1),
        "summary_tokens": 0, "last_seq": live, "flush_count": 0, "fence": 0, "epoch": uuid.uuid4().hex,
        "evicted": 0, "pins": "1", "n:0": 1, "n:5": live - 1,
    })
    await r.aclose()


async def load_embedded(store: MemoryStore, addr: Any, live: int) -> None:
    await store.append(addr, [NewMessage("system", "You are a support agent.", "text", None, 0, PROMPT_TOKENS)])
    batch = [NewMessage("user", CONTENT, "text", None, 5, TOKENS) for _ in range(CHUNK)]
    for first in range(1, live, CHUNK):
        await store.append(addr, batch[: min(CHUNK, live - first)])


ROUNDS = 5  # every case is measured in each round, in turn, so drift falls on all of them


class Case:
    """One instance on one store, loaded, with the reads to time on it."""

    def __init__(self, name: str, live: int, history: int) -> None:
        self.name, self.live, self.history = name, live, history
        self.key = f"read-cost-{uuid.uuid4().hex}"
        self.samples: dict[str, list[float]] = {"read": [], "inproc": [], "floor": [], "before": []}
        self.view = 0

    async def load(self, store: MemoryStore, url: str | None) -> None:
        self.store = store
        self.manager = MemoryManager(PROJECT, store, Settings())
        self.target = self.manager.resolve(RefSpec(memory_id=RESOURCE.id, key=self.key, agent_id=None, context={}))
        self.keys = InstanceKeys.of(self.target.addr)
        if url is not None:
            await load_redis(url, self.keys, self.live + self.history)
            self.raw: Redis | None = Redis.from_url(url)
        else:
            await load_embedded(store, self.target.addr, self.live + self.history)
            self.raw = None
        if self.history:  # folded by the stores' own apply_flush, as a flush does: into history
            async with store.lock(self.target.addr, ttl_ms=600_000, acquire_timeout_s=5) as lease:
                for first in range(2, self.history + 2, FOLD_CHUNK):
                    seqs = tuple(range(first, min(first + FOLD_CHUNK, self.history + 2)))
                    await store.apply_flush(self.target.addr, FlushPlan("hybrid_summary", seqs, None, 0, 0),
                                            fence=lease.fence, history=HistoryPolicy(keep=True, max_messages=0))

    async def round(self, client: Any, n: int) -> None:
        async def read() -> None:
            await client.read_all(RESOURCE.id, key=self.key, view="context")

        async def inproc() -> None:
            await self.manager.read_context(self.target, max_tokens=0)

        self.view = len(await client.read_all(RESOURCE.id, key=self.key, view="context"))
        self.samples["read"] += await timed(read, n, warmup=5)
        self.samples["inproc"] += await timed(inproc, n, warmup=5)
        if self.raw is not None:
            raw, msgs = self.raw, self.keys.msgs

            async def floor() -> None:
                await raw.xrevrange(msgs, count=64)

            self.samples["floor"] += await timed(floor, n, warmup=5)
        if self.live <= 100_000 and self.history == 0:
            rt = self.target.runtime

            async def before() -> None:
                state = await self.store.state(self.target.addr)
                await asyncio.to_thread(context_view, state, rt.budget, None, "system", rt.counter.count_message)

            self.samples["before"] += await timed(before, 1 if self.live > 1000 else n, warmup=1)
        gc.collect()


async def run(url: str, n: int, sizes: list[int]) -> None:
    shapes = [(s, 0) for s in sizes] + [(1000, 1_000_000)]
    cases: list[Case] = []
    for name in ("embedded", "redis"):
        store: MemoryStore = EmbeddedStore() if name == "embedded" else open_store(
            url, breaker=CircuitBreaker(timeout_s=2.0, bulk_timeout_s=60.0))
        await store.start()
        mine = [Case(name, live, history) for live, history in shapes]
        for case in mine:
            t = time.perf_counter()
            await case.load(store, None if name == "embedded" else url)
            print(f"# loaded {name} {case.live:,} live + {case.history:,} history in "
                  f"{time.perf_counter() - t:.1f} s", file=sys.stderr)
        async with running_server(PROJECT, store) as server:  # stopping it closes the store
            client = server.client()
            try:
                for r in range(ROUNDS):
                    for case in mine:
                        await case.round(client, max(1, n // ROUNDS))
                    print(f"# {name}: round {r + 1} of {ROUNDS}", file=sys.stderr)
            finally:
                await client.close()
            for case in mine:
                await store.clear(case.target.addr)
                if case.raw is not None:
                    await case.raw.aclose()
        cases += mine

    def p50(xs: list[float], fmt: str = "{:.3f}") -> str:
        return fmt.format(statistics.median(xs)) if xs else "—"

    print(f"CONTEXT read of a 4,000-token budget, one caller, {n} samples per row in {ROUNDS} interleaved "
          "rounds (ms)\n")
    print("| store | live messages | history | messages in view | API p50 | API p99 | API p50 ÷ at 1,000 | "
          "in process p50 | in process p50 ÷ at 1,000 | floor: XREVRANGE 64 p50 | before: state() + context_view, "
          "in process p50 (read cache on) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    base = {c.name: c for c in cases if c.live == 1000 and not c.history}
    for c in cases:
        read, inproc, b = c.samples["read"], c.samples["inproc"], base[c.name].samples
        print(f"| {c.name} | {c.live:,} | {c.history:,} | {c.view} | {p50(read)} | {pct(read, 99):.3f} | "
              f"{statistics.median(read) / statistics.median(b['read']):.2f}× | {p50(inproc)} | "
              f"{statistics.median(inproc) / statistics.median(b['inproc']):.2f}× | {p50(c.samples['floor'])} | "
              f"{p50(c.samples['before'], '{:.1f}')} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=300, help="samples per row")
    parser.add_argument("--sizes", default="1000,100000,1000000", help="live messages per instance")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    server = start_standalone(Path(tempfile.mkdtemp(prefix="memoryd-bench-")))
    try:
        asyncio.run(run(server.url, args.n, sizes))
    finally:
        server.stop()


if __name__ == "__main__":
    main()
