"""Deployment test fixtures: the tool virtualenv holding Helm's library and the
Kubernetes schemas, and a runner for scripts/chart_check.py inside it.

helm-sdkpy declares Python >= 3.12 and is installed with --ignore-requires-python,
so it lives in its own virtualenv (`.tool-venv`, gitignored) instead of the
project's. It is created on first use from tool-requirements.txt and reused while
that file and the interpreter stay the same; a file lock lets parallel pytest
workers share it.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import venv
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
TOOL_VENV = Path(os.environ.get("MEMORYD_TOOL_VENV", REPO / ".tool-venv"))
TOOL_REQUIREMENTS = Path(__file__).with_name("tool-requirements.txt")
CHART_CHECK = REPO / "scripts" / "chart_check.py"

# Subprocesses (pip, the tool venv) must not see the source tree through the test
# runner's PYTHONPATH: pip would take it for installed distributions.
CLEAN_ENV = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}

ChartCheck = Callable[[dict[str, Any]], dict[str, Any]]


@contextmanager
def _locked(name: str) -> Iterator[None]:
    path = Path(tempfile.gettempdir()) / f"memoryd-{hashlib.sha256(name.encode()).hexdigest()[:16]}.lock"
    with path.open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def ensure_tool_venv() -> Path:
    """Return the tool venv's python, creating or refreshing the venv when needed."""
    want = hashlib.sha256(TOOL_REQUIREMENTS.read_bytes() + sys.version.encode()).hexdigest()
    stamp = TOOL_VENV / "memoryd-tool.stamp"
    python = TOOL_VENV / "bin" / "python"
    with _locked(str(TOOL_VENV)):
        if stamp.is_file() and stamp.read_text() == want and python.exists():
            return python
        shutil.rmtree(TOOL_VENV, ignore_errors=True)
        venv.EnvBuilder(with_pip=True, clear=True).create(TOOL_VENV)
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
             "--ignore-requires-python", "-r", str(TOOL_REQUIREMENTS)],
            env=CLEAN_ENV, check=True, timeout=900,
        )
        stamp.write_text(want)
    return python


@pytest.fixture(scope="session")
def tool_python() -> Path:
    return ensure_tool_venv()


@pytest.fixture(scope="session")
def chart_check(tool_python: Path) -> ChartCheck:
    """Run one batch request through scripts/chart_check.py (lint, render, validate)."""

    def run(request: dict[str, Any]) -> dict[str, Any]:
        proc = subprocess.run(
            [str(tool_python), str(CHART_CHECK), "--batch"],
            input=json.dumps(request), capture_output=True, text=True, timeout=600,
            env={**CLEAN_ENV, "HELM_DRIVER": "memory"},
        )
        assert proc.returncode == 0, proc.stderr
        result: dict[str, Any] = json.loads(proc.stdout)
        return result

    return run
