"""Loading a project: the three levels, defaults, and every error with file, line and field."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from memoryd.config.loader import load_project
from memoryd.config.model import (
    CircuitBreaker,
    FlushingStrategy,
    MemoryReference,
    Persistence,
    PriorityBlock,
    PrivacyPolicy,
    TokenAllocation,
)
from memoryd.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "project"

CTX = "resource: memory\nid: ctx\n"
PREFS = "resource: memory\nid: prefs\n"


def write(tmp_path: Path, project: str, resources: dict[str, str] | None = None) -> Path:
    path = tmp_path / "memoryd.yaml"
    path.write_text(textwrap.dedent(project).lstrip("\n"), encoding="utf-8")
    if resources:
        (tmp_path / "memories").mkdir()
        for name, text in resources.items():
            (tmp_path / "memories" / name).write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_project(path)
    assert str(info.value) == "\n".join(info.value.problems)
    return info.value.problems


def assert_problem(found: list[str], file: Path, line: int, field: str, fragment: str) -> None:
    prefix = f"{file}:{line}: {field}: "
    matching = [p for p in found if p.startswith(prefix) and fragment in p]
    assert matching, f"no problem starting {prefix!r} containing {fragment!r} in:\n" + "\n".join(found)


# -- levels -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("agent", "level", "references"),
    [
        pytest.param("  - id: a\n", 0, (), id="stateless"),
        pytest.param("  - id: a\n    memory: false\n", 0, (), id="memory-false"),
        pytest.param(
            "  - id: a\n    memory: ctx\n    memory_key: 'k-{{ .user.id }}'\n",
            1, (MemoryReference("ctx", "read-write", "k-{{ .user.id }}"),), id="level1",
        ),
        pytest.param(
            "  - id: a\n    memory: true\n    memories: [ctx, prefs]\n    memory_key: 's-{{ .session.id }}'\n",
            2,
            (MemoryReference("ctx", "read-write", "s-{{ .session.id }}"),
             MemoryReference("prefs", "read-write", "s-{{ .session.id }}")),
            id="level2",
        ),
        pytest.param(
            "  - id: a\n    memories:\n      - {id: ctx, key: 'c-{{ .workflow.id }}'}\n"
            "      - {id: prefs, mode: read-only, key: 'p-{{ .user.id }}'}\n",
            3,
            (MemoryReference("ctx", "read-write", "c-{{ .workflow.id }}"),
             MemoryReference("prefs", "read-only", "p-{{ .user.id }}")),
            id="level3",
        ),
        pytest.param(
            "  - id: a\n    memory: true\n    memories:\n      - {id: ctx, mode: read-write, key: k}\n",
            3, (MemoryReference("ctx", "read-write", "k"),), id="level3-with-memory-true",
        ),
    ],
)
def test_levels(tmp_path: Path, agent: str, level: int, references: tuple[MemoryReference, ...]) -> None:
    path = write(tmp_path, "project: demo\nagents:\n" + agent, {"ctx.yaml": CTX, "prefs.yaml": PREFS})
    project = load_project(path)
    assert project.agents["a"].level == level
    assert project.agents["a"].references == references


def test_defaults_of_a_minimal_resource(tmp_path: Path) -> None:
    project = load_project(write(tmp_path, "project: demo\n", {"ctx.yaml": CTX}))
    res = project.resources["ctx"]
    assert res.type == "token_based"
    assert res.max_tokens == 4000
    assert res.max_context_ratio is None
    assert res.model is None
    assert res.message_limit is None
    assert res.default_priority == 5
    assert res.token_allocation is None
    assert res.priority_blocks == ()
    assert res.flushing_strategy == FlushingStrategy("hybrid_summary", 0.8, 500, 30.0)
    assert res.persistence == Persistence(None, 86400.0, CircuitBreaker(0.5, 5, 10.0))
    assert res.privacy_policy == PrivacyPolicy((), (), "[REDACTED]")
    assert res.direct_access == "read-write"


def test_every_field_is_read(tmp_path: Path) -> None:
    resource = """
        resource: memory
        id: full
        description: everything set
        type: token_based
        model: gpt-4o
        max_context_ratio: 0.5
        message_limit: 100
        default_priority: 7
        token_allocation: {system: 0.2, short_term: 0.5, long_term: 0.3}
        priority_blocks:
          - {priority: 0, content_types: [instructions], max_tokens: 100}
          - {priority: 3, content_types: [a, b]}
        flushing_strategy: {type: fifo, summarize_threshold: 0.9, summary_tokens: 200, summarize_oldest_percent: 50}
        persistence:
          type: embedded
          ttl: 1h30m
          circuit_breaker: {timeout: 250ms, max_failures: 3, reset_timeout: 2}
        privacy_policy:
          redact_patterns: ['\\d{3}-\\d{2}-\\d{4}']
          non_persistable_message_types: [card]
          default_redaction_string: "***"
        access: {direct: read-only}
    """
    res = load_project(write(tmp_path, "project: demo\n", {"full.yaml": resource})).resources["full"]
    assert res.description == "everything set"
    assert (res.model, res.max_tokens, res.max_context_ratio, res.message_limit) == ("gpt-4o", None, 0.5, 100)
    assert res.default_priority == 7
    assert res.token_allocation == TokenAllocation(0.2, 0.5, 0.3)
    assert res.priority_blocks == (PriorityBlock(0, ("instructions",), 100), PriorityBlock(3, ("a", "b"), None))
    assert res.flushing_strategy == FlushingStrategy("fifo", 0.9, 200, 50.0)
    assert res.persistence == Persistence("embedded", 5400.0, CircuitBreaker(0.25, 3, 2.0))
    assert res.privacy_policy == PrivacyPolicy((r"\d{3}-\d{2}-\d{4}",), ("card",), "***")
    assert res.direct_access == "read-only"


@pytest.mark.parametrize(
    ("ttl", "seconds"),
    [("90", 90.0), ("0.5", 0.5), ('"90s"', 90.0), ('"30m"', 1800.0), ('"24h"', 86400.0),
     ('"2d"', 172800.0), ('"1h30m"', 5400.0), ('"500ms"', 0.5), ("never", None)],
)
def test_durations(tmp_path: Path, ttl: str, seconds: float | None) -> None:
    res = load_project(write(tmp_path, "project: demo\n", {"r.yaml": CTX + f"persistence: {{ttl: {ttl}}}\n"}))
    assert res.resources["ctx"].persistence.ttl_s == seconds


def test_inline_resources_yml_files_null_fields_and_directory_path(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        project: demo
        memories:
          - id: inline
            max_tokens: 1000
            description:
        agents:
        """,
        {"b.yml": "resource: memory\nid: from-yml\n", "notes.txt": "not: yaml: at all: ["},
    )
    project = load_project(tmp_path)  # a directory means <dir>/memoryd.yaml
    assert project.source == str(path)
    assert sorted(project.resources) == ["from-yml", "inline"]
    assert project.resources["inline"].description == ""
    assert project.agents == {}


