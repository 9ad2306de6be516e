"""Store fixtures: one started store per test on each backend (servers are per session)."""

from __future__ import annotations

import asyncio
import importlib
import uuid
from collections.abc import AsyncIterator

import pytest

from memoryd.config.model import CircuitBreaker
from memoryd.keys import InstanceAddr
from memoryd.store.base import MemoryStore
from memoryd.store.url import open_store

REDIS_BACKENDS = ("standalone", "cluster", "sentinel")
# "stock": standalone with redis-py's own connections, pools and scripts (URL ``wire=stock``),
# the fallback that bisects a regression of store/redis/wire.py; it must keep the protocol too.
ALL_BACKENDS = ("embedded", *REDIS_BACKENDS, "stock")
# Generous per-call timeout: the 2-core test machine also runs servers and sentinels.
TEST_BREAKER = CircuitBreaker(timeout_s=2.0, max_failures=5, reset_timeout_s=0.5)


def backend_url(request: pytest.FixtureRequest, backend: str) -> str:
    """The URL of a session server for ``backend`` (started on first use)."""
    server = request.getfixturevalue(f"redis_{backend}")
    return str(server.url)


async def make_store(request: pytest.FixtureRequest, backend: str) -> MemoryStore:
    if backend == "embedded":
        # Imported lazily: the embedded backend joins the suite as soon as it exists.
        embedded = importlib.import_module("memoryd.store.embedded")
        store: MemoryStore = embedded.EmbeddedStore()
    elif backend == "stock":
        store = open_store(backend_url(request, "standalone") + "?wire=stock", breaker=TEST_BREAKER)
    else:
        store = open_store(backend_url(request, backend), breaker=TEST_BREAKER)
    await store.start()
    wait_up = getattr(store, "wait_up", None)  # a loaded machine may miss start()'s first attempt
    if wait_up is not None:
        await asyncio.wait_for(wait_up(), timeout=60)
    return store


@pytest.fixture(params=ALL_BACKENDS)
async def store(request: pytest.FixtureRequest) -> AsyncIterator[MemoryStore]:
    s = await make_store(request, request.param)
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture(params=REDIS_BACKENDS)
async def redis_store(request: pytest.FixtureRequest) -> AsyncIterator[MemoryStore]:
    s = await make_store(request, request.param)
    try:
        yield s
    finally:
        await s.close()


def new_addr(project: str = "proj") -> InstanceAddr:
    """A fresh instance: tests share servers, never instances."""
    return InstanceAddr(project, "res", f"k-{uuid.uuid4().hex}")


@pytest.fixture
def addr() -> InstanceAddr:
    return new_addr()


def cold(store: MemoryStore, addr: InstanceAddr) -> None:
    """Read next as another daemon would, with nothing cached: drop this store's cached copy
    of the instance (the Redis read cache serves small instances whole, e.g. to tail_state)."""
    cache = getattr(store, "_cache", None)
    if cache is not None:
        cache.drop(addr)
