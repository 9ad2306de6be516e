"""Which span exporters the standard OTEL_* variables select (no I/O, nothing configured)."""

from __future__ import annotations

from importlib.metadata import entry_points

import pytest

from memoryd.tracing import exporter_names


@pytest.mark.parametrize(("env", "names"), [
    ({}, []),
    ({"OTEL_TRACES_EXPORTER": "none"}, []),
    ({"OTEL_TRACES_EXPORTER": " "}, []),
    ({"OTEL_TRACES_EXPORTER": "console"}, ["console"]),
    ({"OTEL_TRACES_EXPORTER": "otlp"}, ["otlp_proto_grpc"]),
    ({"OTEL_TRACES_EXPORTER": "otlp,console"}, ["otlp_proto_grpc", "console"]),
    ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}, ["otlp_proto_http"]),
    ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
      "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc"}, ["otlp_proto_grpc"]),
    ({"OTEL_TRACES_EXPORTER": "console", "OTEL_SDK_DISABLED": "true"}, []),
])
def test_exporter_selection(env: dict[str, str], names: list[str]) -> None:
    assert exporter_names(env) == names


def test_every_selectable_exporter_is_installed_with_the_extra() -> None:
    for name in ("console", "otlp_proto_grpc", "otlp_proto_http"):
        assert entry_points(group="opentelemetry_traces_exporter", name=name), name


def test_unknown_otlp_protocol_names_the_variable() -> None:
    with pytest.raises(ValueError, match="OTEL_EXPORTER_OTLP_PROTOCOL"):
        exporter_names({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"})
