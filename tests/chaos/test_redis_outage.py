"""Redis dies under a daemon: appends fail with UNAVAILABLE within the breaker timeout (none
hangs), readiness goes NOT_SERVING while liveness stays SERVING; Redis comes back: the daemon
recovers by itself, readiness returns to SERVING, every acknowledged message is there."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from memoryd_client import AsyncMemoryClient, RetryPolicy, UnavailableError

from memoryd.config.model import CircuitBreaker
from memoryd.store.url import open_store
from tests.redis_servers import start_standalone, temporary
from tests.support import running_server

BREAKER = CircuitBreaker(timeout_s=0.5, max_failures=3, reset_timeout_s=0.3)
HANG_MARGIN_S = 2.0
SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING


async def until(check: Callable[[], Awaitable[bool]], what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached within {timeout_s}s")
        await asyncio.sleep(0.05)  # polling interval


async def test_outage_unavailable_readiness_and_recovery(tmp_path: Path) -> None:
    with temporary(lambda d: start_standalone(d, appendonly=True), tmp_path) as redis_server:
        store = open_store(redis_server.url, breaker=BREAKER)
        async with running_server(store=store) as srv:
            channel = grpc.aio.insecure_channel(srv.address)
            health = health_pb2_grpc.HealthStub(channel)

            async def status(service: str) -> int:
                resp = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
                return int(resp.status)

            client = AsyncMemoryClient(srv.address, retry=RetryPolicy(attempts=1))
            acked = []
            for i in range(30):
                await client.append("default", [{"role": "user", "content": f"before-{i}"}], key="outage")
                acked.append(f"before-{i}")
            assert await status("") == SERVING

            redis_server.stop()  # SIGKILL
            failures = 0
            for i in range(12):
                try:
                    async with asyncio.timeout(BREAKER.timeout_s + HANG_MARGIN_S):  # no call hangs
                        await client.append("default", [{"role": "user", "content": f"down-{i}"}], key="outage")
                except UnavailableError:
                    failures += 1
            assert failures == 12
            await until(lambda: _is(status(""), NOT_SERVING), "readiness NOT_SERVING")
            assert await status("memoryd.v1.MemoryService") == NOT_SERVING
            assert await status("liveness") == SERVING  # the kubelet must not restart the sidecar

            redis_server.start()  # same port, AOF replayed
            await until(lambda: _is(status(""), SERVING), "readiness SERVING again")
            await client.append("default", [{"role": "user", "content": "after"}], key="outage")
            acked.append("after")
            contents = [m.content async for m in client.read("default", key="outage", view="raw")]
            assert contents == acked
            await client.close()
            await channel.close()


async def _is(value: Awaitable[int], expected: int) -> bool:
    return await value == expected
