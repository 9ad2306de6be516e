"""The session's 3-master Redis Cluster (shared with tests/store through tests.redis_servers)."""

from __future__ import annotations

import pytest

from tests.redis_servers import RedisClusterProcs, shared, start_cluster


@pytest.fixture(scope="session")
def redis_cluster(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> RedisClusterProcs:
    procs: RedisClusterProcs = shared("cluster", request, tmp_path_factory, start_cluster)
    return procs
