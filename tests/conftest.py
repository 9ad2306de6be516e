"""Fixtures shared by every test directory."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from memoryd.store.url import open_store
from tests.redis_servers import (
    RedisClusterProcs,
    RedisProcess,
    SentinelProcs,
    start_cluster,
    start_sentinel,
    start_standalone,
)
from tests.support import RunningServer, running_server, storage_project


@pytest.fixture(params=["embedded", "redis"])
async def server(request: pytest.FixtureRequest) -> AsyncIterator[RunningServer]:
    """A memoryd server whose 'default' memory never flushes, on the embedded store and on
    a real Redis (the session's standalone server; a fresh project id isolates each test)."""
    store = None
    if request.param == "redis":
        store = open_store(request.getfixturevalue("redis_standalone").url)
    async with running_server(storage_project(project_id=f"t{uuid.uuid4().hex[:12]}"), store=store) as srv:
        yield srv


@pytest.fixture(scope="session")
def redis_standalone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    """A standalone Redis for the whole session (started on first use, stopped by PID at the end)."""
    procs = start_standalone(tmp_path_factory.mktemp("redis-standalone"))
    yield procs
    procs.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterProcs]:
    """A cluster Redis for the whole session (started on first use, stopped by PID at the end)."""
    procs = start_cluster(tmp_path_factory.mktemp("redis-cluster"))
    yield procs
    procs.stop()


@pytest.fixture(scope="session")
def redis_sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelProcs]:
    """A sentinel Redis for the whole session (started on first use, stopped by PID at the end)."""
    procs = start_sentinel(tmp_path_factory.mktemp("redis-sentinel"))
    yield procs
    procs.stop()
