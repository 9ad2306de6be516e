"""Shared test helpers: free ports, in-process daemons, subprocess daemons."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from memoryd_client import AsyncMemoryClient

from memoryd.config.model import DEFAULT_RESOURCE_ID, MemoryResource, Project, default_project
from memoryd.manager import MemoryManager
from memoryd.metrics import Metrics
from memoryd.server import Server
from memoryd.settings import Settings
from memoryd.store.base import MemoryStore
from memoryd.store.embedded import EmbeddedStore

REPO = Path(__file__).resolve().parent.parent


def storage_project(max_tokens: int = 100_000_000, project_id: str = "default") -> Project:
    """The default project with a budget so large that no flush ever runs: tests of
    storage semantics (order, atomicity, idempotency) see exactly what they appended."""
    res = MemoryResource(id=DEFAULT_RESOURCE_ID, max_tokens=max_tokens)
    return Project(id=project_id, resources={res.id: res}, agents={})


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RunningServer:
    server: Server
    address: str

    def client(self, **kwargs: Any) -> AsyncMemoryClient:
        return AsyncMemoryClient(self.address, **kwargs)


@contextlib.asynccontextmanager
async def running_server(
    project: Project | None = None, store: MemoryStore | None = None, **overrides: Any
) -> AsyncIterator[RunningServer]:
    """A real grpc.aio server of memoryd on a free loopback port, in this event loop."""
    settings = replace(Settings(listen=f"127.0.0.1:{free_port()}", shutdown_grace=1.0), **overrides)
    project = project or default_project()
    metrics = Metrics.from_settings(settings, project.resources)
    manager = MemoryManager(project, store or EmbeddedStore(), settings, metrics)
    server = Server(settings, manager)
    await server.start()
    try:
        yield RunningServer(server, settings.listen)
    finally:
        await server.stop()


def wait_serving(address: str, service: str = "", timeout_s: float = 30.0) -> None:
    """Poll grpc.health.v1 until SERVING (the standard stub, not memoryd's client)."""
    deadline = time.monotonic() + timeout_s
    with grpc.insecure_channel(address) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        while True:
            try:
                resp = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=1.0)
                if resp.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{address} not SERVING after {timeout_s}s")
            time.sleep(0.05)  # polling interval of a readiness wait, not synchronisation


@contextlib.contextmanager
def daemon_process(*args: str, env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """``memoryd serve ARGS`` as a subprocess; killed on exit if still running."""
    cmd = [sys.executable, "-m", "memoryd", "serve", *args]
    proc = subprocess.Popen(cmd, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
