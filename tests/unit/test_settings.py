"""Daemon settings: flags over env over defaults, errors naming the setting, docs in sync."""

from __future__ import annotations

import argparse

import pytest

from memoryd import settings
from memoryd.server import is_loopback
from tests.support import REPO


def parse(argv: list[str]) -> dict[str, object]:
    parser = argparse.ArgumentParser()
    settings.add_arguments(parser)
    return vars(parser.parse_args(argv))


def test_flag_wins_over_env_which_wins_over_default() -> None:
    env = {"MEMORYD_LISTEN": "127.0.0.1:7000", "MEMORYD_SHUTDOWN_GRACE": "3.5", "MEMORYD_ALLOW_INSECURE_BIND": "yes"}
    s = settings.from_sources(parse(["--listen", "unix:/tmp/m.sock"]), env)
    assert s.listen == "unix:/tmp/m.sock"
    assert s.shutdown_grace == 3.5
    assert s.allow_insecure_bind is True
    assert s.max_batch_messages == settings.Settings().max_batch_messages


@pytest.mark.parametrize(("argv", "env", "named"), [
    (["--max-batch-messages", "many"], {}, "--max-batch-messages"),
    ([], {"MEMORYD_READ_CHUNK_MESSAGES": "0"}, "read_chunk_messages"),
    ([], {"MEMORYD_LOG_LEVEL": "chatty"}, "log_level"),
    ([], {"MEMORYD_ALLOW_INSECURE_BIND": "maybe"}, "MEMORYD_ALLOW_INSECURE_BIND"),
    (["--tls-cert", "/x.pem"], {}, "tls_key"),
])
def test_bad_settings_name_the_setting(argv: list[str], env: dict[str, str], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        settings.from_sources(parse(argv), env)


@pytest.mark.parametrize(("address", "loopback"), [
    ("127.0.0.1:50051", True), ("127.9.9.9:1", True), ("[::1]:50051", True), ("localhost:1", True),
    ("unix:/run/memoryd.sock", True), ("0.0.0.0:50051", False), ("10.1.2.3:50051", False), ("[::]:1", False),
])
def test_loopback_detection(address: str, loopback: bool) -> None:
    assert is_loopback(address) is loopback


def test_settings_reference_is_generated_from_the_schema() -> None:
    assert (REPO / "docs" / "settings.md").read_text() == settings.markdown(), \
        "docs/settings.md is stale: python -m memoryd.settings --markdown > docs/settings.md"
