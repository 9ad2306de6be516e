"""docs/configuration.md is generated from the schema; the schema agrees with the model."""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from memoryd.config import model, schema
from memoryd.config.schema import Obj

ROOT = Path(__file__).resolve().parents[2]


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_config_docs", ROOT / "scripts" / "gen_config_docs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_configuration_doc_matches_the_schema() -> None:
    committed = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert committed == _generator().render(), "run: python scripts/gen_config_docs.py"


def _walk(obj: Obj, prefix: str = "") -> list[str]:
    names = []
    for f in obj.fields:
        names.append(prefix + f.name)
        if isinstance(f.type, Obj):
            names.extend(_walk(f.type, prefix + f.name + "."))
    return names


def test_every_field_is_documented() -> None:
    doc = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    for name in _walk(schema.RESOURCE_FILE) + _walk(schema.AGENT) + _walk(schema.PROJECT_FILE):
        assert f"| `{name}` |" in doc, name
    for f in schema.RESOURCE_FIELDS:
        assert f.description, f.name


def _default(cls: type, name: str) -> Any:
    field = next(f for f in dataclasses.fields(cls) if f.name == name)
    if field.default is not dataclasses.MISSING:
        return field.default
    assert field.default_factory is not dataclasses.MISSING
    return field.default_factory()


@pytest.mark.parametrize(
    ("obj", "yaml_name", "cls", "attr"),
    [
        (schema.INLINE_RESOURCE, "description", model.MemoryResource, "description"),
        (schema.INLINE_RESOURCE, "type", model.MemoryResource, "type"),
        (schema.INLINE_RESOURCE, "default_priority", model.MemoryResource, "default_priority"),
        (schema.FLUSHING_STRATEGY, "type", model.FlushingStrategy, "type"),
        (schema.FLUSHING_STRATEGY, "summarize_threshold", model.FlushingStrategy, "summarize_threshold"),
        (schema.FLUSHING_STRATEGY, "summary_tokens", model.FlushingStrategy, "summary_tokens"),
        (schema.FLUSHING_STRATEGY, "summarize_oldest_percent", model.FlushingStrategy, "summarize_oldest_percent"),
        (schema.PERSISTENCE, "type", model.Persistence, "type"),
        (schema.PERSISTENCE, "ttl", model.Persistence, "ttl_s"),
        (schema.CIRCUIT_BREAKER, "timeout", model.CircuitBreaker, "timeout_s"),
        (schema.CIRCUIT_BREAKER, "max_failures", model.CircuitBreaker, "max_failures"),
        (schema.CIRCUIT_BREAKER, "reset_timeout", model.CircuitBreaker, "reset_timeout_s"),
        (schema.PRIVACY_POLICY, "redact_patterns", model.PrivacyPolicy, "redact_patterns"),
        (schema.PRIVACY_POLICY, "non_persistable_message_types", model.PrivacyPolicy,
         "non_persistable_message_types"),
        (schema.PRIVACY_POLICY, "default_redaction_string", model.PrivacyPolicy, "default_redaction_string"),
        (schema.ACCESS, "direct", model.MemoryResource, "direct_access"),
        (schema.REFERENCE, "mode", model.MemoryReference, None),
    ],
)
def test_schema_defaults_equal_model_defaults(obj: Obj, yaml_name: str, cls: type, attr: str | None) -> None:
    spec = obj.get(yaml_name)
    assert spec is not None
    if attr is None:  # no model default: the loader fills it from the schema
        assert spec.default == "read-write"
        return
    assert spec.default == _default(cls, attr)
