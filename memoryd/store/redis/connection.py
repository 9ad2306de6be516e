"""Building the redis-py 8 asyncio client for standalone, Sentinel and Cluster deployments.

Choices (docs/redis.md, "Connections"):

* redis-py's own retries are off (``Retry(NoBackoff(), 0)``) for every command: redis-py
  cannot tell a read from a mutation, and a blindly retried EVALSHA of an append whose
  reply was lost would store the batch twice. The store retries by itself, and only
  what is safe to repeat (reads, and appends, which always carry an idempotency key).
* socket timeouts are explicit and short (the defaults take seconds to fail); the
  breaker's per-call timeout (0.5 s by default) is the real bound, the socket timeout
  (raised by the store above the per-call timeout) only a backstop behind it.
* the pool size is ``max_connections``; the store never has more calls in flight than
  that (a semaphore), so the pool is never exhausted (redis-py's async pool raises
  instead of waiting when it is).
* hiredis parses replies when installed (a dependency of memoryd); ``parser_name``
  tells which parser is active. Standalone and Sentinel connections also pack commands
  with hiredis and write without a Task per command, and their pools check connections
  out and in without redis-py 8.1's per-call extras (``wire.py``); the Cluster client
  creates its node connections itself and keeps redis-py's. ``wire=stock`` in the URL
  (``lean_wire=False``) turns all of that off.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from redis.asyncio import Redis, RedisCluster, Sentinel
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.connection import (
    Connection,
    ConnectionPool,
    DefaultParser,
    SSLConnection,
    UnixDomainSocketConnection,
)
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import SentinelConnectionPool, SentinelManagedConnection, SentinelManagedSSLConnection
from redis.backoff import NoBackoff
from redis.credentials import CredentialProvider

from memoryd.store.redis.wire import (
    LeanConnection,
    LeanConnectionPool,
    LeanSentinelConnection,
    LeanSentinelConnectionPool,
    LeanSentinelSSLConnection,
    LeanSSLConnection,
    LeanUnixConnection,
)

Mode = Literal["standalone", "sentinel", "cluster"]
RedisClient = Redis | RedisCluster


@dataclass(frozen=True, slots=True)
class ConnectionSettings:
    """Where and how to connect; produced from a store URL by ``memoryd.store.url``."""

    mode: Mode = "standalone"
    hosts: tuple[tuple[str, int], ...] = (("127.0.0.1", 6379),)
    unix_socket_path: str | None = None
    db: int = 0
    username: str | None = None
    password: str | None = None
    password_file: str | None = None
    tls: bool = False
    tls_ca_certs: str | None = None
    tls_certfile: str | None = None
    tls_keyfile: str | None = None
    tls_cert_reqs: str = "required"
    tls_check_hostname: bool = True
    master_name: str | None = None  # sentinel
    sentinel_username: str | None = None
    sentinel_password: str | None = None
    socket_timeout_s: float | None = 1.0
    socket_connect_timeout_s: float = 0.5
    max_connections: int = 64
    health_check_interval_s: float = 15.0
    client_name: str = "memoryd"
    # False: redis-py's stock connections, pools and Script objects instead of wire.py's
    # (URL option ``wire=stock``), to tell a regression of the performance layer from others.
    lean_wire: bool = True

    def redacted(self) -> str:
        """A loggable description (never a password)."""
        where = self.unix_socket_path or ",".join(f"{h}:{p}" for h, p in self.hosts)
        extra = f"/{self.master_name}" if self.master_name else ""
        return f"{self.mode}{'+tls' if self.tls else ''}://{where}{extra}/{self.db}"


class PasswordFileCredentials(CredentialProvider):
    """Reads the password file at every new connection, so a rotated secret is picked up."""

    def __init__(self, path: str, username: str | None = None) -> None:
        self.path = path
        self.username = username

    def _read(self) -> tuple[str] | tuple[str, str]:
        password = Path(self.path).read_text().strip("\r\n")
        return (self.username, password) if self.username else (password,)

    def get_credentials(self) -> tuple[str] | tuple[str, str]:
        return self._read()

    async def get_credentials_async(self) -> tuple[str] | tuple[str, str]:
        return await asyncio.to_thread(self._read)


def parser_name() -> str:
    """The reply parser redis-py uses: ``_AsyncHiredisParser`` when hiredis is active."""
    return DefaultParser.__name__


def no_retry() -> Retry:
    return Retry(NoBackoff(), 0)


def _auth(s: ConnectionSettings) -> dict[str, Any]:
    if s.password_file:
        return {"credential_provider": PasswordFileCredentials(s.password_file, s.username)}
    return {"username": s.username, "password": s.password}


def _common(s: ConnectionSettings) -> dict[str, Any]:
    return {
        "socket_timeout": s.socket_timeout_s,
        "socket_connect_timeout": s.socket_connect_timeout_s,
        "health_check_interval": s.health_check_interval_s,
        "retry": no_retry(),
        "client_name": s.client_name,
        "decode_responses": False,
        **_auth(s),
    }


def _tls(s: ConnectionSettings) -> dict[str, Any]:
    return {
        "ssl_ca_certs": s.tls_ca_certs,
        "ssl_certfile": s.tls_certfile,
        "ssl_keyfile": s.tls_keyfile,
        "ssl_cert_reqs": s.tls_cert_reqs,
        "ssl_check_hostname": s.tls_check_hostname,
    }


def make_client(s: ConnectionSettings) -> RedisClient:
    """A client for ``s``; connects lazily (the store's ``start`` makes the first call)."""
    if s.mode == "cluster":
        return RedisCluster(
            startup_nodes=[ClusterNode(h, p) for h, p in s.hosts],
            max_connections=s.max_connections,
            require_full_coverage=True,
            ssl=s.tls,
            **(_tls(s) if s.tls else {}),
            **_common(s),
        )
    if s.mode == "sentinel":
        sentinel_kwargs: dict[str, Any] = {
            "socket_timeout": s.socket_timeout_s,
            "socket_connect_timeout": s.socket_connect_timeout_s,
            "retry": no_retry(),
        }
        if s.sentinel_password:
            sentinel_kwargs.update(username=s.sentinel_username, password=s.sentinel_password)
        if s.tls:
            sentinel_kwargs.update(ssl=True, **_tls(s))
        sentinel = Sentinel(list(s.hosts), sentinel_kwargs=sentinel_kwargs)
        if s.master_name is None:
            raise ValueError("sentinel mode needs a master name")
        extra = {"ssl": True, **_tls(s)} if s.tls else {}
        if s.lean_wire:
            pool_class: type[SentinelConnectionPool] = LeanSentinelConnectionPool
            conn_class: type[Connection] = LeanSentinelSSLConnection if s.tls else LeanSentinelConnection
        else:
            pool_class = SentinelConnectionPool
            conn_class = SentinelManagedSSLConnection if s.tls else SentinelManagedConnection
        client: Redis = sentinel.master_for(
            s.master_name, db=s.db, max_connections=s.max_connections, socket_keepalive=True,
            connection_pool_class=pool_class, connection_class=conn_class, **extra, **_common(s),
        )
        return client
    lean = s.lean_wire
    kwargs: dict[str, Any] = {"db": s.db, "connection_class": LeanConnection if lean else Connection, **_common(s)}
    if s.unix_socket_path:
        kwargs.update(connection_class=LeanUnixConnection if lean else UnixDomainSocketConnection,
                      path=s.unix_socket_path)
    else:
        host, port = s.hosts[0]
        kwargs.update(host=host, port=port, socket_keepalive=True)
        if s.tls:
            kwargs.update(connection_class=LeanSSLConnection if lean else SSLConnection, **_tls(s))
    # A plain pool suffices: the store's semaphore never lets more calls in than it holds.
    pool = (LeanConnectionPool if lean else ConnectionPool)(max_connections=s.max_connections, **kwargs)
    return Redis.from_pool(pool)


async def close_client(client: RedisClient) -> None:
    """Close the client's pools, and for Sentinel also the connections to the sentinels."""
    await client.aclose()
    manager = getattr(getattr(client, "connection_pool", None), "sentinel_manager", None)
    for sentinel in getattr(manager, "sentinels", ()):
        await sentinel.aclose()
