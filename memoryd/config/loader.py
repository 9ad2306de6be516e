"""Load a project: the project file plus ``memories/*.yaml`` beside it.

Every problem in every file is collected before anything is built, and raised as one
``ConfigError`` whose lines read ``<file>:<line>: <field.path>: <problem>``, so one
``memoryd validate`` run shows everything to fix.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any

import yaml

from memoryd.config.checker import INVALID, MAX_NODES, Checker, Problem, TooManyNodes
from memoryd.config.model import (
    Agent,
    CircuitBreaker,
    FlushingStrategy,
    MemoryReference,
    MemoryResource,
    Persistence,
    PriorityBlock,
    PrivacyPolicy,
    Project,
    TokenAllocation,
    TokenCounting,
)
from memoryd.config.rules import Entry, check_resource_fields, get
from memoryd.config.schema import (
    ACCESS,
    CIRCUIT_BREAKER,
    DEFAULT_MAX_TOKENS,
    FLUSHING_STRATEGY,
    PERSISTENCE,
    PRIVACY_POLICY,
    PROJECT_FILE,
    REFERENCE,
    RESOURCE_FIELDS,
    RESOURCE_FILE,
    TOKEN_COUNTING,
    Obj,
)
from memoryd.engine.budget import budget_problems
from memoryd.errors import ConfigError
from memoryd.tokens import context_window

PROJECT_FILE_NAME = "memoryd.yaml"
RESOURCE_DIR = "memories"
_RESOURCE = Obj(RESOURCE_FIELDS)


def project_file_path(path: str | os.PathLike[str]) -> Path:
    """``path`` itself, or ``<path>/memoryd.yaml`` when ``path`` is a directory."""
    p = Path(path)
    return p / PROJECT_FILE_NAME if p.is_dir() else p


def load_project(path: str | os.PathLike[str]) -> Project:
    """Load and validate a project; ``ConfigError`` lists every problem found."""
    project_file = project_file_path(path)
    problems: list[Problem] = []
    main = Checker(str(project_file), problems)
    doc = _check_file(main, PROJECT_FILE)
    entries: list[Entry] = []
    for i, values in enumerate(doc.get("memories", ())):
        if values is not INVALID:
            entries.append(Entry(values, f"memories[{i}]", main))
    files = [str(project_file)]
    for resource_file in _resource_files(project_file.parent / RESOURCE_DIR):
        checker = Checker(str(resource_file), problems)
        files.append(checker.file)
        values = _check_file(checker, RESOURCE_FILE)
        if values:
            entries.append(Entry(values, "", checker))
    resources = _unique(entries, "memory")
    for entry in entries:
        _check_resource(entry)
    agent_entries = [Entry(v, f"agents[{i}]", main) for i, v in enumerate(doc.get("agents", ()))
                     if v is not INVALID]
    agents = _unique(agent_entries, "agent")
    for entry in agent_entries:
        _check_agent(entry, resources)
    if problems:
        rank = {f: i for i, f in enumerate(files)}
        problems.sort(key=lambda p: (rank.get(p.file, len(rank)), p.line or 0))
        raise ConfigError([str(p) for p in problems])
    return Project(
        id=doc["project"],
        resources={rid: _build_resource(e.values) for rid, e in resources.items()},
        agents={aid: _build_agent(e.values) for aid, e in agents.items()},
        source=str(project_file),
    )


def _check_file(checker: Checker, schema: Obj) -> dict[str, Any]:
    try:
        text = Path(checker.file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        checker.problems.append(Problem(checker.file, None, "(file)", f"cannot read: {reason}"))
        return {}
    try:
        node = yaml.compose(text, Loader=yaml.CSafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        detail = getattr(exc, "problem", None) or str(exc)
        checker.report(line, "(yaml)", f"not valid YAML: {detail}")
        return {}
    if node is None:
        checker.report(1, "(root)", "the file is empty")
        return {}
    try:
        values = checker.check(schema, node, "")
    except TooManyNodes as exc:
        checker.report(None, "(root)", f"more than {MAX_NODES} YAML nodes (after expanding aliases); "
                                       f"checking stopped at {exc.args[0]}")
        return {}
    return values if values is not INVALID else {}


def _resource_files(directory: Path) -> list[Path]:
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())


def _unique(entries: list[Entry], what: str) -> dict[str, Entry]:
    """Index entries by id, reporting every duplicate against its first definition."""
    out: dict[str, Entry] = {}
    for entry in entries:
        ident = entry.values.get("id")
        if ident is None:
            continue  # missing or invalid id: already reported
        if ident in out:
            entry.report(("id",), f"duplicate {what} id {ident!r} (first defined at {out[ident].where()})")
        else:
            out[ident] = entry
    return out


def _check_resource(e: Entry) -> None:
    check_resource_fields(e)
    v = e.values
    prefix = e.path()
    if "id" in v and not any(p.file == e.checker.file and (not prefix or p.path == prefix
                                                           or p.path.startswith((prefix + ".", prefix + "[")))
                             for p in e.checker.problems):
        # The promises (docs/tokens-and-budget.md) need room for the summary and recent turns.
        window = context_window(v["model"]) if "model" in v else None
        for names, message in budget_problems(_build_resource(v), window):
            e.report(names, message, line=e.checker.line_of(e.path(*names)) or _nearest_line(e, names))


def _nearest_line(e: Entry, names: tuple[str, ...]) -> int | None:
    """The line of the closest given field on ``names``' path, else of the budget."""
    for n in range(len(names) - 1, 0, -1):
        line = e.checker.line_of(e.path(*names[:n]))
        if line is not None:
            return line
    return e.line("max_tokens") if "max_tokens" in e.values else e.line("max_context_ratio")


