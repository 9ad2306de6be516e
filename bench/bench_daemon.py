"""memoryd end to end: append/read latency and throughput through the daemon, against a
floor measured in the same run (a bare grpc.aio unary call doing one EVALSHA).

    .venv/bin/python bench/bench_daemon.py [--store redis|embedded] [--n 2000]
    .venv/bin/python bench/bench_daemon.py --tracing [--before DIR]   # tracing off vs on

Client, daemon, floor server and redis-server all share this machine; floor and daemon
are measured alternately, in rounds, so that drift falls on both. Prints a Markdown
table; bench/README.md keeps the latest one. Not a test: nothing asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from memoryd_client import AsyncMemoryClient, pb  # noqa: E402
from memoryd_client.v1 import memory_pb2_grpc as pb_grpc  # noqa: E402

from tests.redis_servers import start_standalone  # noqa: E402
from tests.support import free_port, wait_serving  # noqa: E402

PROJECT = """
project: bench
memories:
  - id: chat
    max_tokens: 4000
    model: gpt-4o
  - id: archive
    max_tokens: 100000000
    model: gpt-4o
"""
CONTENT = "The customer reports that the parcel with order number 12345 has not arrived yet; " * 5  # ~430 B


ROUNDS = 5  # floor and daemon measured alternately, this many times
THROUGHPUT_ROUNDS = 9  # the 16-client ratio moves +-10 points between single rounds: more rounds
COLD_INSTANCES = 5  # 10,000-message instances read cold by a second daemon


def pct(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


async def timed(fn: Callable[[], Awaitable[object]], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        await fn()
        out.append(time.perf_counter() - t0)
    return out


async def timed_once(fn: Callable[[], Awaitable[object]]) -> float:
    return (await timed(fn, 1))[0]


async def throughput(make: Callable[[int], Callable[[], Awaitable[object]]], clients: int, per: int) -> float:
    calls = [make(i) for i in range(clients)]

    async def run(fn: Callable[[], Awaitable[object]]) -> None:
        for _ in range(per):
            await fn()

    t0 = time.perf_counter()
    await asyncio.gather(*(run(fn) for fn in calls))
    return clients * per / (time.perf_counter() - t0)


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process, all its threads (from /proc; Linux only)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def spawn(cmd: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(cmd, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)


async def bench(store: str, n: int, simple_floor: bool = False) -> list[tuple[str, str, str, str]]:
    rows: list[tuple[str, str, str, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        redis_proc = start_standalone(Path(tmp) / "redis")
        config = Path(tmp) / "memoryd.yaml"
        config.write_text(PROJECT)
        api = f"127.0.0.1:{free_port()}"
        floor_addr = f"127.0.0.1:{free_port()}"
        args = [sys.executable, "-m", "memoryd", "serve", "--listen", api, "--config", str(config)]
        if store == "redis":
            args += ["--redis-url", redis_proc.url]
        daemon = spawn(args)
        floor = spawn([sys.executable, str(ROOT / "bench" / "floor_server.py"), floor_addr, redis_proc.url,
                       *(["--simple"] if simple_floor else [])])
        try:
            assert floor.stdout is not None and floor.stdout.readline().strip() == b"ready"
            wait_serving(api, "memoryd.v1.MemoryService")
            channels = [grpc.aio.insecure_channel(floor_addr) for _ in range(16)]
            floor_calls = [ch.unary_unary("/floor.Floor/Call") for ch in channels]
            payload = CONTENT.encode()

            def floor_call(i: int) -> Callable[[], Awaitable[object]]:
                return lambda: floor_calls[i](payload)

            clients = [AsyncMemoryClient(api) for _ in range(16)]
            # Appends go through the generated stub with a prebuilt request, as the floor sends
            # prebuilt bytes: the client's own Python work stays out of what is compared.
            api_channels = [grpc.aio.insecure_channel(api) for _ in range(16)]
            stubs = [pb_grpc.MemoryServiceStub(ch) for ch in api_channels]

            def append_call(i: int, key: str = "bench") -> Callable[[], Awaitable[object]]:
                req = pb.AppendRequest(ref=pb.MemoryRef(memory_id="archive", key=f"{key}-{i}"),
                                       messages=[pb.Message(role=pb.ROLE_USER, content=CONTENT)])
                return lambda: stubs[i].Append(req)

            # warm up both paths
            await timed(floor_call(0), 200)
            await timed(append_call(0, "warm"), 200)

            # Floor and daemon alternate in ROUNDS short rounds, so that the machine's drift
            # (other tenants, CPU frequency) falls on both alike.
            floor_lat: list[float] = []
            append_lat: list[float] = []
            for _round in range(ROUNDS):
                floor_lat += await timed(floor_call(0), n // ROUNDS)
                append_lat += await timed(append_call(0), n // ROUNDS)
            f50, f99 = pct(floor_lat, 50), pct(floor_lat, 99)
            a50, a99 = pct(append_lat, 50), pct(append_lat, 99)
            rows.append(("append p50 (1 client)", f"{a50 * 1e3:.2f} ms", f"{f50 * 1e3:.2f} ms", f"{a50 / f50:.2f}x"))
            rows.append(("append p99 (1 client)", f"{a99 * 1e3:.2f} ms", f"{f99 * 1e3:.2f} ms", f"{a99 / f99:.2f}x"))

            per = max(50, n // 16)
            ftps, atps, fcpu, acpu = [], [], [], []
            for _round in range(THROUGHPUT_ROUNDS):
                before = cpu_seconds(floor.pid)
                ftps.append(await throughput(floor_call, 16, per))
                fcpu.append((cpu_seconds(floor.pid) - before) / (16 * per))
                before = cpu_seconds(daemon.pid)
                atps.append(await throughput(append_call, 16, per))
                acpu.append((cpu_seconds(daemon.pid) - before) / (16 * per))
            ftp, atp = statistics.median(ftps), statistics.median(atps)
            ratio = statistics.median(a / f for a, f in zip(atps, ftps, strict=True))
            rows.append(("append throughput (16 clients), median of rounds", f"{atp:,.0f}/s", f"{ftp:,.0f}/s",
                         f"{ratio:.0%} (rounds: {min(atps) / max(ftps):.0%}-{max(atps) / min(ftps):.0%})"))
            # The server process is the bottleneck at 16 clients (one event loop): its CPU per
            # append explains the throughput ratio, with less noise than the ratio itself.
            cpu_ratio = statistics.median(a / f for a, f in zip(acpu, fcpu, strict=True))
            rows.append(("server process CPU per append (16 clients), median of rounds",
                         f"{statistics.median(acpu) * 1e6:.0f} us", f"{statistics.median(fcpu) * 1e6:.0f} us",
                         f"{cpu_ratio:.2f}x"))

            # CONTEXT read: 1,000 messages, 4,000-token budget (flushes off: archive would never flush,
            # so fill a 'chat' instance in one go and read before any flush can finish)
            c = clients[0]
            for start in range(0, 1000, 250):
                await c.append("archive", [{"role": "user", "content": f"note {i}: {CONTENT[:120]}"}
                                           for i in range(start, start + 250)], key="ctx")
            ctx_lat = await timed(lambda: c.read_all("archive", key="ctx", max_tokens=4000), max(100, n // 10))
            rows.append(("CONTEXT read, 1,000 msgs, 4,000-token budget, p50", f"{pct(ctx_lat, 50) * 1e3:.2f} ms",
                         "", f"p99 {pct(ctx_lat, 99) * 1e3:.2f} ms"))

            for _batch in range(10):
                await c.append("archive", [{"role": "user", "content": CONTENT} for _ in range(1000)], key="raw")
            raw_lat = await timed(lambda: c.read_all("archive", key="raw", view="raw", chunk_size=1000), 11)
            mb = 10_000 * len(payload) / 1e6
            cold, warm = raw_lat[0], statistics.median(raw_lat[1:])
            rows.append(("RAW read, 10,000 x 430 B, first read by the daemon that appended them",
                         f"{mb / cold:.0f} MB/s", "", f"{cold * 1e3:.0f} ms"))
            rows.append(("RAW read, 10,000 x 430 B, again (median of 10)", f"{mb / warm:.0f} MB/s", "",
                         f"{warm * 1e3:.0f} ms each"))
            if store == "redis":
                # A second daemon on the same Redis has nothing cached: its first read of an
                # instance is cold. Five instances, so that the cold read has a median too; the
                # second daemon's channel is warmed on another instance first.
                for k in range(COLD_INSTANCES):
                    for _batch in range(10):
                        await c.append("archive", [{"role": "user", "content": CONTENT} for _ in range(1000)],
                                       key=f"cold-{k}")
                other_api = f"127.0.0.1:{free_port()}"
                other = spawn([*args[:5], other_api, *args[6:]])
                try:
                    wait_serving(other_api, "memoryd.v1.MemoryService")
                    async with AsyncMemoryClient(other_api) as oc:
                        await oc.read_all("archive", key="ctx", view="raw", chunk_size=1000)
                        rounds = []
                        for _again in range(2):
                            rounds.append([await timed_once(lambda k=k: oc.read_all(
                                "archive", key=f"cold-{k}", view="raw", chunk_size=1000))
                                for k in range(COLD_INSTANCES)])
                finally:
                    other.send_signal(signal.SIGTERM)
                    other.wait(timeout=20)
                first, again = statistics.median(rounds[0]), statistics.median(rounds[1])
                rows.append((f"RAW read, 10,000 x 430 B, first read by another daemon (cold), median of "
                             f"{COLD_INSTANCES} instances", f"{mb / first:.0f} MB/s", "",
                             f"{first * 1e3:.0f} ms ({min(rounds[0]) * 1e3:.0f}-{max(rounds[0]) * 1e3:.0f})"))
                rows.append(("RAW read, 10,000 x 430 B, again by that daemon (RAW reads do not fill its cache)",
                             f"{mb / again:.0f} MB/s", "", f"{again * 1e3:.0f} ms"))

            # append p99 under the same background load, once with flushes running, once without
            stop = asyncio.Event()

            async def churn(flushing: bool) -> None:
                i = 0
                while not stop.is_set():
                    await clients[15].append("chat", [{"role": "user", "content": CONTENT}], key=f"churn-{flushing}")
                    if flushing and i % 5 == 0:
                        await clients[15].flush("chat", key=f"churn-{flushing}")
                    i += 1

            async def under(flushing: bool) -> list[float]:
                stop.clear()
                task = asyncio.create_task(churn(flushing))
                lat = await timed(append_call(1, f"load-{flushing}"), n)
                stop.set()
                await task
                return lat

            quiet, busy = await under(False), await under(True)
            q99, b99 = pct(quiet, 99), pct(busy, 99)
            rows.append(("append p99 while another instance flushes", f"{b99 * 1e3:.2f} ms",
                         f"{q99 * 1e3:.2f} ms (same load, no flush)", f"{b99 / q99:.2f}x"))
            for cl in clients:
                await cl.close()
            for ch in (*channels, *api_channels):
                await ch.close()
        finally:
            for proc in (daemon, floor):
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=20)
            redis_proc.stop()
    return rows


async def bench_tracing(store: str, n: int, rounds: int, before: str | None) -> list[tuple[str, str, str, str]]:
    """Append latency (1 client) and daemon CPU per append (16 clients) with tracing off and
    on (OTLP/gRPC to a sink collector, every append sampled: no ``traceparent``, so each is
    a root span with the default sampler), and optionally the code before tracing existed
    (``--before DIR``: a checkout run with PYTHONPATH=DIR), and on with one root span in
    ten sampled. The daemons are measured
    alternately, ``rounds`` times, each round in a rotated order; ratios are medians of the
    per-round ratios."""
    rows: list[tuple[str, str, str, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        redis_proc = start_standalone(Path(tmp) / "redis")
        config = Path(tmp) / "memoryd.yaml"
        config.write_text(PROJECT)
        sink_addr = f"127.0.0.1:{free_port()}"
        sink = spawn([sys.executable, str(ROOT / "bench" / "otlp_sink.py"), sink_addr])
        off_env = {k: "" for k in os.environ if k.startswith("OTEL_")}
        variants = {"off": off_env,
                    "on": {**off_env, "OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{sink_addr}"}}
        variants["on, 10% sampled"] = {**variants["on"], "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
                                       "OTEL_TRACES_SAMPLER_ARG": "0.1"}
        if before:
            variants["before"] = {**off_env, "PYTHONPATH": before, "PYTHONDONTWRITEBYTECODE": "1"}
        daemons, stubs, channels = {}, {}, []
        try:
            assert sink.stdout is not None and sink.stdout.readline().strip() == b"ready"
            for name, env in variants.items():
                api = f"127.0.0.1:{free_port()}"
                args = [sys.executable, "-m", "memoryd", "serve", "--listen", api, "--config", str(config)]
                if store == "redis":
                    args += ["--redis-url", redis_proc.url]
                daemons[name] = spawn(args, env=env)
                wait_serving(api, "memoryd.v1.MemoryService", timeout_s=120)  # the host is shared
                chans = [grpc.aio.insecure_channel(api) for _ in range(16)]
                channels += chans
                stubs[name] = [pb_grpc.MemoryServiceStub(ch) for ch in chans]

            def append_call(name: str) -> Callable[[int], Callable[[], Awaitable[object]]]:
                def make(i: int) -> Callable[[], Awaitable[object]]:
                    req = pb.AppendRequest(ref=pb.MemoryRef(memory_id="archive", key=f"{name}-{i}"),
                                           messages=[pb.Message(role=pb.ROLE_USER, content=CONTENT)])
                    return lambda: stubs[name][i].Append(req)
                return make

            for name in variants:
                await timed(append_call(name)(0), 200)
            lat: dict[str, list[list[float]]] = {name: [] for name in variants}
            cpu: dict[str, list[float]] = {name: [] for name in variants}
            per = max(50, n // 16)
            names = list(variants)
            for r in range(rounds):
                order = names[r % len(names):] + names[:r % len(names)]  # no variant always goes first
                for name in order:
                    lat[name].append(await timed(append_call(name)(0), n // rounds))
                for name in order:
                    before_cpu = cpu_seconds(daemons[name].pid)
                    await throughput(append_call(name), 16, per)
                    cpu[name].append((cpu_seconds(daemons[name].pid) - before_cpu) / (16 * per))

            def p50(name: str) -> float:
                return pct([x for r in lat[name] for x in r], 50)

            def ratios(name: str, p: float) -> str:
                rs = sorted(pct(a, p) / pct(b, p) for a, b in zip(lat[name], lat["off"], strict=True))
                return f"{statistics.median(rs):.2f}x (rounds {rs[0]:.2f}-{rs[-1]:.2f})"

            for name in variants:
                all_lat = [x for r in lat[name] for x in r]
                rows.append((f"tracing {name}: append p50 (1 client)", f"{p50(name) * 1e3:.2f} ms",
                             f"p99 {pct(all_lat, 99) * 1e3:.2f} ms",
                             "" if name == "off" else f"p50 {ratios(name, 50)} of off"))
            for name in variants:
                cr = sorted(a / b for a, b in zip(cpu[name], cpu["off"], strict=True))
                rows.append((f"tracing {name}: daemon CPU per append (16 clients)",
                             f"{statistics.median(cpu[name]) * 1e6:.0f} us", "",
                             "" if name == "off" else f"{statistics.median(cr):.2f}x of off "
                                                      f"(rounds {cr[0]:.2f}-{cr[-1]:.2f})"))
            for ch in channels:
                await ch.close()
        finally:
            for proc in (*daemons.values(), sink):
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=30)
            assert sink.stdout is not None
            rows.append(("spans received by the sink", sink.stdout.read().decode().strip(), "", ""))
            redis_proc.stop()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--store", choices=["redis", "embedded"], default="redis")
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--simple-floor", action="store_true",
                        help="the floor runs the older stand-in script instead of memoryd's append script")
    parser.add_argument("--tracing", action="store_true",
                        help="compare the daemon with tracing off and on (OTLP to a sink) instead")
    parser.add_argument("--rounds", type=int, default=7, help="--tracing: alternating rounds")
    parser.add_argument("--before", help="--tracing: also run the code checked out in this directory")
    args = parser.parse_args()
    if args.tracing:
        rows = asyncio.run(bench_tracing(args.store, args.n, args.rounds, args.before))
        print(f"\nstore: {args.store}, n={args.n}, {args.rounds} rounds, {os.cpu_count()} cores\n")
        print("| measure | value | | ratio |")
        print("|---|---|---|---|")
        for r in rows:
            print("| " + " | ".join(r) + " |")
        return
    rows = asyncio.run(bench(args.store, args.n, args.simple_floor))
    floor = "stand-in script" if args.simple_floor else "memoryd's append script"
    print(f"\nstore: {args.store}, n={args.n}, floor: {floor}, {os.cpu_count()} cores, "
          "client+daemon+floor+redis on one machine\n")
    print("| measure | memoryd | floor | ratio / note |")
    print("|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")


if __name__ == "__main__":
    main()
