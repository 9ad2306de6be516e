"""Daemon settings: one declarative schema for flags, environment and docs.

Each ``Setting`` becomes a ``--flag`` of ``memoryd serve`` and an ``MEMORYD_<NAME>``
environment variable (flag wins over env, env over default); ``docs/settings.md`` is
generated from the same list (``python -m memoryd.settings --markdown``).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any


@dataclass(frozen=True, slots=True)
class Settings:
    """Validated daemon settings (see SETTINGS for help texts)."""

    listen: str = "127.0.0.1:50051"
    health_listen: str = ""
    metrics_listen: str = ""
    config: str = ""
    redis_url: str = ""
    redis_password_file: str = ""
    auth_token_file: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    tls_client_ca: str = ""
    allow_insecure_bind: bool = False
    shutdown_grace: float = 10.0
    log_level: str = "info"
    log_hash_key: str = field(default="", repr=False)  # a secret
    max_message_bytes: int = 1_048_576
    max_batch_messages: int = 1000
    max_request_bytes: int = 16_777_216
    max_key_bytes: int = 1024
    read_chunk_messages: int = 256
    max_watchers: int = 128
    flush_lock_ttl_ms: int = 2_000
    lock_acquire_timeout: float = 2.5
    plan_token_key: str = field(default="", repr=False)  # a secret


@dataclass(frozen=True, slots=True)
class Setting:
    name: str
    help: str
    example: str = ""


SETTINGS: tuple[Setting, ...] = (
    Setting("listen", "Memory API address: HOST:PORT or unix:PATH (a socket file, mode 0660). "
            "Keep it pod-local.", "unix:/var/run/memoryd/memoryd.sock"),
    Setting("health_listen", "Extra listener serving only grpc.health.v1, for kubelet probes (they dial "
            "the Pod IP). Empty: off.", "0.0.0.0:8081"),
    Setting("metrics_listen", "Prometheus /metrics HTTP address. Empty: metrics off.", "0.0.0.0:9090"),
    Setting("config", "Project YAML (memories/*.yaml beside it are loaded too). Empty: the built-in "
            "default project (resource 'default', direct keys).", "/etc/memoryd/memoryd.yaml"),
    Setting("redis_url", "Store URL: redis://, rediss://, unix://, redis+sentinel://, redis+cluster://. "
            "Empty: the embedded in-process store.", "redis://redis:6379/0"),
    Setting("redis_password_file", "File holding the Redis password (overrides the URL's).",
            "/var/run/secrets/memoryd/redis-password"),
    Setting("auth_token_file", "File holding a bearer token required on every RPC except health.",
            "/var/run/secrets/memoryd/token"),
    Setting("tls_cert", "PEM server certificate (enables TLS on the API listener)."),
    Setting("tls_key", "PEM private key of tls_cert."),
    Setting("tls_client_ca", "PEM CA bundle; when set, clients must present a certificate (mTLS)."),
    Setting("allow_insecure_bind", "Allow a non-loopback API address without token or TLS."),
    Setting("shutdown_grace", "Seconds to drain in-flight calls after SIGTERM/SIGINT."),
    Setting("log_level", "debug, info, warning or error (JSON lines on stderr)."),
    Setting("log_hash_key", "Secret keying the instance_hash of logs (HMAC-SHA256), so it cannot be reversed "
            "by hashing likely keys. Give daemons whose logs you correlate the same one, from a Secret via the "
            "environment (a flag shows in ps). Empty: random per process, so hashes differ between daemons and "
            "restarts."),
    Setting("max_message_bytes", "Largest message content accepted (bytes, UTF-8)."),
    Setting("max_batch_messages", "Most messages in one Append call."),
    Setting("max_request_bytes", "Largest gRPC request accepted (bytes)."),
    Setting("max_key_bytes", "Largest direct key accepted before sanitising (bytes)."),
    Setting("read_chunk_messages", "Default messages per Read stream item."),
    Setting("max_watchers", "Most Watch streams this daemon serves at once; one more gets RESOURCE_EXHAUSTED. "
            "Each costs a store read per change of its instance."),
    Setting("flush_lock_ttl_ms", "Lease of the instance lock while flushing (ms). Renewed every third of it "
            "while held, so a long flush keeps it; a holder that dies blocks flushes at most this long."),
    Setting("lock_acquire_timeout", "Seconds a flush waits for the instance lock before ABORTED. Longer than the "
            "lease (plus the 0.25 s retry cap), so a flush waiting on a dead holder gets the lock."),
    Setting("plan_token_key", "Secret keying PlanFlush's plan tokens (HMAC-SHA256), so ApplyFlush folds only "
            "what a daemon planned. A token verifies only where the key is the same. Empty (the default): a random "
            "secret the store keeps (Redis key memoryd:v1:secret:plan-token), shared by every daemon of that "
            "Redis and kept across restarts; the embedded store's is per process."),
)

_LEVELS = ("debug", "info", "warning", "error")


def _env_name(name: str) -> str:
    return "MEMORYD_" + name.upper()


def _parse_bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"not a boolean: {raw!r}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one flag per setting; defaults stay None so env and defaults can be layered."""
    types = {f.name: f.type for f in fields(Settings)}
    for s in SETTINGS:
        flag = "--" + s.name.replace("_", "-")
        if types[s.name] == "bool":
            parser.add_argument(flag, action="store_const", const=True, default=None, help=s.help)
        else:
            parser.add_argument(flag, default=None, metavar=s.name.upper(), help=s.help)


