"""The examples in clients/node/README.md and clients/go/README.md work as written."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import REPO, daemon_process, free_port, wait_serving

# The first test also installs the toolchains on a fresh machine (apt, npm ci, a cold Go build).
pytestmark = pytest.mark.timeout(900)

EXPECTED = "stored at seq 1\n1: Hello 👋\n"


def code_block(readme: Path, lang: str) -> str:
    match = re.search(rf"```{lang}\n(.*?)```", readme.read_text(encoding="utf-8"), re.S)
    assert match, f"no ```{lang} block in {readme}"
    return match.group(1)


@pytest.fixture
def fresh_daemon(client_toolchains: None) -> Iterator[str]:
    address = f"127.0.0.1:{free_port()}"
    with daemon_process("--listen", address, "--shutdown-grace", "1"):
        wait_serving(address, "memoryd.v1.MemoryService")
        yield address


def run(cmd: list[str], cwd: Path, env: dict[str, str]) -> str:
    r = subprocess.run(cmd, cwd=cwd, env={**os.environ, **env}, capture_output=True, text=True, timeout=180,
                       check=False)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_node_readme_example(fresh_daemon: str, tmp_path: Path) -> None:
    # A consumer project: the package installed under node_modules/, the example as example.mjs.
    (tmp_path / "node_modules" / "@memoryd").mkdir(parents=True)
    (tmp_path / "node_modules" / "@memoryd" / "client").symlink_to(REPO / "clients" / "node")
    (tmp_path / "example.mjs").write_text(code_block(REPO / "clients" / "node" / "README.md", "js"))
    out = run(["node", "example.mjs"], tmp_path, {"MEMORYD_ADDR": fresh_daemon})
    assert out == EXPECTED + "messages: 1\n"


def test_go_readme_example(fresh_daemon: str, tmp_path: Path) -> None:
    src = tmp_path / "src" / "example"
    src.mkdir(parents=True)
    (src / "main.go").write_text(code_block(REPO / "clients" / "go" / "README.md", "go"))
    gopath = f"{tmp_path}:{REPO / 'clients' / 'go' / 'gopath'}:/usr/share/gocode"
    env = {"GO111MODULE": "off", "GOPROXY": "off", "GOFLAGS": "", "GOPATH": gopath,
           "GOCACHE": str(REPO / "clients" / "go" / "gopath" / "cache"), "MEMORYD_ADDR": fresh_daemon}
    assert run(["go", "run", "."], src, env) == EXPECTED