def test_external_strategy(tmp_path: Path) -> None:
    extra = "flushing_strategy: {type: external, external_timeout: 90s, summary_tokens: 300}\n"
    project = load_project(write(tmp_path, "project: demo\n", {"e.yaml": "resource: memory\nid: e\n" + extra}))
    fs = project.resources["e"].flushing_strategy
    assert (fs.type, fs.external_timeout_s, fs.summary_tokens, fs.summarises) == ("external", 90.0, 300, True)
    (tmp_path / "d").mkdir()
    minimal = "resource: memory\nid: e\nflushing_strategy: {type: external}\n"
    default = load_project(write(tmp_path / "d", "project: demo\n", {"e.yaml": minimal}))
    assert default.resources["e"].flushing_strategy.external_timeout_s == 60.0


def test_example_project_loads() -> None:
    project = load_project(EXAMPLE)
    assert project.id == "support-demo"
    assert {a.id: a.level for a in project.agents.values()} == {
        "intake-agent": 3, "resolution-agent": 3, "preferences-agent": 1, "escalation-agent": 2,
        "classifier-agent": 0,
    }
    shared = {r.memory_id: r for r in project.agents["intake-agent"].references}
    resolution = {r.memory_id: r for r in project.agents["resolution-agent"].references}
    key = "support-{{ .workflow.input.conversationId }}"
    assert shared["customer-support-context"].key_template == resolution["customer-support-context"].key_template == key
    assert shared["user-preferences"].mode == resolution["user-preferences"].mode == "read-only"
    ctx = project.resources["customer-support-context"]
    assert ctx.token_allocation is not None
    assert ctx.priority_blocks
    assert ctx.privacy_policy.redact_patterns


