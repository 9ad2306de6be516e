"""redis-py asyncio connections with two per-command costs taken out of the append path.

redis-py 8's asyncio ``Connection`` differs from its sync one in two ways that cost the
daemon on every command (measured with timeit and callgrind; docs/decisions.md):

* it encodes commands in Python, one ``Encoder.encode`` per argument (an append has 22).
  The sync client packs with ``hiredis.pack_command`` (C) when hiredis is installed;
  ``pack_command`` here does the same, a tenth of the cost, and leaves what
  hiredis does not take (multi-word command names, memoryviews, booleans, which
  redis-py refuses with DataError) to redis-py's packer;
* with a ``socket_timeout`` it writes through ``asyncio.wait_for``, which on Python 3.11
  wraps the write in a new Task: one more event-loop iteration before the bytes leave,
  on every command. ``send_packed_command`` here writes directly and bounds only a write
  that has to wait for the socket (``asyncio.timeout``, what ``wait_for`` became in
  Python 3.12), with redis-py's error handling unchanged: any failure or cancellation
  drops the connection, so no reply can be left unread on a pooled connection.

Reading is untouched (hiredis parser, ``async_timeout`` per read).

``ScriptCaller`` runs the store's Lua scripts (EVALSHA) on a standalone or Sentinel
client through the client's own pool and connections, without the generic
``execute_command`` layers (retry wrapper, per-command observability hooks, response
callbacks), which are most of redis-py's per-command cost and which a script call does
not use: redis-py's retries are off for memoryd anyway, and an EVALSHA reply has no
callback. A Cluster client routes by key, so its scripts keep redis-py's ``Script``.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from redis.asyncio import Redis
from redis.asyncio.connection import Connection, ConnectionPool, SSLConnection, UnixDomainSocketConnection
from redis.asyncio.sentinel import SentinelConnectionPool, SentinelManagedConnection, SentinelManagedSSLConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.utils import HIREDIS_AVAILABLE

_pack_command: Callable[[tuple[Any, ...]], bytes] | None = None
if HIREDIS_AVAILABLE:  # a dependency of memoryd; without it redis-py's packer is used
    import hiredis

    _pack_command = hiredis.pack_command


class LeanCommands:
    """Mixin for redis-py asyncio connection classes; see the module docstring."""

    if TYPE_CHECKING:  # what is used of redis.asyncio.connection.AbstractConnection
        socket_timeout: float | None
        is_connected: bool
        _writer: asyncio.StreamWriter | None

        async def connect_check_health(self, check_health: bool = True, retry_socket_connect: bool = True) -> None: ...
        async def check_health(self) -> None: ...
        async def disconnect(
            self, nowait: bool = False, error: Exception | None = None, failure_count: int | None = None,
            health_check_failed: bool = False,
        ) -> None: ...

    def pack_command(self, *args: Any) -> list[bytes]:
        if _pack_command is not None and isinstance(args[0], str) and " " not in args[0]:
            try:
                return [_pack_command(args)]
            except TypeError:
                pass  # redis-py's packer converts or refuses it (DataError)
        return super().pack_command(*args)  # type: ignore[misc,no-any-return]

    async def send_packed_command(self, command: bytes | str | Iterable[bytes], check_health: bool = True) -> None:
        if not self.is_connected:
            await self.connect_check_health(check_health=False)
        if check_health:
            await self.check_health()
        if isinstance(command, str):
            command = command.encode()
        chunks = [command] if isinstance(command, bytes) else command
        writer = self._writer
        assert writer is not None
        try:
            writer.writelines(chunks)
            if writer.transport.get_write_buffer_size():  # the socket did not take it all
                async with asyncio.timeout(self.socket_timeout or None):
                    await writer.drain()
            else:
                await writer.drain()  # returns at once; raises if the connection was lost
        except TimeoutError as exc:  # asyncio.timeout raises the builtin TimeoutError
            await self.disconnect(nowait=True)
            raise RedisTimeoutError("Timeout writing to socket") from exc
        except OSError as exc:
            await self.disconnect(nowait=True)
            errno, message = ("UNKNOWN", exc.args[0]) if len(exc.args) == 1 else exc.args[:2]
            raise RedisConnectionError(f"Error {errno} while writing to socket. {message}.") from exc
        except BaseException:
            await self.disconnect(nowait=True)  # cancelled mid-write: never reuse this connection
            raise


class LeanConnection(LeanCommands, Connection):
    pass


class LeanSSLConnection(LeanCommands, SSLConnection):
    pass


class LeanUnixConnection(LeanCommands, UnixDomainSocketConnection):
    pass


class LeanSentinelConnection(LeanCommands, SentinelManagedConnection):
    pass


class LeanSentinelSSLConnection(LeanCommands, SentinelManagedSSLConnection):
    pass


class LeanCheckout:
    """A pool checkout without redis-py's per-call extras (a quarter of its cost).

    redis-py's ``get_connection``/``release`` take the pool's ``asyncio.Lock`` twice, run
    four observability recorders (no-ops unless OpenTelemetry is configured, still four
    coroutines) and dispatch an after-release event whose one listener re-authenticates
    with *streaming* credential providers, which memoryd does not use. Kept: taking an
    idle connection or making one (the first case falls back to redis-py),
    ``ensure_connection`` (connects, or reconnects a connection that was dropped), and
    ``should_reconnect`` on return. The lock is not needed for this: nothing between
    taking a connection from the idle list and marking it in use awaits. For the
    standalone and Sentinel pools; the Cluster keeps redis-py's node pools.
    """

    _available_connections: list[Any]
    _in_use_connections: set[Any]

    async def get_connection(self, *args: Any, **options: Any) -> Any:
        try:
            connection = self._available_connections.pop()
        except IndexError:
            return await super().get_connection(*args, **options)  # type: ignore[misc]
        self._in_use_connections.add(connection)
        try:
            if connection.should_reconnect():  # see mark_idle_for_reconnect
                await connection.disconnect(nowait=True)
            await self.ensure_connection(connection)  # type: ignore[attr-defined]
        except BaseException:
            await self.release(connection)
            raise
        return connection

    async def release(self, connection: Any) -> None:
        self._in_use_connections.remove(connection)
        if connection.should_reconnect():
            await connection.disconnect()
        self._available_connections.append(connection)

    def mark_idle_for_reconnect(self) -> None:
        """After a connection turned out closed by the server, treat the idle ones as suspect
        too: the next checkout of each reconnects it. A server restart, a failover or a
        proxy's idle timeout closes them all at once, and redis-py's checkout test does not
        see it (docs/redis.md): without this, a retry could draw another closed one."""
        for connection in self._available_connections:
            connection.mark_for_reconnect()


class LeanConnectionPool(LeanCheckout, ConnectionPool):
    pass


class LeanSentinelConnectionPool(LeanCheckout, SentinelConnectionPool):
    pass


class ScriptCaller:
    """One Lua script, called by SHA through a standalone/Sentinel client's pool.

    A NOSCRIPT reply (after a ``SCRIPT FLUSH``, a restart or a failover to a replica
    that never saw ``SCRIPT LOAD``) loads the script on that connection's server and
    calls it again, as redis-py's ``Script`` does.

    Only for calls under the store's per-call timeout (``breaker.Breaker.call``): the
    replies are read without a second, socket-level timer (``timeout=math.inf``; a
    cancellation by the per-call timeout drops the connection, as any other would).
    """

    def __init__(self, client: Redis, source: str) -> None:
        self._pool = client.connection_pool
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    async def __call__(self, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        pool = self._pool
        conn = await pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            command = conn.pack_command("EVALSHA", self.sha, len(keys), *keys, *args)
            try:
                await conn.send_packed_command(command)
                return await conn.read_response(timeout=math.inf)
            except NoScriptError:
                await conn.send_packed_command(conn.pack_command("SCRIPT", "LOAD", self.source))
                await conn.read_response(timeout=math.inf)
                await conn.send_packed_command(command)
                return await conn.read_response(timeout=math.inf)
        finally:
            await pool.release(conn)
