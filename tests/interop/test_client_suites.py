"""Each client's own test suite (`npm test`, `go test`) and its generated code, run from pytest so
that `.ci/run` covers them. Both suites start their own `memoryd serve`."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.support import REPO

# The first test also installs the toolchains on a fresh machine (apt, npm ci, a cold Go build).
pytestmark = pytest.mark.timeout(900)

GO_ENV = f"source {REPO / 'scripts' / 'go_env.sh'} && cd \"$MEMORYD_GO_PKG\""


def _run(cmd: list[str], cwd: os.PathLike[str] | str, timeout: float = 300) -> str:
    env = {**os.environ, "MEMORYD_PYTHON": os.environ.get("MEMORYD_PYTHON", str(REPO / ".venv" / "bin" / "python"))}
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    assert r.returncode == 0, f"{cmd} exited {r.returncode}:\n{r.stdout[-5000:]}\n{r.stderr[-5000:]}"
    return r.stdout


def test_node_client_suite(client_toolchains: None) -> None:
    out = _run(["npm", "test", "--silent"], REPO / "clients" / "node")
    assert "# fail 0" in out and "# pass 0" not in out


def test_go_client_suite(client_toolchains: None) -> None:
    out = _run(["bash", "-c", f"{GO_ENV} && go vet ./memoryd ./internal/... && go test -count=1 ./memoryd"], REPO)
    assert "ok  \tgithub.com/memoryd/memoryd/clients/go/memoryd" in out


def test_node_generated_code_matches_proto(client_toolchains: None) -> None:
    _run(["npm", "run", "--silent", "gen:check"], REPO / "clients" / "node")


def test_go_generated_code_matches_proto(client_toolchains: None) -> None:
    _run(["bash", str(REPO / "scripts" / "gen_go.sh"), "--check"], REPO)