def _check_agent(e: Entry, resources: dict[str, Entry]) -> None:
    v = e.values
    if any(e.checker.invalid(e.path(n), v, n) for n in ("memory", "memories")):
        return  # already reported; level rules would only add noise
    memory, refs = v.get("memory"), v.get("memories")
    # An invalid memory_key was reported already, but it was given: not "missing".
    key = INVALID if e.checker.invalid(e.path("memory_key"), v, "memory_key") else v.get("memory_key")
    if refs is not None:
        valid = [r for r in refs if r is not INVALID]
        if any(isinstance(r, dict) for r in valid) and any(isinstance(r, str) for r in valid):
            e.report(("memories",), "mixes memory ids (Level 2) and references {id, mode, key} (Level 3); "
                                    "use one form")
        elif valid and isinstance(valid[0], dict):
            _check_level3(e, memory, key)
        elif valid:
            _check_level2(e, memory, key)
        for i, ref in enumerate(refs):
            rid = ref.get("id") if isinstance(ref, dict) else ref
            if rid is not None and rid is not INVALID:
                sub = ("memories", f"[{i}]", "id") if isinstance(ref, dict) else ("memories", f"[{i}]")
                _check_known(e, sub, rid, resources)
        _check_no_duplicate_refs(e, refs)
    elif isinstance(memory, str):
        if key is None:
            e.report(("memory_key",), "is required with `memory: <id>` (Level 1)", line=e.line())
        _check_known(e, ("memory",), memory, resources)
    elif memory is True:
        e.report(("memories",), "`memory: true` needs `memories: [<id>, ...]` (Level 2)", line=e.line("memory"))
    elif key is not None:
        e.report(("memory_key",), "the agent references no memory (add `memory: <id>` or remove memory_key)")


def _check_level2(e: Entry, memory: Any, key: Any) -> None:
    if memory is not True:
        got = "missing" if memory is None else f"got memory: {_yaml_scalar(memory)}"
        e.report(("memory",), f"a list of memory ids (Level 2) requires `memory: true` ({got})",
                 line=e.line("memory") if memory is not None else e.line("memories"))
    if key is None:
        e.report(("memory_key",), "is required with a list of memory ids (Level 2)", line=e.line())


def _check_level3(e: Entry, memory: Any, key: Any) -> None:
    if memory is not None and memory is not True:
        e.report(("memory",), f"`memory: {_yaml_scalar(memory)}` cannot be combined with a list of references "
                              "(Level 3)")
    if key is not None:
        e.report(("memory_key",), "is not used with a list of references (Level 3); give each reference a key")


