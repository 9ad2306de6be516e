"""Fixtures shared by every test directory."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from tests.redis_servers import (
    RedisClusterProcs,
    RedisProcess,
    SentinelProcs,
    start_cluster,
    start_sentinel,
    start_standalone,
)
from tests.support import RunningServer, running_server, storage_project


@pytest.fixture
async def server() -> AsyncIterator[RunningServer]:
    """A memoryd server on the embedded store whose 'default' memory never flushes."""
    async with running_server(storage_project()) as srv:
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
