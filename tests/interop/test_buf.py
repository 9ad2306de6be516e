"""The wire API cannot break by accident: `buf lint` and `buf breaking` against the proto of the
last release (proto-released/, see buf.yaml) pass, and the check does catch a breaking change.
buf comes from the npm package @bufbuild/buf (a devDependency of clients/node: it ships the
binary, so no download happens outside the npm registry)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support import REPO

pytestmark = pytest.mark.timeout(900)  # the first test may install the toolchains
BUF = REPO / "clients" / "node" / "node_modules" / ".bin" / "buf"


def buf(*args: str, cwd: Path, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "BUF_CACHE_DIR": str(home / "cache")}
    return subprocess.run([str(BUF), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120,
                          check=False)


def test_lint_and_no_breaking_change_since_the_last_release(client_toolchains: None, tmp_path: Path) -> None:
    lint = buf("lint", cwd=REPO, home=tmp_path)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    breaking = buf("breaking", "--against", "proto-released", cwd=REPO, home=tmp_path)
    assert breaking.returncode == 0, breaking.stdout + breaking.stderr


@pytest.mark.parametrize(("old", "new", "rule"), [
    ("uint32 limit = 4;", "uint32 limit = 9;", "FIELD_NO_DELETE"),  # renumbered: old readers ignore field 9
    ("uint32 limit = 4;", "uint64 limit = 4;", "FIELD_SAME_TYPE"),
    ("uint32 limit = 4;", "uint32 max_messages = 4;", "FIELD_SAME_NAME"),  # JSON and generated code break
])
def test_a_breaking_change_is_caught(client_toolchains: None, tmp_path: Path, old: str, new: str, rule: str) -> None:
    work = tmp_path / "repo"
    shutil.copytree(REPO / "proto", work / "proto")
    shutil.copy(REPO / "buf.yaml", work / "buf.yaml")
    proto = work / "proto" / "memoryd" / "v1" / "memory.proto"
    text = proto.read_text()
    assert text.count(old) == 1
    proto.write_text(text.replace(old, new))
    r = buf("breaking", "--against", str(REPO / "proto-released"), "--error-format", "json", cwd=work, home=tmp_path)
    assert r.returncode != 0, r.stdout + r.stderr
    assert rule in {json.loads(line)["type"] for line in r.stdout.splitlines() if line.strip()}, r.stdout


def test_adding_a_field_is_not_breaking(client_toolchains: None, tmp_path: Path) -> None:
    work = tmp_path / "repo"
    shutil.copytree(REPO / "proto", work / "proto")
    shutil.copy(REPO / "buf.yaml", work / "buf.yaml")
    proto = work / "proto" / "memoryd" / "v1" / "memory.proto"
    text = proto.read_text()
    added = "uint32 limit = 4;\n  // A new option.\n  bool newest_first = 99;"
    proto.write_text(text.replace("uint32 limit = 4;", added))
    r = buf("breaking", "--against", str(REPO / "proto-released"), cwd=work, home=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
