"""``memoryd validate PATH``: print every configuration problem, or a one-line summary."""

from __future__ import annotations

from typing import TextIO

from memoryd.config.loader import load_project
from memoryd.errors import ConfigError


def run_validate(path: str, out: TextIO) -> int:
    """0 and ``OK: project <id>: N memories, M agents (<file>)`` when valid; else 1 and one line per problem."""
    try:
        project = load_project(path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=out)
        return 1
    memories, agents = len(project.resources), len(project.agents)
    print(
        f"OK: project {project.id}: {memories} memor{'y' if memories == 1 else 'ies'}, "
        f"{agents} agent{'' if agents == 1 else 's'} ({project.source})",
        file=out,
    )
    return 0
