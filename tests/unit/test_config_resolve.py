"""Resolution: agent references and direct keys to instance addresses; effective settings."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from memoryd.config.loader import load_project
from memoryd.config.model import Project, default_project, effective_settings
from memoryd.config.resolve import (
    ResolvedRef,
    resolve_agent,
    resolve_direct,
    resolve_reference,
)
from memoryd.errors import InvalidArgument, NotFound, PermissionDenied
from memoryd.keys import InstanceAddr, sanitize_key
from memoryd.store.redis.layout import InstanceKeys

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "project"
SHARED = "customer-support-context"


@pytest.fixture(scope="module")
def project() -> Project:
    return load_project(EXAMPLE)


def ctx(conversation: Any = "c-9", user: Any = "u-1", **extra: Any) -> dict[str, Any]:
    return {"workflow": {"id": "wf-1", "input": {"conversationId": conversation}}, "user": {"id": user}, **extra}


def test_two_agents_sharing_a_memory_reach_the_same_instance(project: Project) -> None:
    intake = resolve_reference(project, "intake-agent", SHARED, ctx())
    resolution = resolve_reference(project, "resolution-agent", SHARED, ctx())
    assert intake.addr == resolution.addr == InstanceAddr("support-demo", SHARED, "support-c-9")
    assert intake == ResolvedRef(
        memory_id=SHARED, mode="read-write", key_template="support-{{ .workflow.input.conversationId }}",
        key="support-c-9", addr=intake.addr, workflow_id=None, level=3,
    )


def test_levels_one_and_two_reach_the_same_shared_instance(project: Project) -> None:
    level1 = resolve_reference(project, "preferences-agent", "user-preferences", ctx())
    level3 = resolve_reference(project, "intake-agent", "user-preferences", ctx())
    assert level1.addr == level3.addr
    assert (level1.mode, level1.level, level3.mode) == ("read-write", 1, "read-only")
    level2 = resolve_reference(project, "escalation-agent", SHARED, ctx())
    assert level2.addr == resolve_reference(project, "intake-agent", SHARED, ctx()).addr
    assert (level2.mode, level2.level) == ("read-write", 2)


def test_different_template_inputs_are_isolated(project: Project) -> None:
    a = resolve_reference(project, "intake-agent", SHARED, ctx("c-1"))
    b = resolve_reference(project, "intake-agent", SHARED, ctx("c-2"))
    assert a.addr != b.addr
    assert InstanceKeys.of(a.addr).prefix != InstanceKeys.of(b.addr).prefix


def test_numbers_from_struct_render_without_trailing_zero(project: Project) -> None:
    assert resolve_reference(project, "intake-agent", SHARED, ctx(42.0)).key == "support-42"
    assert resolve_reference(project, "intake-agent", SHARED, ctx(True)).key == "support-true"


@pytest.mark.parametrize(
    ("context", "problem"),
    [
        ({"user": {"id": "u"}}, "missing"),
        (ctx(None), "null"),
        (ctx(""), "empty string"),
        (ctx({"nested": 1}), "an object"),
        (ctx([1, 2]), "a list"),
    ],
)
def test_unusable_template_variable_is_invalid_argument(
    project: Project, context: dict[str, Any], problem: str
) -> None:
    with pytest.raises(InvalidArgument, match=problem) as info:
        resolve_reference(project, "intake-agent", SHARED, context)
    assert info.value.field == "ref.agent.context.workflow.input.conversationId"


def test_unknown_agent_or_reference_is_not_found(project: Project) -> None:
    with pytest.raises(NotFound, match="unknown agent 'ghost'"):
        resolve_reference(project, "ghost", SHARED, ctx())
    with pytest.raises(NotFound, match="has no reference to memory 'escalation-notes'"):
        resolve_reference(project, "intake-agent", "escalation-notes", ctx())
    with pytest.raises(NotFound, match="has no reference"):
        resolve_reference(project, "classifier-agent", SHARED, ctx())
    with pytest.raises(NotFound, match="unknown agent"):
        resolve_agent(project, "ghost", ctx())


def test_daemon_owned_context_values_override_the_callers(tmp_path: Path) -> None:
    (tmp_path / "memoryd.yaml").write_text(
        "project: p1\nmemories:\n  - id: m\nagents:\n"
        "  - id: a\n    memory: m\n    memory_key: '{{ .project.id }}-{{ .agent.id }}-{{ .timestamp }}'\n"
    )
    project = load_project(tmp_path)
    now = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    forged = {"project": {"id": "other"}, "agent": {"id": "admin"}, "timestamp": "x"}
    ref = resolve_reference(project, "a", "m", forged, now=now)
    assert ref.key == "p1-a-2026-01-02T03:04:05Z"
    assert resolve_reference(project, "a", "m", {}, now=now).key == ref.key


def test_workflow_scoped_references(tmp_path: Path) -> None:
    (tmp_path / "memoryd.yaml").write_text(
        "project: p\nmemories:\n  - id: m\n  - id: n\nagents:\n"
        "  - id: a\n    memories:\n"
        "      - {id: m, key: 'wf-{{ .workflow.id }}'}\n"
        "      - {id: n, key: 'u-{{ .user.id }}'}\n"
    )
    project = load_project(tmp_path)
    agent, refs = resolve_agent(project, "a", {"workflow": {"id": 7.0}, "user": {"id": "u"}})
    assert agent.level == 3
    assert [(r.memory_id, r.key, r.workflow_id) for r in refs] == [("m", "wf-7", "7"), ("n", "u-u", None)]


def test_resolve_agent_renders_every_reference(project: Project) -> None:
    agent, refs = resolve_agent(project, "intake-agent", ctx())
    assert agent.id == "intake-agent"
    assert [(r.memory_id, r.mode, r.key) for r in refs] == [
        (SHARED, "read-write", "support-c-9"), ("user-preferences", "read-only", "prefs-u-1"),
    ]
    assert resolve_agent(project, "classifier-agent", {}) == (project.agents["classifier-agent"], [])


def test_resolve_agent_raises_the_first_error_naming_the_context_field(project: Project) -> None:
    with pytest.raises(InvalidArgument) as info:
        resolve_agent(project, "intake-agent", {"workflow": {"input": {"conversationId": "c"}}})
    assert info.value.field == "context.user.id"


def test_direct_keys_follow_access_direct(project: Project) -> None:
    with pytest.raises(PermissionDenied, match=r"access\.direct: deny"):
        resolve_direct(project, SHARED, "support-c-9")
    ro = resolve_direct(project, "user-preferences", "prefs-u-1")
    assert (ro.mode, ro.key, ro.level, ro.workflow_id, ro.key_template) == ("read-only", "prefs-u-1", 0, None, "")
    rw = resolve_direct(project, "escalation-notes", "../x y")
    assert rw.mode == "read-write"
    assert rw.key == sanitize_key("../x y")
    assert rw.addr == InstanceAddr("support-demo", "escalation-notes", rw.key)
    with pytest.raises(NotFound, match="unknown memory 'nope'"):
        resolve_direct(project, "nope", "k")


@pytest.mark.parametrize(("key", "problem"), [("", "empty"), ("k" * 1025, "1025 bytes")])
def test_direct_key_validation(key: str, problem: str) -> None:
    with pytest.raises(InvalidArgument, match=problem) as info:
        resolve_direct(default_project(), "default", key)
    assert info.value.field == "ref.key"


def test_a_direct_key_equal_to_a_rendered_key_is_the_same_instance(project: Project) -> None:
    """Direct and agent addressing share one key space (when the resource allows direct keys)."""
    via_agent = resolve_reference(project, "preferences-agent", "user-preferences", ctx(user="u-1"))
    assert resolve_direct(project, "user-preferences", "prefs-u-1").addr == via_agent.addr


@given(st.text(min_size=1, max_size=300), st.text(min_size=1, max_size=300))
def test_crafted_conversation_ids_never_share_an_instance(project: Project, a: str, b: str) -> None:
    ra = resolve_reference(project, "intake-agent", SHARED, ctx(a))
    rb = resolve_reference(project, "intake-agent", SHARED, ctx(b))
    assert (ra.addr == rb.addr) == (a == b)
    assert ra.addr.resource == SHARED
    assert ra.addr.project == "support-demo"


@pytest.mark.parametrize(
    "crafted",
    ["../c-9", "c-9/../../other", "*", "c-9*", "{c-9}", "}", "{", "c 9", "c-9 ", "x" * 10_240, "c-9é",
     "支持", "c-9.h0123456789abcdef", "c-9\x00"],
)
def test_crafted_keys_cannot_reach_another_instance(project: Project, crafted: str) -> None:
    victim = resolve_reference(project, "intake-agent", SHARED, ctx("c-9")).addr
    attacker = resolve_reference(project, "intake-agent", SHARED, ctx(crafted)).addr
    assert attacker != victim
    assert attacker.instance_id != victim.instance_id
    names, victim_names = InstanceKeys.of(attacker), InstanceKeys.of(victim)  # what Redis sees
    assert not {*names.data, names.lock} & {*victim_names.data, victim_names.lock}
    assert names.prefix.startswith("memoryd:v1:{") and names.prefix.endswith(f":support-demo:{SHARED}")
    assert names.prefix.count("{") == names.prefix.count("}") == 1
    assert len(attacker.key) <= 512


def test_effective_settings_are_complete_and_json_able(project: Project) -> None:
    settings = effective_settings(project.resources["user-preferences"])
    assert json.loads(json.dumps(settings)) == settings
    assert settings == {
        "id": "user-preferences",
        "description": "Long-lived customer preferences (language, channel, tone).",
        "type": "token_based",
        "max_tokens": 1000,
        "max_context_ratio": None,
        "model": None,
        "message_limit": None,
        "default_priority": 5,
        "token_allocation": None,
        "priority_blocks": [],
        "flushing_strategy": {"type": "fifo", "summarize_threshold": 0.8, "summary_tokens": 500,
                              "summarize_oldest_percent": 30.0},
        "persistence": {"type": None, "ttl": 2592000.0,
                        "circuit_breaker": {"timeout": 0.5, "max_failures": 5, "reset_timeout": 10.0}},
        "privacy_policy": {"redact_patterns": [], "non_persistable_message_types": [],
                           "default_redaction_string": "[REDACTED]"},
        "oversize": "truncate",
        "access": {"direct": "read-only"},
        "token_counting": {"image_tokens": 765, "file_tokens": 1000, "count_extra": False},
    }
    full = effective_settings(project.resources[SHARED])
    assert full["token_allocation"] == {"system": 0.1, "short_term": 0.6, "long_term": 0.3}
    assert full["priority_blocks"][0] == {"priority": 0, "content_types": ["instructions"], "max_tokens": 400}
    assert json.loads(json.dumps(full)) == full
