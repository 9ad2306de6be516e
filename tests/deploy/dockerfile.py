"""Just enough of the Dockerfile format to replay an image build's COPY and pip
steps without a container engine (no engine runs in CI).

Covers what the project's Dockerfile uses: line continuations, comments, the
exec (JSON) form, stages, WORKDIR, ENV key=value, COPY of files, directories and
globs from the build context filtered by .dockerignore, and RUN flags.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import shutil
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath


@dataclass
class Instruction:
    op: str
    value: str
    flags: dict[str, str] = field(default_factory=dict)
    mounts: list[dict[str, str]] = field(default_factory=list)  # RUN --mount=k=v,k=v (repeatable)

    def exec_form(self) -> list[str]:
        parsed = json.loads(self.value)
        assert isinstance(parsed, list), f"{self.op} must use the exec (JSON) form"
        return [str(p) for p in parsed]


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction]

    def all(self, op: str) -> list[Instruction]:
        return [i for i in self.instructions if i.op == op]

    def last(self, op: str) -> Instruction:
        found = self.all(op)
        assert found, f"no {op} in stage {self.name or self.base}"
        return found[-1]

    def env(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for ins in self.all("ENV"):
            for pair in shlex.split(ins.value):
                key, _, value = pair.partition("=")
                out[key] = value
        return out

    def workdir(self) -> PurePosixPath:
        path = PurePosixPath("/")
        for ins in self.all("WORKDIR"):
            path = path / ins.value
        return path


def parse(text: str) -> list[Stage]:
    """Stages of a Dockerfile, each with its instructions in order."""
    logical: list[str] = []
    buf = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not buf and (not stripped or stripped.startswith("#")):
            continue
        if buf and stripped.startswith("#"):
            continue  # comment lines inside a continuation are dropped, as Docker does
        if stripped.endswith("\\"):
            buf += stripped[:-1] + " "
            continue
        logical.append(buf + stripped)
        buf = ""
    stages: list[Stage] = []
    for line in logical:
        op, _, rest = line.partition(" ")
        flags: dict[str, str] = {}
        mounts: list[dict[str, str]] = []
        rest = rest.strip()
        while op.upper() in ("COPY", "RUN", "ADD", "FROM") and rest.startswith("--"):
            token, _, rest = rest.partition(" ")
            key, _, value = token[2:].partition("=")
            if key == "mount":
                mounts.append(dict(kv.split("=", 1) for kv in value.split(",")))
            else:
                flags[key] = value
            rest = rest.strip()
        ins = Instruction(op.upper(), rest, flags, mounts)
        if ins.op == "FROM":
            words = rest.split()
            stages.append(Stage(words[0], words[2] if len(words) > 2 else None, []))
        elif ins.op != "ARG" or stages:
            stages[-1].instructions.append(ins)
    return stages


def dockerignore_filter(context: Path) -> re.Pattern[str] | None:
    """One regex matching every context path that .dockerignore excludes (no `!` rules)."""
    file = context / ".dockerignore"
    if not file.exists():
        return None
    patterns = [p.strip().strip("/") for p in file.read_text().splitlines() if p.strip() and not p.startswith("#")]
    assert not [p for p in patterns if p.startswith("!")], "exceptions are not supported here"
    regexes = []
    for pattern in patterns:
        parts = [".*" if part == "**" else fnmatch.translate(part).removesuffix(r"\Z").replace(".*", "[^/]*")
                 for part in pattern.split("/")]
        regexes.append("/".join(parts).replace(".*/", "(?:.*/)?"))
    # A pattern excludes the path it matches and everything beneath it.
    return re.compile(rf"^(?:{'|'.join(regexes)})(?:/.*)?$")


def copy_from_context(context: Path, root: Path, stage: Stage, ins: Instruction) -> None:
    """Perform `COPY src... dest` of a stage into `root` (the stage's filesystem)."""
    ignored = dockerignore_filter(context)
    *sources, dest = shlex.split(ins.value)
    dest_path = PurePosixPath(dest) if dest.startswith("/") else stage.workdir() / dest
    target = root / str(dest_path).lstrip("/")
    matched = [m for s in sources for m in sorted(context.glob(s))]
    assert matched, f"COPY {ins.value}: nothing matched"
    for src in matched:
        rel = src.relative_to(context).as_posix()
        if ignored and ignored.match(rel):
            continue
        if src.is_dir():
            shutil.copytree(src, target, dirs_exist_ok=True,
                            ignore=lambda d, names: _ignored_names(context, ignored, d, names))
        else:
            into = target / src.name if (dest.endswith("/") or len(sources) > 1) else target
            into.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, into)


def _ignored_names(context: Path, ignored: re.Pattern[str] | None, directory: str, names: list[str]) -> list[str]:
    if ignored is None:
        return []
    base = Path(directory).relative_to(context)
    return [n for n in names if ignored.match((base / n).as_posix())]


PIP_STEPS = ("wheel", "install", "check")


def pip_commands(ins: Instruction) -> list[list[str]]:
    """The `pip wheel` / `pip install` / `pip check` commands of a RUN (each `&&` segment that runs pip)."""
    out = []
    for segment in ins.value.split("&&"):
        words = shlex.split(segment)
        if words[:1] == ["pip"] and words[1:2] and words[1] in PIP_STEPS:
            out.append(words[1:])
        elif words[:3] == ["python", "-m", "pip"] and words[3:4] and words[3] in PIP_STEPS:
            out.append(words[3:])
    return out
