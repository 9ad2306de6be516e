"""What one memoryd sidecar costs: resident memory and CPU time per operation, for
sizing the container's requests and limits (docs/operations.md, "Sizing").

    .venv/bin/python bench/bench_sidecar.py [--store redis|embedded] [--n 3000]

CPU is the daemon process's own user+system time (from /proc) divided by the calls
made, so the number does not depend on how busy the shared machine is; RSS is read
from /proc after each phase. Prints a Markdown table. Not a test: nothing asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from memoryd_client import AsyncMemoryClient  # noqa: E402

from tests.redis_servers import start_standalone  # noqa: E402
from tests.support import free_port, wait_serving  # noqa: E402

PROJECT = """
project: sizing
memories:
  - id: chat
    max_tokens: 4000
    model: gpt-4o
"""
CONTENT = "The customer reports that the parcel with order number 12345 has not arrived yet; " * 5  # ~430 B
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def rss_mib(pid: int, field: str = "VmRSS") -> float:
    """Resident set (VmRSS) or its peak so far (VmHWM), MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field}")


def spawn(cmd: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def run(store: str, n: int) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        redis_proc = start_standalone(Path(tmp) / "redis") if store == "redis" else None
        config = Path(tmp) / "memoryd.yaml"
        config.write_text(PROJECT)
        api = f"127.0.0.1:{free_port()}"
        cmd = [sys.executable, "-m", "memoryd", "serve", "--listen", api, "--config", str(config),
               "--metrics-listen", f"127.0.0.1:{free_port()}", "--log-level", "warning"]
        if redis_proc is not None:
            cmd += ["--redis-url", redis_proc.url]
        daemon = spawn(cmd)
        try:
            wait_serving(api, "memoryd.v1.MemoryService")
            pid = daemon.pid
            rows.append(("RSS after start (encodings loaded), idle", f"{rss_mib(pid):.0f} MiB"))
            clients = [AsyncMemoryClient(api) for _ in range(16)]
            msg = [{"role": "user", "content": CONTENT}]

            async def appends(client: AsyncMemoryClient, key: str, count: int) -> None:
                for _ in range(count):
                    await client.append("chat", msg, key=key)

            await appends(clients[0], "warm", 200)
            for label, writers in (("1 client", 1), ("16 clients", 16)):
                before = cpu_seconds(pid)
                await asyncio.gather(*(appends(clients[i], f"a{writers}-{i}", n // writers) for i in range(writers)))
                per = (cpu_seconds(pid) - before) / (n // writers * writers)
                rows.append((f"CPU per append, {label} (4,000-token budget, flushes included)",
                             f"{per * 1e3:.2f} ms = {1 / per:,.0f} appends/s per core"))

            async def reads(client: AsyncMemoryClient, key: str, count: int) -> None:
                for _ in range(count):
                    await client.read_all("chat", key=key)

            before = cpu_seconds(pid)
            await asyncio.gather(*(reads(clients[i], f"a16-{i}", n // 16) for i in range(16)))
            per = (cpu_seconds(pid) - before) / (n // 16 * 16)
            rows.append(("CPU per CONTEXT read of a full 4,000-token instance, 16 clients",
                         f"{per * 1e3:.2f} ms = {1 / per:,.0f} reads/s per core"))

            instances = 1000
            for start in range(0, instances, 50):
                await asyncio.gather(*(clients[i % 16].append("chat", [{"role": "user", "content": CONTENT}] * 8,
                                                              key=f"many-{start + i}") for i in range(50)))
            rows.append((f"RSS after {instances:,} more instances x 8 messages (~3.4 MB of content)",
                         f"{rss_mib(pid):.0f} MiB"))
            rows.append(("peak RSS over the whole run", f"{rss_mib(pid, 'VmHWM'):.0f} MiB"))
            for client in clients:
                await client.close()
        finally:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(timeout=30)
            if redis_proc is not None:
                redis_proc.stop()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--store", choices=["redis", "embedded"], default="redis")
    parser.add_argument("--n", type=int, default=3000)
    args = parser.parse_args()
    rows = asyncio.run(run(args.store, args.n))
    print(f"\nstore: {args.store}, n={args.n}, {os.cpu_count()} cores, client+daemon+redis on one machine\n")
    print("| measure | value |")
    print("|---|---|")
    for label, value in rows:
        print(f"| {label} | {value} |")


if __name__ == "__main__":
    main()
