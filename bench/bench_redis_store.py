"""RedisStore latency and throughput next to a raw redis-py floor measured in the same run.

Floor: one EVALSHA of an equivalent trivial script (XADD one entry + HINCRBY a counter on
the same hash tag) through redis-py asyncio with hiredis, in this process. The store adds
its breaker, timeout, pool bound, idempotency record, counters, TTL refresh and decoding.

    PYTHONPATH=. .venv/bin/python bench/bench_redis_store.py            # starts its own redis-server
    PYTHONPATH=. .venv/bin/python bench/bench_redis_store.py --url redis://127.0.0.1:6379/0 --n 3000

Prints markdown tables (bench/README.md, "Redis store"). Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from memoryd.config.model import CircuitBreaker
from memoryd.keys import InstanceAddr
from memoryd.models import NewMessage, StoredMessage
from memoryd.store.redis import RedisStore, codec
from memoryd.store.url import open_store

CONTENT = ("The customer asked about the refund policy for annual plans; the agent explained the "
           "30-day window, the pro-rata rule after it, and offered to open a ticket. ") * 3  # ~430 B

FLOOR_SCRIPT = """
redis.call('XADD', KEYS[1], '*', 'd', ARGV[1])
return redis.call('HINCRBY', KEYS[2], 'n', 1)
"""


def message(i: int) -> NewMessage:
    return NewMessage(role="user", content=f"{i} {CONTENT}", content_type="text", priority=None,
                      effective_priority=5, token_count=90)


def pct(samples: list[float], p: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


async def timed(op: Callable[[int], Awaitable[Any]], n: int, warmup: int = 200) -> list[float]:
    for i in range(warmup):
        await op(-i - 1)
    out = []
    for i in range(n):
        t = time.perf_counter()
        await op(i)
        out.append((time.perf_counter() - t) * 1000)
    return out


async def throughput(op: Callable[[int], Awaitable[Any]], n: int, concurrency: int) -> float:
    counter = iter(range(n))

    async def worker() -> None:
        for i in counter:
            await op(i)

    t = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return n / (time.perf_counter() - t)


def row(name: str, samples: list[float], floor: list[float] | None) -> str:
    p50, p99 = statistics.median(samples), pct(samples, 99)
    ratio = f"{p50 / statistics.median(floor):.2f}× / {p99 / pct(floor, 99):.2f}×" if floor else "1.00× / 1.00×"
    return f"| {name} | {p50:.3f} | {p99:.3f} | {ratio} |"


async def run(url: str, n: int) -> None:
    store = open_store(url, breaker=CircuitBreaker(timeout_s=2.0))
    assert isinstance(store, RedisStore)
    await store.start()
    raw = Redis.from_url(url)
    floor_script = raw.register_script(FLOOR_SCRIPT)
    tag = "{bench-" + uuid.uuid4().hex[:8] + "}"
    blob = json.dumps(["id", "user", CONTENT, "text", None, {}])
    addr = InstanceAddr("bench", "res", f"append-{uuid.uuid4().hex}")

    async def floor_append(i: int) -> None:
        await floor_script(keys=[f"{tag}:s", f"{tag}:m"], args=[blob])

    async def store_append(i: int) -> None:
        await store.append(addr, [message(i)], ttl_ms=3_600_000)

    async def store_append_keyed(i: int) -> None:
        await store.append(addr, [message(i)], ttl_ms=3_600_000, idempotency_key=f"bench-{i}-{time.monotonic()}")

    print(f"hiredis parser: {store.parser}; Redis at {store.settings.redacted()}; n={n}\n")
    print("### Latency, one caller (ms)\n")
    print("| operation | p50 | p99 | ratio to floor (p50 / p99) |")
    print("|---|---|---|---|")
    floor = await timed(floor_append, n)
    print(row("floor: raw redis-py EVALSHA (XADD + HINCRBY)", floor, None))
    print(row("store.append, 1 message", await timed(store_append, n), floor))
    print(row("store.append, 1 message, caller idempotency key", await timed(store_append_keyed, n), floor))
    await store.clear(addr)

    read_addr = InstanceAddr("bench", "res", f"read-{uuid.uuid4().hex}")
    for start in range(0, 1000, 100):
        await store.append(read_addr, [message(i) for i in range(start, start + 100)])
    raw_key = f"memoryd:v1:{read_addr.hash_tag}:bench:res:msgs"
    dict_client = Redis.from_url(url)  # redis-py's own XRANGE parsing (a dict per entry)

    async def floor_read(i: int) -> None:
        await dict_client.xrange(raw_key, count=100)

    async def floor_read_all(i: int) -> None:
        await dict_client.xrange(raw_key)

    # Decoding is measured on a store without a read cache; the cached rows use the store
    # that appended the messages (it keeps what it appended, and re-validates per read).
    uncached = RedisStore(store.settings, breaker=CircuitBreaker(timeout_s=2.0), read_cache_messages=0)
    await uncached.start()

    async def store_read(i: int) -> None:
        await uncached.read(read_addr, limit=100)

    async def store_read_all(i: int) -> None:
        await uncached.read(read_addr)

    async def store_state(i: int) -> None:
        await uncached.state(read_addr)

    async def cached_read_all(i: int) -> None:
        await store.read(read_addr)

    async def cached_state(i: int) -> None:
        await store.state(read_addr)

    reads = max(200, n // 5)
    f100 = await timed(floor_read, reads, 50)
    print(row("floor: raw redis-py XRANGE 100 entries", f100, None))
    print(row("store.read 100 messages (decoded, no cache)", await timed(store_read, reads, 50), f100))
    f1000 = await timed(floor_read_all, reads // 4, 20)
    print(row("floor: raw redis-py XRANGE 1,000 entries", f1000, None))
    print(row("store.read 1,000 messages (decoded, no cache)", await timed(store_read_all, reads // 4, 20), f1000))
    print(row("store.state 1,000 messages (meta + summary + messages, no cache)",
              await timed(store_state, reads // 4, 20), f1000))
    print(row("store.read 1,000 messages (read cache, re-validated)", await timed(cached_read_all, reads, 20),
              f1000))
    print(row("store.state 1,000 messages (read cache, re-validated)", await timed(cached_state, reads, 20),
              f1000))
    await uncached.close()
    await store.clear(read_addr)

    print("\n### Throughput (appends/s)\n")
    print("| callers | floor EVALSHA/s | store.append/s | ratio |")
    print("|---|---|---|---|")
    for conc in (1, 16):
        f = await throughput(floor_append, n, conc)
        s = await throughput(store_append, n, conc)
        print(f"| {conc} | {f:,.0f} | {s:,.0f} | {s / f:.2f} |")
    await store.clear(addr)
    await raw.delete(f"{tag}:s", f"{tag}:m")

    await encoding_table(url)
    await store.close()
    await raw.aclose()
    await dict_client.aclose()


async def encoding_table(url: str, entries: int = 10_000) -> None:
    """XRANGE of 10,000 entries decoded to StoredMessage, for three encodings of a stream entry."""
    r = Redis.from_url(url)
    ident = Redis.from_url(url)
    ident.set_response_callback("XRANGE", lambda resp, **kw: resp)
    a, b = f"bench-enc-a-{uuid.uuid4().hex}", f"bench-enc-b-{uuid.uuid4().hex}"
    pipe = r.pipeline(transaction=False)
    for i in range(1, entries + 1):
        mid = f"{i:028x}"
        pipe.xadd(a, {"t": 90, "p": 5, "c": 1732181234567, "i": mid, "r": "user", "x": CONTENT, "y": "text",
                      "q": "", "m": ""}, id=f"{i}-0")
        blob = json.dumps([mid, "user", CONTENT, "text", None, {}], separators=(",", ":"))
        pipe.xadd(b, {"t": 90, "p": 5, "c": 1732181234567, "d": blob}, id=f"{i}-0")
    await pipe.execute()

    def fields_raw(rows: Any) -> None:
        for row in rows:
            codec.decode_entry(row)

    def blob_raw(rows: Any) -> None:
        for eid, f in rows:
            mid, role, content, ctype, prio, meta = json.loads(f[7])
            StoredMessage(seq=int(eid[:-2]), id=mid, role=role, content=content, content_type=ctype, priority=prio,
                          effective_priority=int(f[3]), token_count=int(f[1]), created_at_ms=int(f[5]), metadata=meta)

    def fields_dict(rows: Any) -> None:
        for eid, f in rows:
            q, m = f[b"q"], f[b"m"]
            StoredMessage(seq=int(eid[:-2]), id=f[b"i"].decode(), role=f[b"r"].decode(), content=f[b"x"].decode(),
                          content_type=f[b"y"].decode(), priority=int(q) if q else None,
                          effective_priority=int(f[b"p"]), token_count=int(f[b"t"]), created_at_ms=int(f[b"c"]),
                          metadata=json.loads(m) if m else {})

    print(f"\n### Stream entry encoding: XRANGE of {entries:,} entries to StoredMessage (ms, median of 7)\n")
    print("| encoding | reply handling | ms |")
    print("|---|---|---|")
    for name, client, key, decode in (
        ("one field per attribute, metadata JSON only when set (memoryd)", ident, a, fields_raw),
        ("t, p, c + one JSON blob with the rest", ident, b, blob_raw),
        ("one field per attribute", r, a, fields_dict),
    ):
        parse = "hiredis, list as parsed" if client is ident else "hiredis + redis-py's dict-per-entry callback"
        samples = []
        for _ in range(7):
            t = time.perf_counter()
            decode(await client.xrange(key))
            samples.append((time.perf_counter() - t) * 1000)
        print(f"| {name} | {parse} | {statistics.median(samples):.1f} |")
    await r.delete(a, b)
    await r.aclose()
    await ident.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", help="a Redis URL (default: start a throw-away redis-server)")
    parser.add_argument("--n", type=int, default=3000, help="samples per latency row")
    args = parser.parse_args()
    if args.url:
        asyncio.run(run(args.url, args.n))
        return
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.redis_servers import start_standalone

    server = start_standalone(Path(tempfile.mkdtemp(prefix="memoryd-bench-")))
    try:
        asyncio.run(run(server.url, args.n))
    finally:
        server.stop()


if __name__ == "__main__":
    main()
