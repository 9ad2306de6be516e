"""Fails loudly when the redis-py internals that ``memoryd/store/redis/wire.py`` builds on change.

wire.py subclasses redis-py's asyncio connections and pools and reads private attributes
(docs/decisions.md, "The performance layer"). pyproject pins redis-py to the minor version
this was checked against; a new minor must pass this file before the pin moves. If it does
not, the URL option ``wire=stock`` runs memoryd on redis-py's own paths meanwhile.
"""

from __future__ import annotations

import inspect

import redis
from redis.asyncio.connection import Connection, ConnectionPool
from redis.asyncio.sentinel import SentinelConnectionPool

from memoryd.store.redis import wire


def params(fn: object) -> list[str]:
    return list(inspect.signature(fn).parameters)  # type: ignore[arg-type]


def test_redis_py_is_the_minor_version_wire_was_checked_against() -> None:
    assert redis.__version__.startswith("8.2."), redis.__version__


def test_pool_internals_used_by_the_lean_checkout() -> None:
    for pool_class in (ConnectionPool, SentinelConnectionPool):
        pool = pool_class() if pool_class is ConnectionPool else None
        if pool is not None:
            assert isinstance(pool._available_connections, list)
            assert isinstance(pool._in_use_connections, set)
        assert params(pool_class.get_connection)[:2] == ["self", "command_name"]
        assert params(pool_class.release) == ["self", "connection"]
        assert params(pool_class.ensure_connection) == ["self", "connection"]
    # the lean checkout overrides exactly these, and everything else stays redis-py's
    assert {"get_connection", "release"} <= set(vars(wire.LeanCheckout))


def test_connection_internals_used_by_the_lean_commands() -> None:
    conn = Connection()
    assert conn.is_connected is False and hasattr(conn, "_writer") and hasattr(conn, "socket_timeout")
    assert params(Connection.connect_check_health) == ["self", "check_health", "retry_socket_connect"]
    assert params(Connection.check_health) == ["self"]
    assert params(Connection.disconnect)[:2] == ["self", "nowait"]
    assert params(Connection.should_reconnect) == ["self"]
    assert params(Connection.mark_for_reconnect) == ["self"]
    assert "timeout" in params(Connection.read_response)
    assert params(Connection.send_packed_command) == ["self", "command", "check_health"]
    assert params(Connection.pack_command) == ["self", "args"]


def test_wire_stock_uses_redis_py_own_classes() -> None:
    from memoryd.store.redis.connection import make_client
    from memoryd.store.url import parse_url

    lean = make_client(parse_url("redis://127.0.0.1:1/0"))
    stock = make_client(parse_url("redis://127.0.0.1:1/0?wire=stock"))
    assert isinstance(lean.connection_pool, wire.LeanCheckout)  # type: ignore[union-attr]
    assert type(stock.connection_pool) is ConnectionPool  # type: ignore[union-attr]
    assert stock.connection_pool.connection_class is Connection  # type: ignore[union-attr]
