"""Committed generated code must match proto/ (regenerate: python scripts/gen_proto.py)."""

from __future__ import annotations

import subprocess
import sys

from tests.support import REPO


def test_generated_code_matches_proto() -> None:
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "gen_proto.py"), "--check"],
                            capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
