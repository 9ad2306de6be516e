"""Store selection by URL (docs/redis.md, "URLs").

    ""  or  embedded://                                   the in-process store
    redis://[[user]:pass@]host[:port][/db][?opts]          standalone
    rediss://...                                           standalone over TLS
    unix://[[user]:pass@]/path/to/redis.sock[?db=N&opts]   standalone over a Unix socket
    redis+sentinel://[[user]:pass@]host:port[,host:port...]/<master>[/db][?opts]   (rediss+sentinel: TLS)
    redis+cluster://[[user]:pass@]host:port[,host:port...][?opts]                  (rediss+cluster: TLS)

Options: socket_timeout, socket_connect_timeout (seconds), max_connections,
health_check_interval (seconds), client_name, ssl_ca_certs, ssl_certfile, ssl_keyfile,
ssl_cert_reqs (required|optional|none), ssl_check_hostname (true|false),
sentinel_username, sentinel_password, wire (lean|stock: ``stock`` uses redis-py's own
connections, pools and Script objects instead of ``store/redis/wire.py``, to bisect a
regression). A password file (re-read at each new connection) overrides the URL's password.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from memoryd.config.model import CircuitBreaker
from memoryd.errors import ConfigError
from memoryd.store.base import MemoryStore
from memoryd.store.redis.connection import ConnectionSettings, Mode

_SCHEMES: dict[str, tuple[Mode, bool]] = {
    "redis": ("standalone", False),
    "rediss": ("standalone", True),
    "unix": ("standalone", False),
    "redis+sentinel": ("sentinel", False),
    "rediss+sentinel": ("sentinel", True),
    "redis+cluster": ("cluster", False),
    "rediss+cluster": ("cluster", True),
}
_FLOAT_OPTS = {"socket_timeout": "socket_timeout_s", "socket_connect_timeout": "socket_connect_timeout_s",
               "health_check_interval": "health_check_interval_s"}
_STR_OPTS = {"client_name": "client_name", "ssl_ca_certs": "tls_ca_certs", "ssl_certfile": "tls_certfile",
             "ssl_keyfile": "tls_keyfile", "sentinel_username": "sentinel_username",
             "sentinel_password": "sentinel_password"}
DEFAULT_PORT = {"standalone": 6379, "sentinel": 26379, "cluster": 6379}


def _bad(url: str, problem: str) -> ConfigError:
    return ConfigError([f"redis_url {redact(url)!r}: {problem}"])


def redact(url: str) -> str:
    """The URL with any password replaced, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rsplit("@", 1)[1]
    return parts._replace(netloc=f"{user}:***@{host}").geturl()


def _hosts(url: str, netloc: str, mode: Mode) -> tuple[tuple[str, int], ...]:
    hostpart = netloc.rsplit("@", 1)[-1]
    hosts: list[tuple[str, int]] = []
    for item in hostpart.split(","):
        if not item:
            raise _bad(url, "empty host")
        if item.startswith("["):  # [ipv6]:port
            host, _, rest = item[1:].partition("]")
            port_s = rest.removeprefix(":")
        else:
            host, _, port_s = item.rpartition(":") if ":" in item else (item, "", "")
        try:
            port = int(port_s) if port_s else DEFAULT_PORT[mode]
        except ValueError:
            raise _bad(url, f"bad port in {item!r}") from None
        if not host or not 0 < port < 65536:
            raise _bad(url, f"bad host:port {item!r}")
        hosts.append((host, port))
    if mode == "standalone" and len(hosts) != 1:
        raise _bad(url, "a standalone URL takes exactly one host")
    return tuple(hosts)


def parse_url(url: str, *, password_file: str | None = None) -> ConnectionSettings:
    """ConnectionSettings for a redis/rediss/unix/sentinel/cluster URL; ConfigError when invalid."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _SCHEMES:
        raise _bad(url, f"unknown scheme {scheme!r} (use {', '.join(sorted(_SCHEMES))})")
    mode, tls = _SCHEMES[scheme]
    kw: dict[str, Any] = {"mode": mode, "tls": tls, "password_file": password_file}
    if parts.username:
        kw["username"] = unquote(parts.username)
    if parts.password is not None:
        kw["password"] = unquote(parts.password)
    path = [p for p in parts.path.split("/") if p]
    db_s: str | None = None
    if scheme == "unix":
        if not parts.path:
            raise _bad(url, "missing socket path")
        kw["unix_socket_path"] = unquote(parts.path)
        kw["hosts"] = ()
    else:
        kw["hosts"] = _hosts(url, parts.netloc, mode)
        if mode == "sentinel":
            if not path:
                raise _bad(url, "missing master name: redis+sentinel://host:port/<master>[/db]")
            kw["master_name"] = unquote(path[0])
            db_s = path[1] if len(path) > 1 else None
            if len(path) > 2:
                raise _bad(url, "path must be /<master>[/db]")
        elif mode == "cluster":
            if path:
                raise _bad(url, "a cluster URL has no path (a cluster has only db 0)")
        else:
            if len(path) > 1:
                raise _bad(url, "path must be /<db>")
            db_s = path[0] if path else None
    opts = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
    if "db" in opts:
        if mode == "cluster":
            raise _bad(url, "a cluster has only db 0")
        db_s = opts.pop("db")
    if db_s is not None:
        try:
            kw["db"] = int(db_s)
        except ValueError:
            raise _bad(url, f"bad db {db_s!r}") from None
    for name, value in opts.items():
        try:
            if name in _FLOAT_OPTS:
                kw[_FLOAT_OPTS[name]] = float(value)
            elif name == "max_connections":
                kw["max_connections"] = int(value)
                if kw["max_connections"] < 1:
                    raise ValueError
            elif name in _STR_OPTS:
                kw[_STR_OPTS[name]] = value
            elif name == "ssl_cert_reqs":
                if value not in ("required", "optional", "none"):
                    raise ValueError
                kw["tls_cert_reqs"] = value
            elif name == "wire":
                if value not in ("lean", "stock"):
                    raise ValueError
                kw["lean_wire"] = value == "lean"
            elif name == "ssl_check_hostname":
                if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError
                kw["tls_check_hostname"] = value.lower() in ("true", "1", "yes")
            else:
                raise _bad(url, f"unknown option {name!r}")
        except ValueError:
            raise _bad(url, f"bad value for {name}: {value!r}") from None
    return ConnectionSettings(**kw)


def open_store(
    url: str,
    *,
    password_file: str | None = None,
    breaker: CircuitBreaker | None = None,
    settings_overrides: dict[str, Any] | None = None,
) -> MemoryStore:
    """The store a URL names (not started: ``await store.start()``)."""
    if not url or url.startswith("embedded:"):
        from memoryd.store.embedded import EmbeddedStore

        return EmbeddedStore()
    from memoryd.store.redis import RedisStore

    settings = parse_url(url, password_file=password_file)
    if settings_overrides:
        settings = replace(settings, **settings_overrides)
    return RedisStore(settings, breaker=breaker)
