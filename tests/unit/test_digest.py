"""The batch digest tells batches apart exactly when their stored fields differ."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from memoryd.models import ContentPart, NewMessage, ToolCall
from memoryd.store.digest import batch_digest

texts = st.text(max_size=8)
small = st.sampled_from(["", "a", "b", "ab"])  # few values: equal fields are drawn often
calls = st.lists(st.builds(ToolCall, small, small, small), max_size=2).map(tuple)
parts = st.lists(st.builds(ContentPart, st.sampled_from(["text", "image", "file"]), text=small, url=small,
                           data=st.sampled_from([b"", b"a"]), width=st.integers(0, 1)), max_size=2).map(tuple)
messages = st.builds(
    lambda role, content, ctype, priority, metadata, tool_calls, call_id, name, parts_, extra: NewMessage(
        role, content, ctype, priority, 5, 1, metadata, tool_calls=tool_calls, tool_call_id=call_id, name=name,
        parts=parts_, extra=extra),
    st.sampled_from(["user", "assistant"]), texts, texts, st.none() | st.integers(0, 20),
    st.dictionaries(texts, texts, max_size=3), calls, small, small, parts, small,
)
batches = st.lists(messages, min_size=1, max_size=3)


def stored(batch: list[NewMessage]) -> list[tuple[object, ...]]:
    return [(m.role, m.content, m.content_type, m.priority, sorted(m.metadata.items()), m.tool_calls,
             m.tool_call_id, m.name, m.parts, m.extra) for m in batch]


def test_a_plain_batch_keeps_the_digest_it_had_before_tool_calls() -> None:
    """A retry across the upgrade that added issue 18's fields still replays (the value is what
    the digest before them gave)."""
    assert batch_digest([NewMessage("user", "hi", "text", None, 5, 1, {})]) == "b45bb66a39746d602371d9a8f9fb2c74"


@given(batches, batches)
def test_digests_are_equal_exactly_for_equal_batches(a: list[NewMessage], b: list[NewMessage]) -> None:
    assert (batch_digest(a) == batch_digest(b)) == (stored(a) == stored(b))


def test_field_boundaries_cannot_be_shifted() -> None:
    one = NewMessage("user", "ab", "c", None, 5, 1, {})
    other = NewMessage("user", "a", "bc", None, 5, 1, {})
    assert batch_digest([one]) != batch_digest([other])
    assert batch_digest([NewMessage("user", "x", "t", None, 5, 1, {"k": "v"})]) != batch_digest(
        [NewMessage("user", "x", "t", None, 5, 1, {"kv": ""})])
