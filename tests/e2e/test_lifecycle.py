"""The server's lifecycle, as uvicorn's: a failed start cleans up, signals are given back,
a second signal does not wait, and shutdown does not wait forever for flushes."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import replace
from types import FrameType

import grpc
import pytest
import redis
import redis.asyncio as aioredis
from memoryd_client import MemoryClient

from memoryd.config.model import FlushingStrategy, MemoryResource, Project, default_project
from memoryd.keys import InstanceAddr
from memoryd.manager import MemoryManager
from memoryd.metrics import Metrics
from memoryd.models import IncomingMessage, RefSpec
from memoryd.server import Server
from memoryd.settings import Settings
from memoryd.store.embedded import EmbeddedStore
from memoryd.store.redis.layout import InstanceKeys
from memoryd.store.url import open_store
from tests.redis_servers import RedisProcess
from tests.support import daemon_process, free_port, wait_serving


async def memoryd_connections(url: str, name: str) -> int:
    client = aioredis.from_url(url)
    try:
        return sum(1 for c in await client.client_list() if c.get("name") == name)
    finally:
        await client.aclose()


async def test_a_failed_start_still_closes_the_store(redis_standalone: RedisProcess) -> None:
    """The API port is taken: serve() fails, and the Redis connections it opened are closed."""
    name = f"lifecycle-{uuid.uuid4().hex[:8]}"
    store = open_store(f"{redis_standalone.url}?client_name={name}")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        settings = Settings(listen=f"127.0.0.1:{taken.getsockname()[1]}", shutdown_grace=1.0)
        manager = MemoryManager(default_project(), store, settings, Metrics(enabled=False, resources={}))
        with pytest.raises((OSError, RuntimeError), match="bind"):
            await Server(settings, manager).serve()
    assert await memoryd_connections(redis_standalone.url, name) == 0


async def test_serve_gives_the_signal_handlers_back() -> None:
    seen: list[int] = []

    def ours(signum: int, frame: FrameType | None) -> None:
        seen.append(signum)

    before = {sig: signal.signal(sig, ours) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        settings = Settings(listen=f"127.0.0.1:{free_port()}", shutdown_grace=1.0)
        server = Server(settings, MemoryManager(default_project(), EmbeddedStore(), settings))
        serving = asyncio.create_task(server.serve())
        await asyncio.to_thread(wait_serving, settings.listen, "memoryd.v1.MemoryService")
        signal.raise_signal(signal.SIGTERM)  # taken by serve(), which stops
        await asyncio.wait_for(serving, 30)
        assert seen == []
        assert signal.getsignal(signal.SIGTERM) is ours and signal.getsignal(signal.SIGINT) is ours
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


def test_a_second_signal_exits_without_waiting_for_the_drain(redis_standalone: RedisProcess) -> None:
    """A background flush waits for an instance lock held elsewhere (here: set by the test in
    Redis), so the graceful stop waits up to its 60 s grace for it; the second SIGTERM ends the
    process at once with 128 + SIGTERM."""
    api, key = f"127.0.0.1:{free_port()}", f"k-{uuid.uuid4().hex}"
    lock = InstanceKeys.of(InstanceAddr("default", "default", key)).lock
    held = redis.Redis.from_url(redis_standalone.url)
    try:
        assert held.set(lock, "held-by-the-test", px=300_000, nx=True)
        with daemon_process("--listen", api, "--redis-url", redis_standalone.url, "--shutdown-grace", "60",
                            "--lock-acquire-timeout", "300") as proc:
            wait_serving(api, "memoryd.v1.MemoryService")
            with MemoryClient(api) as c:
                for i in range(200):  # the default resource folds at 80 % of 8,000 tokens
                    resp = c.append("default", [{"role": "user", "content": f"turn {i} " + "word " * 100}], key=key)
                    if resp.flush_scheduled:
                        break
                assert resp.flush_scheduled
            proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 30
            while True:  # the first signal is taken: health stops answering SERVING
                try:
                    wait_serving(api, "memoryd.v1.MemoryService", timeout_s=0.5)
                except (TimeoutError, grpc.RpcError):
                    break
                assert time.monotonic() < deadline, "the daemon never began to stop"
            assert proc.poll() is None, "the drain should still be waiting for the flush"
            proc.send_signal(signal.SIGTERM)
            try:
                code = proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                pytest.fail("a second SIGTERM did not end the graceful stop")
    finally:
        held.delete(lock)
        held.close()
    assert code == 128 + signal.SIGTERM


async def test_shutdown_waits_for_a_stuck_flush_only_within_the_grace() -> None:
    """A background flush waiting for an instance lock held elsewhere (here: held by the test,
    with a lock wait far longer than the grace) is cancelled when the grace has passed."""
    res = MemoryResource(id="small", max_tokens=600,
                         flushing_strategy=FlushingStrategy(summary_tokens=100))
    settings = replace(Settings(), lock_acquire_timeout=120.0)
    store = EmbeddedStore()
    manager = MemoryManager(Project(id="p", resources={res.id: res}, agents={}), store, settings)
    await manager.start()
    target = manager.resolve(RefSpec("small", "k", None, {}))
    async with store.lock(target.addr, ttl_ms=60_000, acquire_timeout_s=1):
        for i in range(30):
            await manager.append(target, [IncomingMessage("user", f"turn {i} " + "word " * 20, "text", None, {}, True)],
                                 None)
            if manager.flush_pending(target.addr):
                break
        assert manager.flush_pending(target.addr), "no background flush was scheduled"
        started = time.monotonic()
        await asyncio.wait_for(manager.close(flush_grace_s=0.2), 30)
        assert time.monotonic() - started < 30
    assert not manager.flush_pending(target.addr)


