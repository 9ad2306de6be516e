"""The Python examples in README.md, clients/python/README.md and examples/ work as written
(against a real daemon; in the READMEs only the address is swapped for a free port, the
examples/ scripts get it from MEMORYD_ADDR as in a pod)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import REPO, daemon_process, free_port, wait_serving

DEFAULT_ADDRESS = "127.0.0.1:50051"


@pytest.fixture
def daemon() -> Iterator[str]:
    address = f"127.0.0.1:{free_port()}"
    with daemon_process("--listen", address, "--shutdown-grace", "1"):
        wait_serving(address, "memoryd.v1.MemoryService")
        yield address


def python_block(readme: Path) -> str:
    match = re.search(r"```python\n(.*?)```", readme.read_text(encoding="utf-8"), re.S)
    assert match, f"no python block in {readme}"
    return match.group(1)


def run(code: str, address: str) -> str:
    assert DEFAULT_ADDRESS in code
    result = subprocess.run([sys.executable, "-c", code.replace(DEFAULT_ADDRESS, address)],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout


def run_script(path: Path, address: str, env: dict[str, str] | None = None) -> str:
    """An examples/ script as a user runs it in a pod: the address comes from MEMORYD_ADDR."""
    result = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, timeout=60, check=False,
                            env={**os.environ, "MEMORYD_ADDR": address, **(env or {})})
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_readme_quickstart(daemon: str) -> None:
    out = run(python_block(REPO / "README.md"), daemon)
    assert "1 " in out and "Hello!" in out and "message_count: 2" in out


def test_python_client_readme(daemon: str) -> None:
    assert "Where is my parcel?" in run(python_block(REPO / "clients" / "python" / "README.md"), daemon)


def test_examples_quickstart_script(daemon: str) -> None:
    out = run_script(REPO / "examples" / "quickstart.py", daemon)
    assert "3 messages" in out and "o200k_base" in out


def test_examples_async_agents_script() -> None:
    address = f"127.0.0.1:{free_port()}"
    config = REPO / "examples" / "project" / "memoryd.yaml"
    with daemon_process("--listen", address, "--config", str(config), "--shutdown-grace", "1"):
        wait_serving(address, "memoryd.v1.MemoryService")
        out = run_script(REPO / "examples" / "async_agents.py", address)
    assert "resolution agent sees: Router broken, SSN [REDACTED]" in out
    assert "123-45-6789" not in out
    assert "read-only reference:" in out


def test_examples_external_summary_script(daemon: str) -> None:
    """The agent folds with its own summary (a deterministic stand-in for the model offline)."""
    out = run_script(REPO / "examples" / "external_summary.py", daemon, env={"OPENAI_API_KEY": ""})
    assert "folded [1, 2]" in out
    lines = out.splitlines()
    assert lines[1].strip().startswith("summary") and "A-4821" in lines[1]
    assert "(typed while the model was writing)" in out  # the append made meanwhile stayed live