# -- resource errors ----------------------------------------------------------------

RESOURCE_ERRORS = [
    ("max_token: 10\n", 3, "max_token", "unknown field 'max_token' (did you mean 'max_tokens'?)"),
    ("colour: red\n", 3, "colour", "known fields: resource, id,"),
    ("max_tokens: lots\n", 3, "max_tokens", "expected an integer, got a string 'lots'"),
    ("max_tokens: true\n", 3, "max_tokens", "expected an integer, got a boolean"),
    ("max_tokens: 1.5\n", 3, "max_tokens", "expected an integer, got a number"),
    ("max_tokens: -5\n", 3, "max_tokens", "must be ≥ 1 (got -5)"),
    ("max_tokens: 0\n", 3, "max_tokens", "must be ≥ 1 (got 0)"),
    ("max_tokens: 5\nmax_tokens: 6\n", 4, "max_tokens", "duplicate field (first given on line 3)"),
    ("max_context_ratio: 1.5\nmodel: gpt-4o\n", 3, "max_context_ratio", "must be > 0 and ≤ 1 (got 1.5)"),
    ("max_context_ratio: 0\nmodel: gpt-4o\n", 3, "max_context_ratio", "must be > 0 and ≤ 1 (got 0)"),
    ("max_context_ratio: .nan\nmodel: gpt-4o\n", 3, "max_context_ratio", "must be > 0 and ≤ 1"),
    ("max_context_ratio: 0.5\n", 3, "max_context_ratio", "needs `model`"),
    ("max_context_ratio: 0.5\nmodel: my-llm\n", 4, "model", "context window of model 'my-llm' is unknown"),
    ("max_tokens: 10\nmax_context_ratio: 0.5\nmodel: gpt-4o\n", 4, "max_context_ratio", "not both"),
    ("message_limit: 0\n", 3, "message_limit", "must be ≥ 1"),
    ("default_priority: 0\n", 3, "default_priority", "must be ≥ 1 and ≤ 1000"),
    ("type: message_count\n", 3, "type", "must be one of `token_based`"),
    ("description: [a]\n", 3, "description", "expected a string, got a list"),
    ("token_allocation:\n  system: 0.2\n  short_term: 0.5\n  long_term: 0.2\n", 3, "token_allocation",
     "must sum to 1 (±0.001), got 0.9"),
    ("token_allocation: {system: -0.1, short_term: 0.6, long_term: 0.5}\n", 3, "token_allocation.system",
     "must be ≥ 0 and ≤ 1 (got -0.1)"),
    ("token_allocation: {system: 0.5, short_term: 0.5}\n", 3, "token_allocation.long_term", "is required"),
    ("token_allocation: {system: 0.5, short_term: 0.5, long_term: 0}\n", 3, "token_allocation.long_term",
     "long_term must be > 0"),
    ("token_allocation: 0.5\n", 3, "token_allocation", "expected a mapping, got a number"),
    ("priority_blocks:\n  - priority: 1\n", 4, "priority_blocks[0].content_types", "is required"),
    ("priority_blocks:\n  - priority: 1\n    content_types: []\n", 5, "priority_blocks[0].content_types",
     "must not be empty"),
    ("priority_blocks:\n  - {priority: 1, content_types: [a]}\n  - {priority: 1, content_types: [b]}\n", 5,
     "priority_blocks[1].priority", "duplicate priority 1 (also in priority_blocks[0])"),
    ("priority_blocks:\n  - {priority: 1, content_types: [a]}\n  - {priority: 2, content_types: [a]}\n", 5,
     "priority_blocks[1].content_types", "'a' is already in priority_blocks[0]"),
    ("priority_blocks:\n  - {priority: 1, content_types: [a], max_tokens: -1}\n", 4,
     "priority_blocks[0].max_tokens", "must be ≥ 1"),
    ("priority_blocks:\n  - {priority: 1001, content_types: [a]}\n", 4, "priority_blocks[0].priority",
     "≤ 1000"),
    ("priority_blocks:\n  - {priority: -1, content_types: [a]}\n", 4, "priority_blocks[0].priority", "≥ 0"),
    ("priority_blocks: {priority: 1}\n", 3, "priority_blocks", "expected a list of mappings, got a mapping"),
    ("flushing_strategy:\n  summarize_oldest_percent: 0\n", 4, "flushing_strategy.summarize_oldest_percent",
     "must be > 0 and ≤ 100 (got 0)"),
    ("flushing_strategy:\n  summarize_oldest_percent: 101\n", 4, "flushing_strategy.summarize_oldest_percent",
     "must be > 0 and ≤ 100"),
    ("flushing_strategy:\n  summarize_threshold: 1.2\n", 4, "flushing_strategy.summarize_threshold",
     "must be > 0 and ≤ 1"),
    ("flushing_strategy: {type: lifo}\n", 3, "flushing_strategy.type", "(did you mean 'fifo'?)"),
    ("max_tokens: 400\nflushing_strategy: {summary_tokens: 400}\n", 4, "flushing_strategy.summary_tokens",
     "must be smaller than max_tokens (400)"),
    ("max_tokens: 300\n", 3, "flushing_strategy.summary_tokens",
     "summary_tokens (500, the default) must be smaller than max_tokens (300)"),
    ("persistence: {ttl: 3 days}\n", 3, "persistence.ttl", "invalid duration '3 days'"),
    ("persistence: {ttl: 0}\n", 3, "persistence.ttl", "must be > 0 or `never`"),
    ("persistence: {ttl: forever}\n", 3, "persistence.ttl", "invalid duration 'forever'"),
    ("persistence: {type: memcached}\n", 3, "persistence.type", "must be one of `redis`, `embedded`"),
    ("persistence:\n  circuit_breaker:\n    timeout: -1\n", 5, "persistence.circuit_breaker.timeout",
     "must be > 0 (got -1)"),
    ("persistence:\n  circuit_breaker: {max_failures: 0}\n", 4, "persistence.circuit_breaker.max_failures",
     "must be ≥ 1"),
    ("persistence:\n  circuit_breaker: {reset_timeout: soon}\n", 4,
     "persistence.circuit_breaker.reset_timeout", "invalid duration"),
    ("privacy_policy:\n  redact_patterns: ['(a)\\1']\n", 4, "privacy_policy.redact_patterns[0]",
     "does not compile with RE2"),
    ("privacy_policy:\n  redact_patterns:\n    - ok\n    - '(?<=x)y'\n", 6,
     "privacy_policy.redact_patterns[1]", "does not compile with RE2"),
    ("privacy_policy:\n  redact_patterns: ['(?=x)']\n", 4, "privacy_policy.redact_patterns[0]",
     "no backreferences or lookarounds"),
    ("privacy_policy:\n  redact_patterns: ['[a-']\n", 4, "privacy_policy.redact_patterns[0]", "RE2"),
    ("privacy_policy: {redact_patterns: abc}\n", 3, "privacy_policy.redact_patterns",
     "expected a list of RE2 patterns, got a string"),
    ("privacy_policy: {non_persistable_message_types: [1]}\n", 3,
     "privacy_policy.non_persistable_message_types[0]", "expected a string, got an integer"),
    # the context promises (docs/tokens-and-budget.md): room for a real summary and for recent turns
    ("max_tokens: 8000\nflushing_strategy:\n  summary_tokens: 12\n", 5, "flushing_strategy.summary_tokens",
     "the summary cap is 12 tokens; hybrid_summary needs at least 64"),
    ("max_tokens: 1000\ntoken_allocation: {system: 0.5, short_term: 0.45, long_term: 0.05}\n", 4,
     "token_allocation.long_term", "the summary cap is 50 tokens"),
    ("max_tokens: 1000\ntoken_allocation: {system: 0.5, short_term: 0.05, long_term: 0.45}\n", 4,
     "token_allocation.short_term", "leaves 50 tokens for recent turns; at least 64"),
    ("max_tokens: 1000\npriority_blocks:\n  - priority: 0\n    content_types: [policy]\n    max_tokens: 480\n", 7,
     "priority_blocks[0].max_tokens", "pinned cap 480 + summary cap 500 leave 20 of the 1000-token budget"),
    ("max_tokens: 1000\npriority_blocks:\n  - {priority: 7, content_types: [tool_result], max_tokens: 20}\n", 5,
     "priority_blocks[0].max_tokens", "20 cannot hold the newest message of its priority cut to fit"),
    ("max_tokens: 550\n", 3, "flushing_strategy.summary_tokens",
     "summary cap 500 leave 50 of the 550-token budget for recent turns"),
    ("flushing_strategy: {external_timeout: 5s}\n", 3, "flushing_strategy.external_timeout",
     "applies to type: external only (type is hybrid_summary)"),
    ("flushing_strategy: {type: external, external_timeout: 0}\n", 3, "flushing_strategy.external_timeout",
     "must be > 0"),
    ("max_tokens: 8000\nflushing_strategy: {type: external, summary_tokens: 12}\n", 4,
     "flushing_strategy.summary_tokens", "the summary cap is 12 tokens"),
    ("oversize: drop\n", 3, "oversize", "must be one of `truncate`, `reject`"),
    ("access: {direct: nobody}\n", 3, "access.direct", "must be one of `read-write`, `read-only`, `deny`"),
    ("access: {direct: read-write, indirect: x}\n", 3, "access.indirect", "unknown field"),
]


