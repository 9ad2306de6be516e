"""``memoryd`` command line: ``serve``, ``validate``, and ``--version``.

Exit codes: 0 success, 1 invalid configuration, 2 usage error (bad flag or setting).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence

from memoryd import __version__, auth, keys, logs, settings, tracing
from memoryd.config.model import CircuitBreaker, Project, default_project
from memoryd.errors import ConfigError, MemorydError
from memoryd.manager import MemoryManager
from memoryd.metrics import Metrics
from memoryd.server import Server, is_loopback
from memoryd.store.base import MemoryStore

log = logging.getLogger("memoryd.cli")


def load_project(path: str) -> Project:
    if not path:
        return default_project()
    from memoryd.config.loader import load_project as load

    return load(path)


def breaker_settings(project: Project) -> CircuitBreaker:
    """One breaker guards the daemon's Redis (it is the deployment that fails, not a
    resource). Resources that state ``persistence.circuit_breaker`` differently are
    combined strictly: the shortest timeout, the fewest failures, the longest reset."""
    configs = [r.persistence.circuit_breaker for r in project.resources.values() if r.persistence.type != "embedded"]
    if not configs:
        return CircuitBreaker()
    return CircuitBreaker(
        timeout_s=min(c.timeout_s for c in configs),
        max_failures=min(c.max_failures for c in configs),
        reset_timeout_s=max(c.reset_timeout_s for c in configs),
    )


def open_store(s: settings.Settings, project: Project) -> MemoryStore:
    from memoryd.store.url import open_store as open_url

    store = open_url(s.redis_url, password_file=s.redis_password_file or None, breaker=breaker_settings(project))
    return tracing.traced(store)


def check_bind(s: settings.Settings) -> None:
    """Refuse a non-loopback API address without a token or TLS (unless forced); also
    read the token and certificates now, so a bad file fails before anything starts."""
    token = auth.load_token(s)
    auth.server_credentials(s)
    secured = token is not None or bool(s.tls_cert)
    if not is_loopback(s.listen) and not secured and not s.allow_insecure_bind:
        raise ValueError(
            f"--listen {s.listen}: refusing a non-loopback address without --auth-token-file or TLS "
            "(pass --allow-insecure-bind to force)"
        )


async def _serve(s: settings.Settings, manager: MemoryManager) -> None:
    await Server(s, manager).serve()


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        s = settings.from_sources(vars(args))
        check_bind(s)
        tracing.configure()
    except ValueError as exc:
        print(f"memoryd serve: {exc}", file=sys.stderr)
        return 2
    logs.configure(s.log_level)
    keys.set_log_hash_key(s.log_hash_key)
    try:
        project = load_project(s.config)
        metrics = Metrics.from_settings(s, project.resources)
        manager = MemoryManager(project, open_store(s, project), s, metrics)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print(f"memoryd serve: refusing to start: {len(exc.problems)} configuration error(s)", file=sys.stderr)
        return 1
    try:
        asyncio.run(_serve(s, manager))
    except MemorydError as exc:
        log.error("startup failed: %s", exc.message, extra={"event": "startup_failed"})
        return 1
    except OSError as exc:
        log.error("startup failed: %s", exc, extra={"event": "startup_failed"})
        return 1
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from memoryd.config.validate_cmd import run_validate

    return run_validate(args.path, sys.stdout)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="memoryd", description="Shared, token-managed memory for LLM agents.")
    parser.add_argument("--version", action="version", version=f"memoryd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the daemon")
    settings.add_arguments(serve)
    serve.set_defaults(func=cmd_serve)
    validate = sub.add_parser("validate", help="check a project configuration and exit")
    validate.add_argument("path", help="project YAML file")
    validate.set_defaults(func=cmd_validate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
