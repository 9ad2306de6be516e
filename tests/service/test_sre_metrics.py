"""The metrics an SRE expects, scraped over HTTP from a real daemon: process and build
information, readiness, open streams, Redis command latency and pool usage."""

from __future__ import annotations

import asyncio
import platform
import re
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
import redis
from memoryd_client import AbortedError
from memoryd_client.v1 import memory_pb2 as pb
from memoryd_client.v1 import memory_pb2_grpc as pb_grpc
from prometheus_client.parser import text_string_to_metric_families

import memoryd
from memoryd.keys import InstanceAddr
from memoryd.store.redis.layout import InstanceKeys
from memoryd.store.redis.store import RedisStore
from memoryd.store.url import open_store
from tests.redis_servers import RedisProcess, start_standalone, temporary
from tests.service.test_metrics_scrape import scrape
from tests.support import REPO, running_server, storage_project

MEM = "default"
SERVICE = "memoryd.v1.MemoryService"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def sample(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


async def scrape_until(port: int, done: Callable[[Samples], bool], what: str) -> Samples:
    """Scrape until ``done`` holds (state that a background task changes); fail after 15 s."""
    deadline = time.monotonic() + 15
    while True:
        _, samples = await scrape(port)
        if done(samples):
            return samples
        assert time.monotonic() < deadline, f"{what}: not seen in /metrics"
        await asyncio.sleep(0.05)  # polling a scrape, not synchronisation


async def test_process_build_and_readiness_are_exported() -> None:
    async with running_server(metrics_listen="127.0.0.1:0") as srv:
        _, samples = await scrape(srv.server.ports["metrics"])
    build = {"version": memoryd.__version__, "python": platform.python_version(),
             "grpcio": grpc.__version__, "redis_py": redis.__version__}
    assert sample(samples, "memoryd_build_info", **build) == 1
    assert sample(samples, "memoryd_ready") == 1
    assert sample(samples, "process_resident_memory_bytes")
    start = sample(samples, "process_start_time_seconds")
    assert start is not None and start <= time.time()
    assert sample(samples, "process_cpu_seconds_total") is not None
    # The embedded store has no Redis pool: no empty Redis families either.
    assert not [name for name, _ in samples if name.startswith("memoryd_redis_")]


async def test_open_streams_gauge_follows_a_watch() -> None:
    async with running_server(metrics_listen="127.0.0.1:0") as srv, grpc.aio.insecure_channel(srv.address) as ch:
        port = srv.server.ports["metrics"]
        watch = {"grpc_service": SERVICE, "grpc_method": "Watch"}
        stub = pb_grpc.MemoryServiceStub(ch)
        ref = pb.MemoryRef(memory_id=MEM, key="k")
        await stub.Append(pb.AppendRequest(ref=ref, messages=[pb.Message(role=pb.ROLE_USER, content="hi")]))
        call = stub.Watch(pb.WatchRequest(ref=ref))
        await call.read()  # the first event: the stream is open on the server
        _, samples = await scrape(port)
        assert sample(samples, "memoryd_open_streams", **watch) == 1
        async for _ in stub.Read(pb.ReadRequest(ref=ref, view=pb.READ_VIEW_RAW)):
            pass
        call.cancel()
        samples = await scrape_until(port, lambda s: sample(s, "memoryd_open_streams", **watch) == 0,
                                     "the cancelled Watch leaving the gauge")
        assert sample(samples, "memoryd_open_streams", grpc_service=SERVICE, grpc_method="Read") == 0
        assert not [labels for name, labels in samples
                    if name == "memoryd_open_streams" and dict(labels)["grpc_method"] == "Append"]


async def test_redis_command_latency_and_pool_usage(redis_standalone: RedisProcess) -> None:
    store = open_store(redis_standalone.url)
    assert isinstance(store, RedisStore)
    async with running_server(store=store, metrics_listen="127.0.0.1:0") as srv, srv.client() as c:
        port = srv.server.ports["metrics"]
        _, before = await scrape(port)
        for i in range(5):
            await c.append(MEM, [{"role": "user", "content": f"m{i}"}], key="pool")
        _, after = await scrape(port)
        assert sample(after, "memoryd_redis_pool_max_connections") == store.settings.max_connections
        assert sample(after, "memoryd_redis_pool_connections_in_use") == 0
        count = "memoryd_redis_command_duration_seconds_count"
        assert (sample(after, count) or 0) - (sample(before, count) or 0) >= 5  # one script per append at least
        assert sample(after, "memoryd_redis_command_duration_seconds_bucket", le="+Inf") == sample(after, count)

        # A call holding a connection shows in the pool gauge while it holds it.
        holding, release = asyncio.Event(), asyncio.Event()

        async def held() -> None:
            holding.set()
            await release.wait()

        task = asyncio.create_task(store._run(held))
        await holding.wait()
        _, during = await scrape(port)
        release.set()
        await task
        _, done = await scrape(port)
    assert sample(during, "memoryd_redis_pool_connections_in_use") == 1
    assert sample(done, "memoryd_redis_pool_connections_in_use") == 0


async def test_ready_gauge_drops_while_redis_is_down(tmp_path: Path) -> None:
    with temporary(start_standalone, tmp_path) as redis_server:
        store = open_store(redis_server.url)
        async with running_server(store=store, metrics_listen="127.0.0.1:0") as srv:
            port = srv.server.ports["metrics"]
            await scrape_until(port, lambda s: sample(s, "memoryd_ready") == 1, "ready while Redis answers")
            redis_server.stop()
            await scrape_until(port, lambda s: sample(s, "memoryd_ready") == 0, "not ready while Redis is down")
            redis_server.start()
            await scrape_until(port, lambda s: sample(s, "memoryd_ready") == 1, "ready again")


def documented_metrics() -> set[str]:
    """The first column of every metric table in docs/observability.md's "Metrics" section."""
    text = (REPO / "docs" / "observability.md").read_text()
    section = text.split("\n## Metrics\n", 1)[1].split("\n## Logs\n", 1)[0]
    return set(re.findall(r"^\| `([a-z_]+)` \|", section, re.M))


async def test_documented_metrics_are_the_exported_ones(redis_standalone: RedisProcess) -> None:
    """Every memoryd_* and grpc_server_* family a daemon on Redis exports is documented, and
    nothing documented is missing (families are declared before their first sample)."""
    async with running_server(store=open_store(redis_standalone.url), metrics_listen="127.0.0.1:0") as srv, \
            srv.client() as c:
        await c.append(MEM, [{"role": "user", "content": "hello"}], key="docs")
        text, _ = await scrape(srv.server.ports["metrics"])
    exported = {f.name + ("_total" if f.type == "counter" else "")
                for f in text_string_to_metric_families(text)
                if f.name.startswith(("memoryd_", "grpc_server_")) and not f.name.endswith("_created")}
    assert exported == documented_metrics()


async def test_fold_metrics_count_lock_timeouts_apart_from_refused_plans(redis_standalone: RedisProcess) -> None:
    """A fold whose lock is held elsewhere is a lock timeout (and contention); a plan refused
    because another fold came first got its lock: it is an aborted fold, not a lock timeout."""
    store = open_store(redis_standalone.url)
    project_id = f"m{time.monotonic_ns()}"
    async with running_server(storage_project(project_id=project_id), store=store, metrics_listen="127.0.0.1:0",
                              lock_acquire_timeout=0.3) as srv, srv.client() as c:
        port = srv.server.ports["metrics"]
        await c.append(MEM, [{"role": "user", "content": f"m{i}"} for i in range(6)], key="locked")
        lock = InstanceKeys.of(InstanceAddr(project_id, MEM, "locked")).lock
        held = redis.Redis.from_url(redis_standalone.url)
        try:
            assert held.set(lock, "held-by-the-test", px=60_000, nx=True)
            with pytest.raises(AbortedError):
                await c.flush(MEM, key="locked")
        finally:
            held.delete(lock)
            held.close()
        _, s1 = await scrape(port)
        timeouts = sample(s1, "memoryd_lock_wait_seconds_count", memory_id=MEM, outcome="timeout")
        assert timeouts == 1 and sample(s1, "memoryd_lock_contention_total", memory_id=MEM) == 1
        assert sample(s1, "memoryd_flushes_total", memory_id=MEM, strategy="hybrid_summary", status="aborted") == 1

        stale = await c.plan_flush(MEM, key="locked")
        await c.flush(MEM, key="locked")  # another fold first
        with pytest.raises(AbortedError):
            await c.apply_flush(MEM, stale.plan_token, "too late", key="locked")
        _, s2 = await scrape(port)
        assert sample(s2, "memoryd_lock_wait_seconds_count", memory_id=MEM, outcome="timeout") == 1  # unchanged
        assert sample(s2, "memoryd_lock_wait_seconds_count", memory_id=MEM, outcome="acquired") == 2
        assert sample(s2, "memoryd_flushes_total", memory_id=MEM, strategy="external", status="aborted") == 1
        assert sample(s2, "memoryd_flushes_total", memory_id=MEM, strategy="hybrid_summary", status="ok") == 1