@pytest.mark.parametrize(("extra", "line", "field", "fragment"), RESOURCE_ERRORS,
                         ids=[f"{c[2]}:{c[3][:30]}" for c in RESOURCE_ERRORS])
def test_resource_errors(tmp_path: Path, extra: str, line: int, field: str, fragment: str) -> None:
    write(tmp_path, "project: demo\n", {"r.yaml": "resource: memory\nid: r\n" + extra})
    assert_problem(problems(tmp_path / "memoryd.yaml"), tmp_path / "memories" / "r.yaml", line, field, fragment)


@pytest.mark.parametrize(
    ("text", "line", "field", "fragment"),
    [
        ("resource: memory\nmax_tokens: 5\n", 1, "id", "is required"),
        ("resource: memory\nid:\n", 2, "id", "is required (got null)"),
        ("id: r\n", 1, "resource", "is required"),
        ("resource: agent\nid: r\n", 1, "resource", "must be one of `memory`"),
        ("resource: memory\nid: 'bad id'\n", 2, "id", "invalid id 'bad id'"),
        ("resource: memory\nid: 'a:b'\n", 2, "id", "invalid id"),
        ("resource: memory\nid: '{x}'\n", 2, "id", "invalid id"),
        ("resource: memory\nid: " + "x" * 129 + "\n", 2, "id", "at most 128"),
        ("resource: memory\nid: 7\n", 2, "id", "expected an id, got an integer"),
        ("- a\n- b\n", 1, "(root)", "expected a mapping, got a list"),
        ("resource: memory\nid: [\n", 3, "(yaml)", "not valid YAML"),
        ("", 1, "(root)", "the file is empty"),
        ("a: 1\n---\nb: 2\n", 2, "(yaml)", "not valid YAML"),
    ],
)
def test_resource_file_errors(tmp_path: Path, text: str, line: int, field: str, fragment: str) -> None:
    write(tmp_path, "project: demo\n", {"r.yaml": text})
    assert_problem(problems(tmp_path / "memoryd.yaml"), tmp_path / "memories" / "r.yaml", line, field, fragment)


