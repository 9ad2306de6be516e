"""Hypothesis strategies for issue 18's message fields (tool calls, parts, name, extra).

Unicode everywhere a string may hold it (no lone surrogates: the wire is UTF-8), odd but
valid JSON for ``extra`` and arbitrary text for tool ``arguments`` (stored byte for byte,
JSON or not).
"""

from __future__ import annotations

import json

from hypothesis import strategies as st

from memoryd.models import ContentPart, ToolCall

text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)
short_id = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=24)

_json_leaf = st.none() | st.booleans() | st.integers(-(2**63), 2**63) | st.floats(allow_nan=False) | text
_json_value = st.recursive(
    _json_leaf, lambda kids: st.lists(kids, max_size=3) | st.dictionaries(text, kids, max_size=3), max_leaves=8
)


@st.composite
def json_object_text(draw: st.DrawFn) -> str:
    """A JSON object as text, in the spellings a provider might use (spacing, escapes, order)."""
    value = draw(st.dictionaries(text, _json_value, max_size=4))
    indent = draw(st.sampled_from([None, 0, 2]))
    ascii_only = draw(st.booleans())
    return json.dumps(value, indent=indent, ensure_ascii=ascii_only, sort_keys=draw(st.booleans()))


arguments = json_object_text() | text
tool_call = st.builds(ToolCall, id=short_id, name=short_id, arguments=arguments)

text_part = st.builds(lambda t: ContentPart("text", text=t), text)


@st.composite
def media_part(draw: st.DrawFn) -> ContentPart:
    kind = draw(st.sampled_from(["image", "file"]))
    source = draw(st.sampled_from(["url", "file_id", "data"]))
    return ContentPart(
        kind,
        url=draw(st.just("https://example.com/" + draw(text)) if source == "url" else st.just("")),
        file_id=draw(short_id) if source == "file_id" else "",
        data=draw(st.binary(min_size=1, max_size=64)) if source == "data" else b"",
        mime_type=draw(st.sampled_from(["", "image/png", "application/pdf"])),
        size_bytes=draw(st.integers(0, 2**40)),
        detail=draw(st.sampled_from(["", "auto", "low", "high"])) if kind == "image" else "",
        width=draw(st.integers(0, 10_000)),
        height=draw(st.integers(0, 10_000)),
        filename=draw(text) if kind == "file" else "",
    )


parts = st.lists(text_part | media_part(), min_size=1, max_size=3).map(tuple)