def _yaml_scalar(value: Any) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def _check_known(e: Entry, names: tuple[str, ...], memory_id: str, resources: dict[str, Entry]) -> None:
    if memory_id in resources:
        return
    close = difflib.get_close_matches(memory_id, list(resources), n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(sorted(resources)) or 'none'})"
    path = e.path(*names)
    e.checker.report(e.checker.line_of(path, e.line()), path, f"unknown memory {memory_id!r}{hint}")


def _check_no_duplicate_refs(e: Entry, refs: list[Any]) -> None:
    seen: set[str] = set()
    for i, ref in enumerate(refs):
        rid = ref.get("id") if isinstance(ref, dict) else ref
        if rid is None or rid is INVALID:
            continue
        if rid in seen:
            path = e.path("memories", f"[{i}]")
            e.checker.report(e.checker.line_of(path, e.line()), path, f"memory {rid!r} is referenced twice")
        seen.add(rid)


def _build_resource(v: dict[str, Any]) -> MemoryResource:
    flushing = v.get("flushing_strategy", {})
    persistence = v.get("persistence", {})
    breaker = persistence.get("circuit_breaker", {})
    privacy = v.get("privacy_policy", {})
    counting = v.get("token_counting", {})
    allocation = v.get("token_allocation")
    max_tokens = v.get("max_tokens")
    if max_tokens is None and "max_context_ratio" not in v:
        max_tokens = DEFAULT_MAX_TOKENS
    return MemoryResource(
        id=v["id"],
        description=get(_RESOURCE, v, "description"),
        type=get(_RESOURCE, v, "type"),
        max_tokens=max_tokens,
        max_context_ratio=v.get("max_context_ratio"),
        model=v.get("model"),
        message_limit=v.get("message_limit"),
        default_priority=get(_RESOURCE, v, "default_priority"),
        token_allocation=TokenAllocation(**allocation) if allocation else None,
        priority_blocks=tuple(
            PriorityBlock(b["priority"], tuple(b["content_types"]), b.get("max_tokens"))
            for b in v.get("priority_blocks", ())
        ),
        flushing_strategy=FlushingStrategy(
            type=get(FLUSHING_STRATEGY, flushing, "type"),
            summarize_threshold=get(FLUSHING_STRATEGY, flushing, "summarize_threshold"),
            summary_tokens=get(FLUSHING_STRATEGY, flushing, "summary_tokens"),
            summarize_oldest_percent=get(FLUSHING_STRATEGY, flushing, "summarize_oldest_percent"),
        ),
        persistence=Persistence(
            type=persistence.get("type"),
            ttl_s=get(PERSISTENCE, persistence, "ttl"),  # None when the file says `never`
            circuit_breaker=CircuitBreaker(
                timeout_s=get(CIRCUIT_BREAKER, breaker, "timeout"),
                max_failures=get(CIRCUIT_BREAKER, breaker, "max_failures"),
                reset_timeout_s=get(CIRCUIT_BREAKER, breaker, "reset_timeout"),
            ),
        ),
        privacy_policy=PrivacyPolicy(
            redact_patterns=tuple(get(PRIVACY_POLICY, privacy, "redact_patterns")),
            non_persistable_message_types=tuple(get(PRIVACY_POLICY, privacy, "non_persistable_message_types")),
            default_redaction_string=get(PRIVACY_POLICY, privacy, "default_redaction_string"),
        ),
        direct_access=get(ACCESS, v.get("access", {}), "direct"),
        oversize=get(_RESOURCE, v, "oversize"),
        token_counting=TokenCounting(
            image_tokens=get(TOKEN_COUNTING, counting, "image_tokens"),
            file_tokens=get(TOKEN_COUNTING, counting, "file_tokens"),
            count_extra=get(TOKEN_COUNTING, counting, "count_extra"),
        ),
    )


def _build_agent(v: dict[str, Any]) -> Agent:
    refs = v.get("memories")
    memory = v.get("memory")
    if refs and isinstance(refs[0], dict):
        level = 3
        references = tuple(MemoryReference(r["id"], get(REFERENCE, r, "mode"), r["key"]) for r in refs)
    elif refs:
        level = 2
        references = tuple(MemoryReference(rid, "read-write", v["memory_key"]) for rid in refs)
    elif isinstance(memory, str):
        level = 1
        references = (MemoryReference(memory, "read-write", v["memory_key"]),)
    else:
        level, references = 0, ()
    return Agent(id=v["id"], level=level, references=references)