# -- project and agent errors -------------------------------------------------------

AGENT_ERRORS = [
    ("  - id: a\n    memory: nope\n    memory_key: k\n", 4, "agents[0].memory", "unknown memory 'nope'"),
    ("  - id: a\n    memory: ctz\n    memory_key: k\n", 4, "agents[0].memory", "(did you mean 'ctx'?)"),
    ("  - id: a\n    memory: true\n    memories: [ctx, nope]\n    memory_key: k\n", 5, "agents[0].memories[1]",
     "unknown memory 'nope'"),
    ("  - id: a\n    memories:\n      - {id: nope, key: k}\n", 5, "agents[0].memories[0].id",
     "unknown memory 'nope'"),
    ("  - id: a\n    memories: [ctx]\n    memory_key: k\n", 4, "agents[0].memory",
     "a list of memory ids (Level 2) requires `memory: true` (missing)"),
    ("  - id: a\n    memory: false\n    memories: [ctx]\n    memory_key: k\n", 4, "agents[0].memory",
     "requires `memory: true` (got memory: false)"),
    ("  - id: a\n    memory: ctx\n    memories: [prefs]\n    memory_key: k\n", 4, "agents[0].memory",
     "requires `memory: true` (got memory: ctx)"),
    ("  - id: a\n    memory: true\n    memories: [ctx]\n", 3, "agents[0].memory_key",
     "is required with a list of memory ids (Level 2)"),
    ("  - id: a\n    memory: ctx\n", 3, "agents[0].memory_key", "is required with `memory: <id>` (Level 1)"),
    ("  - id: a\n    memory: ctx\n    memory_key:\n", 3, "agents[0].memory_key", "is required"),
    ("  - id: a\n    memories:\n      - {id: ctx}\n", 5, "agents[0].memories[0].key", "is required"),
    ("  - id: a\n    memories:\n      - {key: k}\n", 5, "agents[0].memories[0].id", "is required"),
    ("  - id: a\n    memories:\n      - {id: ctx, key: k, mode: write}\n", 5, "agents[0].memories[0].mode",
     "must be one of `read-write`, `read-only` (got 'write')"),
    ("  - id: a\n    memories:\n      - {id: ctx, key: k, mode: readonly}\n", 5, "agents[0].memories[0].mode",
     "(did you mean 'read-only'?)"),
    ("  - id: a\n    memories:\n      - {id: ctx, key: k}\n    memory_key: k\n", 6, "agents[0].memory_key",
     "is not used with a list of references (Level 3)"),
    ("  - id: a\n    memory: ctx\n    memories:\n      - {id: ctx, key: k}\n", 4, "agents[0].memory",
     "`memory: ctx` cannot be combined with a list of references"),
    ("  - id: a\n    memory: true\n    memories:\n      - ctx\n      - {id: prefs, key: k}\n    memory_key: k\n",
     5, "agents[0].memories", "mixes memory ids (Level 2) and references"),
    ("  - id: a\n    memory: true\n", 4, "agents[0].memories", "`memory: true` needs `memories:"),
    ("  - id: a\n    memory_key: k\n", 4, "agents[0].memory_key", "the agent references no memory"),
    ("  - id: a\n    memory: false\n    memory_key: k\n", 5, "agents[0].memory_key", "references no memory"),
    ("  - id: a\n    memory: true\n    memories: [ctx, ctx]\n    memory_key: k\n", 5, "agents[0].memories[1]",
     "memory 'ctx' is referenced twice"),
    ("  - id: a\n    memories:\n      - {id: ctx, key: a}\n      - {id: ctx, key: b}\n", 6,
     "agents[0].memories[1]", "referenced twice"),
    ("  - id: a\n    memory: ctx\n    memory_key: '{{ .user.id | lower }}'\n", 5, "agents[0].memory_key",
     "invalid key template '{{ .user.id | lower }}': pipes are not supported"),
    ("  - id: a\n    memory: ctx\n    memory_key: 'k-{{ .user.id'\n", 5, "agents[0].memory_key", "unclosed"),
    ("  - id: a\n    memory: ctx\n    memory_key: ''\n", 5, "agents[0].memory_key", "empty"),
    ("  - id: a\n    memories:\n      - {id: ctx, key: '{{ .secrets.token }}'}\n", 5, "agents[0].memories[0].key",
     "unknown template variable '.secrets.token'"),
    ("  - id: a\n    memories:\n      - {id: ctx, key: '{{ index .workflow.input \"x\" }}'}\n", 5,
     "agents[0].memories[0].key", "function calls"),
    ("  - id: 'a b'\n", 3, "agents[0].id", "invalid id 'a b'"),
    ("  - memory: false\n", 3, "agents[0].id", "is required"),
    ("  - id: a\n    memories: []\n", 4, "agents[0].memories", "must not be empty"),
    ("  - id: a\n    memory: 5\n", 4, "agents[0].memory", "expected id or boolean, got an integer"),
    ("  - id: a\n    memories: ctx\n", 4, "agents[0].memories", "expected a list of ids or mappings, got a string"),
    ("  - id: a\n    memories: [[ctx]]\n", 4, "agents[0].memories[0]", "expected id or mapping, got a list"),
    ("  - id: a\n    instructions: be nice\n", 4, "agents[0].instructions", "unknown field 'instructions'"),
    ("  - id: a\n    memory_keys: k\n", 4, "agents[0].memory_keys", "(did you mean 'memory_key'?)"),
    ("  - id: a\n  - id: a\n", 4, "agents[1].id", "duplicate agent id 'a' (first defined at "),
    ("  - just-a-name\n", 3, "agents[0]", "expected a mapping, got a string"),
]


