"""Fixtures of the cross-language interop tests: toolchains, one daemon, a driver per language."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from memoryd_client import MemoryClient

from tests.interop import driver_py
from tests.support import REPO, daemon_process, free_port, wait_serving

EXAMPLE_PROJECT = REPO / "examples" / "project" / "memoryd.yaml"
LANGS = ("python", "node", "go")
Json = dict[str, Any]


@pytest.fixture(scope="session")
def client_toolchains() -> None:
    """Install/build what Node and Go need (scripts/install_client_toolchains.sh; quick when done)."""
    script = REPO / "scripts" / "install_client_toolchains.sh"
    r = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=900, check=False)
    if r.returncode != 0:
        pytest.fail(f"{script} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")


def driver_cmd(lang: str, address: str) -> list[str]:
    return {
        "python": [sys.executable, "-m", "tests.interop.driver_py", address],
        "node": ["node", str(REPO / "clients" / "node" / "dist" / "tools" / "interop.js"), address],
        "go": [str(REPO / "clients" / "go" / "gopath" / "bin" / "memoryd-interopdriver"), address],
    }[lang]


def _spawn(lang: str, address: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen(driver_cmd(lang, address), cwd=REPO, env=env, text=True, encoding="utf-8",
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@dataclass
class Driver:
    """Runs interop commands in one language: Python in process, Node and Go as child processes."""

    lang: str
    address: str
    _proc: subprocess.Popen[str] | None = None
    _py: MemoryClient | None = None

    def call(self, cmd: Json) -> Json:
        if self.lang == "python":
            if self._py is None:
                self._py = MemoryClient(self.address)
            replies: list[Json] = []
            driver_py.handle(self._py, cmd, replies.append)
            return replies[0]
        if self._proc is None:
            self._proc = _spawn(self.lang, self.address)
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write(json.dumps(cmd) + "\n")
        self._proc.stdin.flush()
        line = self._proc.stdout.readline()
        if not line:
            self._proc.kill()
            raise RuntimeError(f"{self.lang} driver died: {self._proc.stderr.read() if self._proc.stderr else ''}")
        reply: Json = json.loads(line)
        return reply

    def ok(self, cmd: Json) -> Json:
        reply = self.call(cmd)
        assert "ok" in reply, f"{self.lang}: {cmd['op']} failed: {reply}"
        return dict(reply["ok"])

    def close(self) -> None:
        if self._py is not None:
            self._py.close()
        if self._proc is not None:
            assert self._proc.stdin is not None
            self._proc.stdin.close()
            self._proc.wait(timeout=10)
            for s in (self._proc.stdout, self._proc.stderr):
                if s is not None:
                    s.close()


@dataclass
class Watch:
    """A watch running in its own driver process; ``events()`` waits for it to see ``count`` messages."""

    lang: str
    proc: subprocess.Popen[str]

    def events(self, timeout_s: float = 30.0) -> list[Json]:
        try:
            out, err = self.proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
            raise AssertionError(f"{self.lang} watch did not finish; got {out!r} {err!r}") from None
        lines = [json.loads(line) for line in out.splitlines() if line.strip()]
        assert lines and lines[-1] == {"done": True}, f"{self.lang} watch: {lines} {err}"
        return lines[:-1]


@pytest.fixture(scope="module")
def project_daemon(client_toolchains: None) -> Iterator[str]:
    """One `memoryd serve` of the example project (agents, read-only references) for every language."""
    address = f"127.0.0.1:{free_port()}"
    with daemon_process("--listen", address, "--config", str(EXAMPLE_PROJECT), "--shutdown-grace", "1"):
        wait_serving(address, "memoryd.v1.MemoryService")
        yield address


@pytest.fixture(scope="module")
def drivers(project_daemon: str) -> Iterator[dict[str, Driver]]:
    ds = {lang: Driver(lang, project_daemon) for lang in LANGS}
    yield ds
    for d in ds.values():
        d.close()


@pytest.fixture
def start_watch(project_daemon: str) -> Iterator[Callable[[str, Json], Watch]]:
    started: list[Watch] = []

    def start(lang: str, cmd: Json) -> Watch:
        proc = _spawn(lang, project_daemon)
        assert proc.stdin is not None
        proc.stdin.write(json.dumps({"op": "watch", **cmd}) + "\n")
        proc.stdin.close()
        proc.stdin = None  # closed: the driver ends after this command; communicate() must not flush it
        w = Watch(lang, proc)
        started.append(w)
        return w

    yield start
    for w in started:
        if w.proc.poll() is None:
            w.proc.kill()
            w.proc.communicate()
