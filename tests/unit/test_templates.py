"""Key templates: the plain-lookup grammar, load-time rejection, rendering rules."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from memoryd.config.templates import Lookup, TemplateError, compile_template, lookup_text
from memoryd.errors import InvalidArgument
from memoryd.keys import sanitize_key

CTX: dict[str, Any] = {
    "workflow": {"id": "wf-1", "input": {"conversationId": "c-9", "userId": "u-7", "n": 42.0,
                                         "deep": {"x": "y"}}},
    "user": {"id": "u-1"},
    "session": {"id": "s-1"},
    "project": {"id": "p"},
    "agent": {"id": "a"},
    "timestamp": "2026-01-01T00:00:00Z",
}


@pytest.mark.parametrize(
    ("source", "rendered"),
    [
        ("support-{{ .workflow.input.conversationId }}", "support-c-9"),
        ("support-{{.workflow.input.conversationId}}", "support-c-9"),
        ("{{   .user.id   }}", "u-1"),
        ("{{ .workflow.id }}/{{ .session.id }}", "wf-1/s-1"),
        ("{{ .workflow.input.deep.x }}", "y"),
        ("p={{ .project.id }} a={{ .agent.id }} t={{ .timestamp }}", "p=p a=a t=2026-01-01T00:00:00Z"),
        ("global", "global"),
    ],
)
def test_valid_templates_render(source: str, rendered: str) -> None:
    assert compile_template(source).render(CTX) == rendered


@pytest.mark.parametrize(
    ("source", "problem"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("{{ .workflow.id | upper }}", "pipes are not supported"),
        ("{{ printf \"%s\" .user.id }}", "function calls"),
        ("{{ if .user.id }}x{{ end }}", "function calls"),
        ("{{ $x }}", "variables"),
        ("{{ len(.user.id) }}", "function calls"),
        ("{{- .user.id -}}", "whitespace trimming"),
        ("{{ .user.id -}}", "whitespace trimming"),
        ("{{/* note */}}", "comments"),
        ("{{ }}", "empty action"),
        ("{{ . }}", "empty lookup"),
        ("{{ .user. }}", "invalid lookup"),
        ("{{ .user..id }}", "invalid lookup"),
        ("{{ .user.id .session.id }}", "invalid lookup"),
        ("{{ .user-name }}", "invalid lookup"),
        ("{{ .secret }}", "unknown template variable"),
        ("{{ .user.name }}", "unknown template variable"),
        ("{{ .workflow.input }}", "unknown template variable"),
        ("{{ .workflow }}", "unknown template variable"),
        ("{{ .env.HOME }}", "unknown template variable"),
        ("{{ .user.id", "unclosed"),
        ("x-{{ .user.id }}}", "unbalanced brace"),
        ("x-{ .user.id }", "unbalanced brace"),
        ("x}}", "unbalanced brace"),
        ("{{ {{ .user.id }} }}", "unbalanced braces"),
    ],
)
def test_invalid_templates_are_rejected_at_load(source: str, problem: str) -> None:
    with pytest.raises(TemplateError, match=problem):
        compile_template(source)


def test_compiled_parts_and_workflow_scope() -> None:
    t = compile_template("s-{{ .workflow.id }}-{{ .user.id }}")
    assert t.parts == ("s-", Lookup(("workflow", "id")), "-", Lookup(("user", "id")))
    assert t.uses_workflow_id
    assert not compile_template("s-{{ .workflow.input.id }}").uses_workflow_id


def test_parse_is_cached() -> None:
    assert compile_template("c-{{ .user.id }}") is compile_template("c-{{ .user.id }}")


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (42.0, "42"),
        (-3.0, "-3"),
        (2.5, "2.5"),
        (7, "7"),
        (1e20, "100000000000000000000"),
        (True, "true"),
        (False, "false"),
        ("0", "0"),
    ],
)
def test_scalars_render_like_go_templates(value: Any, text: str) -> None:
    ctx = {"workflow": {"input": {"v": value}}}
    assert compile_template("{{ .workflow.input.v }}").render(ctx) == text


@pytest.mark.parametrize(
    ("context", "problem"),
    [
        ({}, "missing"),
        ({"workflow": {"input": {}}}, "missing"),
        ({"workflow": "flat"}, "missing"),
        ({"workflow": {"input": {"conversationId": None}}}, "null"),
        ({"workflow": {"input": {"conversationId": ""}}}, "empty string"),
        ({"workflow": {"input": {"conversationId": {"a": "b"}}}}, "an object"),
        ({"workflow": {"input": {"conversationId": ["a"]}}}, "a list"),
        ({"workflow": {"input": {"conversationId": float("nan")}}}, "finite"),
        ({"workflow": {"input": {"conversationId": float("inf")}}}, "finite"),
    ],
)
def test_unusable_variables_are_invalid_argument_naming_the_variable(
    context: dict[str, Any], problem: str
) -> None:
    t = compile_template("support-{{ .workflow.input.conversationId }}")
    with pytest.raises(InvalidArgument, match=problem) as info:
        t.render(context)
    assert info.value.field == "ref.agent.context.workflow.input.conversationId"
    assert "workflow.input.conversationId" in info.value.message


def test_field_prefix_is_configurable() -> None:
    with pytest.raises(InvalidArgument) as info:
        compile_template("{{ .user.id }}").render({}, field_prefix="context")
    assert info.value.field == "context.user.id"


def test_lookup_text() -> None:
    assert lookup_text(CTX, ("workflow", "id")) == "wf-1"


def test_render_key_sanitises() -> None:
    t = compile_template("s-{{ .workflow.input.v }}")
    raw = t.render({"workflow": {"input": {"v": "../a b*"}}})
    assert raw == "s-../a b*"
    assert t.render_key({"workflow": {"input": {"v": "../a b*"}}}) == sanitize_key(raw)


_values = st.one_of(
    st.text(min_size=1),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
)


@given(a=_values, b=_values)
def test_rendering_is_deterministic(a: Any, b: Any) -> None:
    t = compile_template("k-{{ .workflow.input.a }}-{{ .user.id }}")
    ctx = {"workflow": {"input": {"a": a}}, "user": {"id": b}}
    first = t.render_key(ctx)
    assert t.render_key(dict(ctx)) == first
    assert compile_template("k-{{ .workflow.input.a }}-{{ .user.id }}").render_key(ctx) == first


@given(st.text(min_size=1), st.text(min_size=1))
def test_distinct_values_give_distinct_instance_keys(a: str, b: str) -> None:
    """With one variable, different values never land on the same instance."""
    t = compile_template("support-{{ .workflow.input.conversationId }}")
    ka = t.render_key({"workflow": {"input": {"conversationId": a}}})
    kb = t.render_key({"workflow": {"input": {"conversationId": b}}})
    assert (ka == kb) == (a == b)
