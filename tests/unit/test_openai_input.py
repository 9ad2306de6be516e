"""memoryd_client.openai_input: OpenAI Chat messages in, memoryd messages out, or a clear refusal."""

from __future__ import annotations

import json
from typing import Any

import pytest
from memoryd_client import pb
from memoryd_client._common import make_message


def test_todays_dict_form_is_unchanged() -> None:
    m = make_message({"role": "user", "content": "hi", "priority": 2, "metadata": {"a": "b"}, "persist": True})
    assert (m.role, m.content, m.priority, dict(m.metadata), m.extra) == (pb.ROLE_USER, "hi", 2, {"a": "b"}, "")


def test_unknown_keys_go_to_extra_and_none_values_are_dropped() -> None:
    m = make_message({"role": "assistant", "content": None, "refusal": None, "audio": {"id": "au_1"},
                      "reasoning_content": "é", "tool_calls": [
                          {"id": "c", "type": "function", "function": {"name": "f", "arguments": " {\"x\": 1}"}}]})
    assert m.content == "" and json.loads(m.extra) == {"audio": {"id": "au_1"}, "reasoning_content": "é"}
    assert [(c.id, c.name, c.arguments) for c in m.tool_calls] == [("c", "f", ' {"x": 1}')]


def test_file_data_is_decoded_with_its_mime_type() -> None:
    m = make_message({"role": "user", "content": [
        {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0=", "filename": "a.pdf"}}]})
    f = m.parts[0].file
    assert (f.data, f.mime_type, f.filename) == (b"%PDF-", "application/pdf", "a.pdf")


@pytest.mark.parametrize(("message", "words"), [
    ({"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}]},
     "does not store input_audio"),
    ({"role": "assistant", "content": [{"type": "refusal", "refusal": "no"}]}, "does not store refusal"),
    ({"role": "user", "content": [{"type": "video", "url": "x"}]}, "unknown content part type"),
    ({"role": "assistant", "tool_calls": [{"id": "c", "type": "custom", "custom": {"name": "g", "input": "x"}}]},
     "function tool calls only"),
    ({"role": "function", "name": "f", "content": "x"}, "role"),
    ({"role": "user", "content": 3}, "content"),
])
def test_what_memoryd_cannot_represent_is_refused_clearly(message: dict[str, Any], words: str) -> None:
    with pytest.raises(ValueError, match=words):
        make_message(message)
