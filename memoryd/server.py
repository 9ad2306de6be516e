"""Server lifecycle: listeners, health, reflection, readiness and graceful shutdown.

Shape borrowed from uvicorn: ``Server.serve()`` starts everything, waits for a
stop signal, then shuts down in order: health NOT_SERVING, stop accepting, drain
in-flight calls within the grace period (long streams are told to end), let running
flushes finish, close the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import ipaddress
import logging
import os
import signal
from collections.abc import Callable
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from memoryd_client.v1 import memory_pb2 as pb
from memoryd_client.v1 import memory_pb2_grpc as pb_grpc

from memoryd import auth, reflection
from memoryd.errors import MemorydError
from memoryd.handlers import Listener
from memoryd.manager import MemoryManager
from memoryd.metrics import MetricsEndpoint
from memoryd.service import MemoryService
from memoryd.settings import Settings
from memoryd.store.base import MemoryStore

log = logging.getLogger("memoryd.server")

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["MemoryService"].full_name
LIVENESS = "liveness"  # stays SERVING while the process works, even when the store is down
READINESS_NAMES = ("", SERVICE_NAME)
READINESS_INTERVAL_S = 1.0


def is_loopback(address: str) -> bool:
    """True for unix sockets and loopback TCP addresses (127.0.0.0/8, ::1, localhost)."""
    if address.startswith("unix:"):
        return True
    host = address.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _breaker_state_of(store: MemoryStore) -> Callable[[], str]:
    return lambda: store.breaker_state


def register_api(listener: Listener, service: MemoryService, health_servicer: health.aio.HealthServicer) -> None:
    """The API listener's services: memoryd.v1, grpc.health.v1 and server reflection (v1 and v1alpha)."""
    target: Any = listener  # the generated functions are typed for a server; they call only what Listener has
    pb_grpc.add_MemoryServiceServicer_to_server(service, target)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, target)
    # grpc.reflection.v1 and v1alpha, the asyncio servicer registered explicitly
    # (enable_server_reflection picks its servicer by isinstance(server, grpc.aio.Server)).
    reflection.add_reflection(target, (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name))


class Server:
    def __init__(self, settings: Settings, manager: MemoryManager) -> None:
        self.settings = settings
        self.manager = manager
        self.shutdown_event = asyncio.Event()
        self.health = health.aio.HealthServicer()
        self._servers: list[grpc.aio.Server] = []
        self._readiness_task: asyncio.Task[None] | None = None
        self._metrics_endpoint: MetricsEndpoint | None = None
        self.ports: dict[str, int] = {}
        self.ready = False  # the last readiness check passed (memoryd_ready)

    def _options(self) -> list[tuple[str, Any]]:
        size = self.settings.max_request_bytes
        return [
            ("grpc.so_reuseport", 0),
            ("grpc.max_receive_message_length", size),
            ("grpc.max_send_message_length", size),
        ]

    def _bind(
        self, server: grpc.aio.Server, address: str, name: str, creds: grpc.ServerCredentials | None = None
    ) -> None:
        if address.startswith("unix:"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(address[len("unix:"):])  # a stale socket from a crashed run
        port = server.add_secure_port(address, creds) if creds else server.add_insecure_port(address)
        if address.startswith("unix:"):
            self.ports[name] = 0
            return
        if port == 0:
            raise OSError(f"could not bind {name} listener on {address}")
        self.ports[name] = port

    async def start(self) -> None:
        for name in (*READINESS_NAMES, LIVENESS):
            await self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.manager.start()

        metrics = self.manager.metrics
        api = grpc.aio.server(options=self._options())
        register_api(
            Listener(api, metrics, auth.from_settings(self.settings), auth.EXEMPT_PREFIXES),
            MemoryService(self.manager, self.shutdown_event), self.health,
        )
        self._bind(api, self.settings.listen, "api", auth.server_credentials(self.settings))
        self._servers.append(api)
        if self.settings.health_listen:
            probe = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
            probe_listener: Any = Listener(probe, metrics)
            health_pb2_grpc.add_HealthServicer_to_server(self.health, probe_listener)
            self._bind(probe, self.settings.health_listen, "health")
            self._servers.append(probe)
        for s in self._servers:
            await s.start()
        if self.settings.listen.startswith("unix:"):
            os.chmod(self.settings.listen[len("unix:"):], 0o660)
        for store in self.manager.stores:
            metrics.track_breaker(store.backend, _breaker_state_of(store))
            metrics.track_store(store)
        metrics.track_ready(lambda: self.ready and not self.shutdown_event.is_set())
        if self.settings.metrics_listen:
            self._metrics_endpoint = metrics.start_http(self.settings.metrics_listen)
            self.ports["metrics"] = self._metrics_endpoint.port
        await self.health.set(LIVENESS, health_pb2.HealthCheckResponse.SERVING)
        await self._update_readiness()
        self._readiness_task = asyncio.create_task(self._readiness_loop(), name="memoryd-readiness")
        log.info("serving", extra={"event": "serving", "ports": self.ports, "store": self.manager.store.backend})

    async def _update_readiness(self) -> None:
        status: int
        try:
            await self.manager.store.ping()
            status = health_pb2.HealthCheckResponse.SERVING
        except MemorydError:
            status = health_pb2.HealthCheckResponse.NOT_SERVING
        if self.shutdown_event.is_set():
            return
        self.ready = status == health_pb2.HealthCheckResponse.SERVING
        for name in READINESS_NAMES:
            await self.health.set(name, status)

    async def _readiness_loop(self) -> None:
        while not self.shutdown_event.is_set():
            await asyncio.sleep(READINESS_INTERVAL_S)
            await self._update_readiness()

    async def stop(self) -> None:
        """Graceful stop: NOT_SERVING, stop accepting, drain, finish flushes, close the store."""
        self.shutdown_event.set()
        await self.health.enter_graceful_shutdown()
        if self._readiness_task is not None:
            self._readiness_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._readiness_task
        await asyncio.gather(*(s.stop(self.settings.shutdown_grace) for s in self._servers))
        await self.manager.close(flush_grace_s=self.settings.shutdown_grace)
        if self._metrics_endpoint is not None:
            await asyncio.to_thread(self._metrics_endpoint.stop)
        log.info("stopped", extra={"event": "stopped"})

    async def serve(self) -> None:
        """Run until SIGTERM or SIGINT, then stop gracefully (as uvicorn does).

        A failed start still stops what had started (stores closed, listeners stopped);
        a second signal during the graceful stop exits at once; the signal handlers that
        were installed before are restored on return."""
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        signals = (signal.SIGTERM, signal.SIGINT)
        original = {sig: signal.getsignal(sig) for sig in signals}

        def on_signal(sig: signal.Signals) -> None:
            if stop.is_set():  # the second one: the operator does not want to wait
                log.warning("second %s: exiting without finishing the shutdown", sig.name,
                            extra={"event": "forced_exit"})
                os._exit(128 + sig)
            stop.set()

        for sig in signals:
            loop.add_signal_handler(sig, on_signal, sig)
        try:
            await self.start()
            # Everything loaded at start-up (encodings, configuration, grpc and protobuf
            # modules) lives as long as the process: keep it out of the cyclic collector's
            # scans (collections during load were a measurable share of an append's instructions).
            gc.freeze()
            await stop.wait()
            log.info("stopping", extra={"event": "stopping", "grace_s": self.settings.shutdown_grace})
        finally:
            try:
                await self.stop()
            finally:
                for sig in signals:
                    loop.remove_signal_handler(sig)
                    signal.signal(sig, original[sig])
