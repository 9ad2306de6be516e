"""``memoryd validate``: the example project passes, a broken copy lists every problem."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

from memoryd.config.validate_cmd import run_validate

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "project"
SSN_PATTERN = r"\b\d{3}-\d{2}-\d{4}\b"
BAD_PATTERN = r"(\d)\1" + SSN_PATTERN  # a backreference: RE2 refuses it


def broken_copy(tmp_path: Path) -> Path:
    """The example project with four mistakes in three files."""
    project = tmp_path / "project"
    shutil.copytree(EXAMPLE, project)
    main = project / "memoryd.yaml"
    text = main.read_text(encoding="utf-8")
    text = text.replace("        mode: read-only\n", "        mode: readonly\n", 1)
    text = text.replace("- id: customer-support-context\n        key:", "- id: customer-suport\n        key:", 1)
    main.write_text(text, encoding="utf-8")
    res = project / "memories" / "user-preferences.yaml"
    res.write_text(res.read_text(encoding="utf-8").replace("max_tokens: 1000", "max_token: 1000"), encoding="utf-8")
    ctx = project / "memories" / "customer-support-context.yaml"
    ctx.write_text(ctx.read_text(encoding="utf-8").replace(SSN_PATTERN, BAD_PATTERN), encoding="utf-8")
    return project


def line_of(path: Path, needle: str) -> int:
    lines = path.read_text(encoding="utf-8").splitlines()
    return next(i for i, line in enumerate(lines, 1) if needle in line)


def test_example_project_is_valid() -> None:
    out = io.StringIO()
    assert run_validate(str(EXAMPLE), out) == 0
    assert out.getvalue() == f"OK: project support-demo: 3 memories, 5 agents ({EXAMPLE / 'memoryd.yaml'})\n"


def test_broken_copy_lists_every_problem(tmp_path: Path) -> None:
    project = broken_copy(tmp_path)
    main, prefs = project / "memoryd.yaml", project / "memories" / "user-preferences.yaml"
    ctx = project / "memories" / "customer-support-context.yaml"
    out = io.StringIO()
    assert run_validate(str(main), out) == 1
    assert out.getvalue().splitlines() == [
        f"{main}:{line_of(main, 'mode: readonly')}: agents[0].memories[1].mode: must be one of `read-write`, "
        "`read-only` (got 'readonly') (did you mean 'read-only'?)",
        f"{main}:{line_of(main, 'customer-suport')}: agents[1].memories[0].id: unknown memory "
        "'customer-suport' (did you mean 'customer-support-context'?)",
        f"{ctx}:{line_of(ctx, BAD_PATTERN)}: privacy_policy.redact_patterns[0]: pattern {BAD_PATTERN!r} "
        "does not compile with RE2 (no backreferences or lookarounds): invalid escape sequence: \\1",
        f"{prefs}:{line_of(prefs, 'max_token:')}: max_token: unknown field 'max_token' (did you mean 'max_tokens'?)",
    ]


def _memoryd(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "clients" / "python"), env.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, "-m", "memoryd.cli", *args], capture_output=True, text=True, env=env, timeout=60,
        check=False,
    )


def test_memoryd_validate_command(tmp_path: Path) -> None:
    ok = _memoryd("validate", str(EXAMPLE))
    assert (ok.returncode, ok.stderr) == (0, "")
    assert ok.stdout.startswith("OK: project support-demo: 3 memories, 5 agents")
    project = broken_copy(tmp_path)
    bad = _memoryd("validate", str(project / "memoryd.yaml"))
    assert bad.returncode == 1
    assert bad.stderr == ""  # RE2 and YAML print nothing of their own
    lines = bad.stdout.splitlines()
    assert len(lines) == 4
    assert all(line.startswith(str(project)) for line in lines)


def test_memoryd_validate_refuses_a_resource_that_cannot_keep_the_context_promises(tmp_path: Path) -> None:
    """Issue 17: `summary_tokens: 12` (below the summary's header) used to pass; every fold then lost its messages."""
    project = tmp_path / "memoryd.yaml"
    project.write_text("project: p\nmemories:\n  - id: chat\n    max_tokens: 8000\n"
                       "    flushing_strategy:\n      summary_tokens: 12\n")
    bad = _memoryd("validate", str(project))
    assert bad.returncode == 1
    assert bad.stdout.splitlines() == [
        f"{project}:6: memories[0].flushing_strategy.summary_tokens: the summary cap is 12 tokens; hybrid_summary "
        "needs at least 64 (header, an omission line and its facts), or use type: fifo"
    ]