def from_sources(args: Mapping[str, Any], env: Mapping[str, str] | None = None) -> Settings:
    """Layer flags over MEMORYD_* env over defaults; raise ValueError naming the bad setting."""
    env = os.environ if env is None else env
    defaults = Settings()
    values: dict[str, Any] = {}
    for f in fields(Settings):
        raw = args.get(f.name)
        source = "--" + f.name.replace("_", "-")
        if raw is None and _env_name(f.name) in env:
            raw, source = env[_env_name(f.name)], _env_name(f.name)
        if raw is None:
            continue
        default = getattr(defaults, f.name)
        try:
            if isinstance(default, bool):
                values[f.name] = raw if isinstance(raw, bool) else _parse_bool(str(raw))
            elif isinstance(default, int):
                values[f.name] = int(raw)
            elif isinstance(default, float):
                values[f.name] = float(raw)
            else:
                values[f.name] = str(raw)
        except ValueError as exc:
            raise ValueError(f"{source}: {exc}") from None
    settings = Settings(**values)
    _check(settings)
    return settings


def _check(s: Settings) -> None:
    if s.log_level.lower() not in _LEVELS:
        raise ValueError(f"log_level: must be one of {', '.join(_LEVELS)}")
    for name in ("max_message_bytes", "max_batch_messages", "max_request_bytes", "max_key_bytes",
                 "read_chunk_messages", "flush_lock_ttl_ms", "max_watchers"):
        if getattr(s, name) <= 0:
            raise ValueError(f"{name}: must be > 0")
    if s.shutdown_grace < 0 or s.lock_acquire_timeout <= 0:
        raise ValueError("shutdown_grace must be >= 0 and lock_acquire_timeout > 0")
    if bool(s.tls_cert) != bool(s.tls_key):
        raise ValueError("tls_cert and tls_key must be given together")


def markdown() -> str:
    """The settings reference (docs/settings.md)."""
    defaults = Settings()
    lines = [
        "# Daemon settings",
        "",
        "Generated by `python -m memoryd.settings --markdown` from `memoryd/settings.py`.",
        "Every setting is a flag of `memoryd serve` and an environment variable; the flag wins.",
        "Traces are configured by the standard `OTEL_*` variables instead (`OTEL_TRACES_EXPORTER`,",
        "`OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_SERVICE_NAME`, sampling): docs/observability.md, \"Traces\".",
        "",
        "| flag | env | default | meaning |",
        "|---|---|---|---|",
    ]
    for s in SETTINGS:
        default = getattr(defaults, s.name)
        shown = "(empty)" if default == "" else f"`{default}`"
        example = f" Example: `{s.example}`." if s.example else ""
        lines.append(f"| `--{s.name.replace('_', '-')}` | `{_env_name(s.name)}` | {shown} | {s.help}{example} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    if sys.argv[1:] == ["--markdown"]:
        sys.stdout.write(markdown())