@pytest.mark.parametrize(("agents", "line", "field", "fragment"), AGENT_ERRORS,
                         ids=[f"{c[2]}:{c[3][:30]}" for c in AGENT_ERRORS])
def test_agent_errors(tmp_path: Path, agents: str, line: int, field: str, fragment: str) -> None:
    path = write(tmp_path, "project: demo\nagents:\n" + agents, {"ctx.yaml": CTX, "prefs.yaml": PREFS})
    assert_problem(problems(path), path, line, field, fragment)


@pytest.mark.parametrize(
    ("project", "line", "field", "fragment"),
    [
        ("agents: []\n", 1, "project", "is required"),
        ("project: 'my project'\n", 1, "project", "invalid id 'my project'"),
        ("project: 42\n", 1, "project", "expected an id, got an integer"),
        ("project: demo\nagent: []\n", 2, "agent", "(did you mean 'agents'?)"),
        ("project: demo\nagents: {a: 1}\n", 2, "agents", "expected a list of mappings, got a mapping"),
        ("project: demo\nmemories:\n  - {id: m, max_tokens: 0}\n", 3, "memories[0].max_tokens", "must be ≥ 1"),
        ("project: demo\nmemories:\n  - {id: m, resource: agent}\n", 3, "memories[0].resource",
         "must be one of `memory`"),
        ("project: demo\nmemories:\n  - {id: m}\n  - {id: m}\n", 4, "memories[1].id",
         "duplicate memory id 'm' (first defined at "),
        ("project: demo\nproject: other\n", 2, "project", "duplicate field (first given on line 1)"),
        ("project: demo\n\tagents: []\n", 2, "(yaml)", "not valid YAML"),
        ("just text\n", 1, "(root)", "expected a mapping, got a string"),
    ],
)
def test_project_file_errors(tmp_path: Path, project: str, line: int, field: str, fragment: str) -> None:
    path = write(tmp_path, project)
    assert_problem(problems(path), path, line, field, fragment)


