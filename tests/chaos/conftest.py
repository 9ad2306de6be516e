"""Redis servers for the chaos tests (shared per session with tests/store and tests/cluster)."""

from __future__ import annotations

import pytest

from tests.redis_servers import RedisClusterProcs, RedisProcess, shared, start_cluster, start_standalone


@pytest.fixture(scope="session")
def redis_standalone(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> RedisProcess:
    procs: RedisProcess = shared("standalone", request, tmp_path_factory, start_standalone)
    return procs


@pytest.fixture(scope="session")
def redis_cluster(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> RedisClusterProcs:
    procs: RedisClusterProcs = shared("cluster", request, tmp_path_factory, start_cluster)
    return procs
