"""The examples in clients/node/README.md, clients/go/README.md and docs/clients.md work as written."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import REPO, daemon_process, free_port, wait_serving

# The first test also installs the toolchains on a fresh machine (apt, npm ci, a cold Go build).
pytestmark = pytest.mark.timeout(900)

EXPECTED = "stored at seq 1\n1: Hello 👋\n"
CLIENTS_DOC = REPO / "docs" / "clients.md"
# The OpenAI history of the docs/clients.md examples ("tool-calls" blocks), as each prints it back.
TOOL_CALLS_HISTORY = [
    {"role": "system", "content": "You are a support agent."},
    {"role": "user", "content": "Where is order A-48213?"},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "get_order", "arguments": '{"id": "A-48213"}'}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": '{"status": "shipped"}'},
    {"role": "assistant", "content": "It has shipped."},
]


def code_block(readme: Path, lang: str) -> str:
    match = re.search(rf"```{lang}\n(.*?)```", readme.read_text(encoding="utf-8"), re.S)
    assert match, f"no ```{lang} block in {readme}"
    return match.group(1)


def go_env(tmp_path: Path, address: str) -> dict[str, str]:
    gopath = f"{tmp_path}:{REPO / 'clients' / 'go' / 'gopath'}:/usr/share/gocode"
    return {"GO111MODULE": "off", "GOPROXY": "off", "GOFLAGS": "", "GOPATH": gopath,
            "GOCACHE": str(REPO / "clients" / "go" / "gopath" / "cache"), "MEMORYD_ADDR": address}


def node_project(tmp_path: Path, code: str) -> None:
    """A consumer project: the package installed under node_modules/, the example as example.mjs."""
    (tmp_path / "node_modules" / "@memoryd").mkdir(parents=True)
    (tmp_path / "node_modules" / "@memoryd" / "client").symlink_to(REPO / "clients" / "node")
    (tmp_path / "example.mjs").write_text(code)


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
    node_project(tmp_path, code_block(REPO / "clients" / "node" / "README.md", "js"))
    out = run(["node", "example.mjs"], tmp_path, {"MEMORYD_ADDR": fresh_daemon})
    assert out == EXPECTED + "messages: 1\n"


def test_go_readme_example(fresh_daemon: str, tmp_path: Path) -> None:
    src = tmp_path / "src" / "example"
    src.mkdir(parents=True)
    (src / "main.go").write_text(code_block(REPO / "clients" / "go" / "README.md", "go"))
    assert run(["go", "run", "."], src, go_env(tmp_path, fresh_daemon)) == EXPECTED


def test_clients_doc_python_tool_calls_example(fresh_daemon: str, tmp_path: Path) -> None:
    for _ in range(2):  # runs again on the same daemon (a reader tries an example twice)
        out = run([sys.executable, "-c", code_block(CLIENTS_DOC, "python tool-calls")], tmp_path,
                  {"MEMORYD_ADDR": fresh_daemon})
        assert out == "True You are a support agent. ['user', 'assistant', 'user', 'assistant']\n"


def test_clients_doc_node_tool_calls_example(fresh_daemon: str, tmp_path: Path) -> None:
    node_project(tmp_path, code_block(CLIENTS_DOC, "js tool-calls"))
    assert run(["node", "example.mjs"], tmp_path, {"MEMORYD_ADDR": fresh_daemon}) == "true\n"


def test_clients_doc_go_tool_calls_example(fresh_daemon: str, tmp_path: Path) -> None:
    src = tmp_path / "src" / "example"
    src.mkdir(parents=True)
    (src / "main.go").write_text(code_block(CLIENTS_DOC, "go tool-calls"))
    assert json.loads(run(["go", "run", "."], src, go_env(tmp_path, fresh_daemon))) == TOOL_CALLS_HISTORY