def test_duplicate_resource_id_across_files_names_both(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "project: demo\nmemories:\n  - id: ctx\n",
        {"a.yaml": CTX, "b.yaml": "# comment\nresource: memory\nid: ctx\n"},
    )
    found = problems(path)
    memories = tmp_path / "memories"
    assert_problem(found, memories / "a.yaml", 2, "id", f"duplicate memory id 'ctx' (first defined at {path}:3)")
    assert_problem(found, memories / "b.yaml", 3, "id", f"(first defined at {path}:3)")


def test_missing_project_file(tmp_path: Path) -> None:
    found = problems(tmp_path / "nope.yaml")
    assert found == [f"{tmp_path / 'nope.yaml'}: (file): cannot read: No such file or directory"]


def test_all_problems_are_reported_at_once_in_file_and_line_order(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        project: demo
        agents:
          - id: a
            memory: nope
            memory_key: "{{ .user.name }}"
          - id: b
            memories: [ctx]
          - id: a
            colour: blue
        """,
        {
            "ctx.yaml": "resource: memory\nid: ctx\nmax_tokens: -1\nmax_token: 5\n",
            "other.yaml": "resource: memory\nid: other\nflushing_strategy: {type: lifo}\n",
        },
    )
    found = problems(path)
    memories = tmp_path / "memories"
    expected = [
        (path, 4, "agents[0].memory", "unknown memory 'nope'"),
        (path, 5, "agents[0].memory_key", "unknown template variable"),
        (path, 7, "agents[1].memory", "requires `memory: true`"),
        (path, 6, "agents[1].memory_key", "is required"),
        (path, 8, "agents[2].id", "duplicate agent id 'a'"),
        (path, 9, "agents[2].colour", "unknown field"),
        (memories / "ctx.yaml", 3, "max_tokens", "must be ≥ 1"),
        (memories / "ctx.yaml", 4, "max_token", "did you mean 'max_tokens'"),
        (memories / "other.yaml", 3, "flushing_strategy.type", "must be one of"),
    ]
    for file, line, field, fragment in expected:
        assert_problem(found, file, line, field, fragment)
    assert len(found) == len(expected)
    order = [(0 if p.startswith(str(path)) else 1 if "ctx.yaml" in p else 2, int(p.split(":")[1])) for p in found]
    assert order == sorted(order)


def test_yaml_anchors_and_merge_keys(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        project: demo
        memories:
          - &base
            id: a
            max_tokens: 1000
            persistence: {ttl: 1h}
          - <<: *base
            id: b
            max_tokens: 2000
        """,
    )
    project = load_project(path)
    assert project.resources["a"].max_tokens == 1000
    assert project.resources["b"].max_tokens == 2000
    assert project.resources["b"].persistence.ttl_s == 3600.0


def test_merge_key_needs_a_mapping(tmp_path: Path) -> None:
    path = write(tmp_path, "project: demo\nmemories:\n  - <<: [1]\n    id: a\n")
    assert_problem(problems(path), path, 3, "memories[0]", "a merge key (<<) needs a mapping, got an integer")


def test_alias_expansion_is_bounded(tmp_path: Path) -> None:
    """A small file whose aliases expand to millions of nodes stops with one problem, quickly."""
    lines = ["project: demo", "memories:", "  - id: m", "    priority_blocks: &blocks"]
    lines += [f"      - {{priority: {i}, content_types: [{', '.join(['x'] * 100)}]}}" for i in range(100)]
    lines += [f"  - {{id: k{i}, priority_blocks: *blocks}}" for i in range(100)]
    path = tmp_path / "memoryd.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    found = problems(path)
    assert any(p.startswith(f"{path}: (root): more than 200000 YAML nodes") for p in found)
