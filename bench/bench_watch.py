"""Idle Watch streams: what 200 watchers that never read cost the daemon.

    .venv/bin/python bench/bench_watch.py [--store redis|embedded] [--watchers 200] [--n 1000]

Starts ``memoryd serve`` as a process and measures the append p50 with no watcher; then
with WATCHERS idle Watch streams of other instances; then with WATCHERS idle Watch
streams of the instance being appended to, before and after appending 10,000 x 430 B
(enough to fill their clients' HTTP/2 windows). Each watcher has its own channel and
reads the first event, so the daemon is known to hold it, then never reads again.
Prints the daemon's RSS (from /proc) at each step as a Markdown table; bench/README.md
keeps the latest one. Not a test: nothing asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from memoryd_client import pb  # noqa: E402
from memoryd_client.v1 import memory_pb2_grpc as pb_grpc  # noqa: E402

from tests.redis_servers import start_standalone  # noqa: E402
from tests.support import free_port, wait_serving  # noqa: E402

PROJECT = """
project: bench
memories:
  - id: archive
    max_tokens: 100000000
    model: gpt-4o
"""
CONTENT = "The customer reports that the parcel with order number 12345 has not arrived yet; " * 5  # ~430 B
BULK = 10_000  # messages appended while the watchers sit idle (in batches of 500)


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def spawn(cmd: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def pct(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


async def append_p50(stub: pb_grpc.MemoryServiceStub, key: str, n: int) -> float:
    req = pb.AppendRequest(ref=pb.MemoryRef(memory_id="archive", key=key),
                           messages=[pb.Message(role=pb.ROLE_USER, content=CONTENT)])
    lat = []
    for _ in range(n):
        t0 = time.perf_counter()
        await stub.Append(req)
        lat.append(time.perf_counter() - t0)
    return pct(lat, 50)


async def bench(store: str, watchers: int, n: int) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        redis_proc = start_standalone(Path(tmp) / "redis") if store == "redis" else None
        config = Path(tmp) / "memoryd.yaml"
        config.write_text(PROJECT)
        api = f"127.0.0.1:{free_port()}"
        args = [sys.executable, "-m", "memoryd", "serve", "--listen", api, "--config", str(config),
                "--max-watchers", str(max(watchers, 1))]
        if redis_proc is not None:
            args += ["--redis-url", redis_proc.url]
        daemon = spawn(args)
        channels: list[grpc.aio.Channel] = []
        try:
            wait_serving(api, "memoryd.v1.MemoryService")
            writer_ch = grpc.aio.insecure_channel(api)
            channels.append(writer_ch)
            writer = pb_grpc.MemoryServiceStub(writer_ch)
            await append_p50(writer, "warm", 200)
            rows.append(("daemon RSS, started and warmed", f"{rss_mib(daemon.pid):.0f} MiB"))
            base = await append_p50(writer, "w", n)
            rows.append(("append p50, no watcher", f"{base * 1e3:.2f} ms"))

            async def open_watchers(keys: list[str]) -> list[Any]:
                calls = []
                for key in keys:
                    ch = grpc.aio.insecure_channel(api)
                    channels.append(ch)
                    calls.append(pb_grpc.MemoryServiceStub(ch).Watch(
                        pb.WatchRequest(ref=pb.MemoryRef(memory_id="archive", key=key))))
                for call in calls:  # the first event: the daemon holds the stream; never read again
                    await call.read()
                return calls

            # 1. idle watchers of other instances (nothing happens to what they watch)
            keys = [f"idle-{i}" for i in range(watchers)]
            for key in keys:
                await writer.Append(pb.AppendRequest(ref=pb.MemoryRef(memory_id="archive", key=key),
                                                     messages=[pb.Message(role=pb.ROLE_USER, content=CONTENT)]))
            calls = await open_watchers(keys)
            rows.append((f"daemon RSS, {watchers} idle watchers of other instances open",
                         f"{rss_mib(daemon.pid):.0f} MiB"))
            other = await append_p50(writer, "w", n)
            rows.append((f"append p50, {watchers} idle watchers of other instances",
                         f"{other * 1e3:.2f} ms ({other / base:.1f}x)"))
            for call in calls:
                call.cancel()

            # 2. idle watchers of the instance being appended to
            calls = await open_watchers(["w"] * watchers)
            rows.append((f"daemon RSS, {watchers} idle watchers of the appended instance open",
                         f"{rss_mib(daemon.pid):.0f} MiB"))
            with_w = await append_p50(writer, "w", n)
            rows.append((f"append p50, {watchers} idle watchers of the appended instance",
                         f"{with_w * 1e3:.2f} ms ({with_w / base:.1f}x)"))
            batch = pb.AppendRequest(ref=pb.MemoryRef(memory_id="archive", key="w"),
                                     messages=[pb.Message(role=pb.ROLE_USER, content=CONTENT)] * 500)
            t0 = time.perf_counter()
            for _ in range(BULK // 500):
                await writer.Append(batch)
            bulk_s = time.perf_counter() - t0
            rows.append((f"{BULK:,} x 430 B appended in batches of 500 while they sit idle",
                         f"{bulk_s:.2f} s"))
            after = await append_p50(writer, "w", n)
            rows.append(("append p50 right after that, watchers still idle",
                         f"{after * 1e3:.2f} ms ({after / base:.1f}x)"))
            rows.append(("daemon RSS after that", f"{rss_mib(daemon.pid):.0f} MiB"))
            for call in calls:
                call.cancel()
        finally:
            for ch in channels:
                await ch.close()
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(30)
            if redis_proc is not None:
                redis_proc.stop()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--store", choices=["redis", "embedded"], default="redis")
    parser.add_argument("--watchers", type=int, default=200)
    parser.add_argument("--n", type=int, default=1000)
    a = parser.parse_args()
    rows = asyncio.run(bench(a.store, a.watchers, a.n))
    print(f"store: {a.store}, pid {os.getpid()}")
    print("| measure | value |")
    print("|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    main()
