"""Store selection by URL: parsing, and connecting with passwords, ACL users, password
files, Unix sockets and TLS to real redis-server processes."""

from __future__ import annotations

from pathlib import Path

import pytest

from memoryd.config.model import CircuitBreaker
from memoryd.errors import ConfigError, StoreUnavailable
from memoryd.models import NewMessage
from memoryd.store.embedded import EmbeddedStore
from memoryd.store.redis import ConnectionSettings, RedisStore
from memoryd.store.url import open_store, parse_url, redact
from tests.redis_servers import start_standalone, start_tls_standalone, temporary
from tests.store.conftest import new_addr

BREAKER = CircuitBreaker(timeout_s=2.0)


def msg() -> NewMessage:
    return NewMessage(role="user", content="hi", content_type="text", priority=None, effective_priority=5,
                      token_count=1)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://h", ConnectionSettings(hosts=(("h", 6379),))),
        ("redis://:pw@h:7000/3", ConnectionSettings(hosts=(("h", 7000),), password="pw", db=3)),
        ("redis://alice:p%40ss@h/0?socket_timeout=2.5&max_connections=8&health_check_interval=0",
         ConnectionSettings(hosts=(("h", 6379),), username="alice", password="p@ss", socket_timeout_s=2.5,
                            max_connections=8, health_check_interval_s=0.0)),
        ("rediss://h:6380?ssl_ca_certs=/ca.pem&ssl_cert_reqs=none&ssl_check_hostname=false",
         ConnectionSettings(hosts=(("h", 6380),), tls=True, tls_ca_certs="/ca.pem", tls_cert_reqs="none",
                            tls_check_hostname=False)),
        ("unix:///run/redis.sock?db=2", ConnectionSettings(hosts=(), unix_socket_path="/run/redis.sock", db=2)),
        ("redis://[::1]:7001", ConnectionSettings(hosts=(("::1", 7001),))),
        ("redis+sentinel://s1:26379,s2:26380/mymaster/1?sentinel_password=sp",
         ConnectionSettings(mode="sentinel", hosts=(("s1", 26379), ("s2", 26380)), master_name="mymaster", db=1,
                            sentinel_password="sp")),
        ("redis+sentinel://u:p@s1/m", ConnectionSettings(mode="sentinel", hosts=(("s1", 26379),), master_name="m",
                                                         username="u", password="p")),
        ("rediss+cluster://n1:7000,n2:7001", ConnectionSettings(mode="cluster", tls=True,
                                                                hosts=(("n1", 7000), ("n2", 7001)))),
    ],
)
def test_parse(url: str, expected: ConnectionSettings) -> None:
    assert parse_url(url) == expected


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://h", "unknown scheme"),
        ("redis://h:notaport", "bad port"),
        ("redis://h/x", "bad db"),
        ("redis://h1,h2", "exactly one host"),
        ("redis+sentinel://s1:26379", "missing master name"),
        ("redis+cluster://n1:7000/0", "no path"),
        ("redis+cluster://n1:7000?db=1", "only db 0"),
        ("redis://h?nope=1", "unknown option"),
        ("redis://h?max_connections=0", "bad value"),
        ("redis://h?ssl_cert_reqs=maybe", "bad value"),
        ("redis://h?wire=fast", "bad value"),
        ("redis://:secret@h?nope=1", "***"),
    ],
)
def test_parse_errors_name_the_problem_and_hide_passwords(url: str, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_url(url)
    assert problem in str(info.value) and "secret" not in str(info.value)


def test_redact() -> None:
    assert redact("redis://u:secret@h:1/0") == "redis://u:***@h:1/0"
    assert redact("redis://h:1") == "redis://h:1"


def test_empty_or_embedded_url_selects_the_embedded_store() -> None:
    assert isinstance(open_store(""), EmbeddedStore)
    assert isinstance(open_store("embedded://"), EmbeddedStore)
    assert isinstance(open_store("redis://h"), RedisStore)


def test_socket_timeout_never_undercuts_the_per_call_timeout() -> None:
    store = open_store("redis://h?socket_timeout=0.1", breaker=CircuitBreaker(timeout_s=2.0))
    assert isinstance(store, RedisStore)
    assert store.settings.socket_timeout_s is not None and store.settings.socket_timeout_s > 2.0
    # nor the bulk reads' (a large read waiting behind others for its reply)
    assert store.settings.socket_timeout_s > store.breaker.settings.bulk_timeout == 40.0
    default = open_store("redis://h", breaker=CircuitBreaker())
    assert isinstance(default, RedisStore) and default.settings.socket_timeout_s == 10.5


async def roundtrip(url: str, **kwargs: object) -> None:
    store = open_store(url, breaker=BREAKER, **kwargs)  # type: ignore[arg-type]
    await store.start()
    try:
        addr = new_addr()
        await store.append(addr, [msg()])
        assert [m.content for m in await store.read(addr)] == ["hi"]
    finally:
        await store.close()


async def test_password_from_url_and_from_a_rotated_file(tmp_path: Path) -> None:
    with temporary(lambda d: start_standalone(d, password="first"), tmp_path / "srv") as srv:
        url = f"redis://:first@127.0.0.1:{srv.port}/0"
        await roundtrip(url)
        with pytest.raises(StoreUnavailable):
            await roundtrip(f"redis://:wrong@127.0.0.1:{srv.port}/0")
        secret = tmp_path / "password"
        secret.write_text("first\n")
        store = open_store(f"redis://:ignored@127.0.0.1:{srv.port}/0", password_file=str(secret), breaker=BREAKER)
        await store.start()
        try:
            addr = new_addr()
            await store.append(addr, [msg()])
            # rotate: new secret in the file and on the server, old connections killed
            secret.write_text("second\n")
            with srv.client(password="first") as raw:
                raw.config_set("requirepass", "second")
                raw.execute_command("CLIENT KILL TYPE normal SKIPME yes")
            assert len(await store.read(addr)) == 1  # new connections authenticate from the file
        finally:
            await store.close()


async def test_acl_user_restricted_to_memoryd_keys(tmp_path: Path) -> None:
    with temporary(start_standalone, tmp_path) as srv:
        with srv.client() as raw:
            raw.execute_command("ACL SETUSER", "memoryd", "on", ">s3cret", "~memoryd:*", "+@all")
        await roundtrip(f"redis://memoryd:s3cret@127.0.0.1:{srv.port}/0")
        store = open_store(f"redis://memoryd:s3cret@127.0.0.1:{srv.port}/0", breaker=BREAKER)
        await store.start()
        try:
            addr = new_addr()
            await store.append(addr, [msg()], workflow_id="wf", idempotency_key="i")
            async with store.lock(addr, ttl_ms=5_000, acquire_timeout_s=5) as lease:
                assert lease.fence > 0
            assert await store.end_workflow("proj", "wf") == 1
        finally:
            await store.close()


async def test_unix_socket(tmp_path: Path) -> None:
    with temporary(lambda d: start_standalone(d, unixsocket=True), tmp_path) as srv:
        await roundtrip(f"unix://{srv.workdir / 'redis.sock'}?db=1")


async def test_tls(tmp_path: Path) -> None:
    with temporary(start_tls_standalone, tmp_path) as srv:
        assert srv.tls_ca is not None
        await roundtrip(f"rediss://127.0.0.1:{srv.port}/0?ssl_ca_certs={srv.tls_ca}")
        with pytest.raises(StoreUnavailable):  # a server certificate nobody vouches for
            await roundtrip(f"rediss://127.0.0.1:{srv.port}/0")
