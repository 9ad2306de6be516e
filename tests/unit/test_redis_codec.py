"""The Redis entry codec: what the append script stores decodes to exactly the message sent.

Pure: rows are built the way ``scripts.APPEND`` writes them (the fields of
``codec.message_args`` in order, with the server's clock as ``c``), without Redis.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from memoryd.models import ROLES, ContentPart, Kind, NewMessage, StoredMessage, ToolCall
from memoryd.store.redis import codec
from tests.message_strategies import parts, short_id, text, tool_call


def stored_row(seq: int, created_ms: int, message_id: str, m: NewMessage, *, legacy: bool = False) -> list[object]:
    """``legacy``: the entry as written before the ``k`` field existed (nine fields)."""
    tok, prio, mid, role, content, ctype, priority, metadata, ext = codec.message_args(m, message_id)
    values = (str(tok), str(prio), str(created_ms), mid, role, content, ctype, priority, metadata, ext)
    fields: list[bytes] = []
    for name, value in zip("tpcirxyqmk", values, strict=True):
        if legacy and name == "k":
            break
        fields += [name.encode(), value.encode()]
    return [f"{seq}-0".encode(), fields]


@given(
    seq=st.integers(1, 2**53), created_ms=st.integers(0, 2**45), role=st.sampled_from(ROLES), content=text,
    content_type=st.sampled_from(["text", "json", "markdown"]), priority=st.none() | st.integers(0, 9),
    tokens=st.integers(0, 10**6), metadata=st.dictionaries(text, text, max_size=3),
)
def test_an_entry_decodes_to_the_message_that_was_appended(
    seq: int, created_ms: int, role: str, content: str, content_type: str, priority: int | None, tokens: int,
    metadata: dict[str, str],
) -> None:
    effective = 5 if priority is None else priority
    m = NewMessage(role=role, content=content, content_type=content_type, priority=priority,
                   effective_priority=effective, token_count=tokens, metadata=metadata)
    got = codec.decode_entry(stored_row(seq, created_ms, "a1b2", m))
    assert got == StoredMessage(seq=seq, id="a1b2", role=role, content=content, content_type=content_type,
                                priority=priority, effective_priority=effective, token_count=tokens,
                                created_at_ms=created_ms, metadata=metadata, kind=Kind.MESSAGE)
    assert got.metadata == metadata and got.pinned == (effective == 0)


@given(
    role=st.sampled_from(ROLES), content=text, calls=st.lists(tool_call, max_size=3).map(tuple),
    call_id=st.just("") | short_id, name=st.just("") | text, parts=st.just(()) | parts,
    extra=st.sampled_from(["", "{}", '{"refusal": null, "x": [1, 2.5e10, "\\u00e9"]}', '{ "a" :\n 1 }']),
)
def test_every_new_field_round_trips_byte_exact(
    role: str, content: str, calls: tuple[ToolCall, ...], call_id: str, name: str, parts: tuple[ContentPart, ...],
    extra: str,
) -> None:
    m = NewMessage(role=role, content=content, content_type="text", priority=None, effective_priority=5,
                   token_count=7, tool_calls=calls, tool_call_id=call_id, name=name, parts=parts, extra=extra)
    got = codec.decode_entry(stored_row(3, 1000, "a1b2", m))
    assert (got.tool_calls, got.tool_call_id, got.name, got.parts, got.extra) == (calls, call_id, name, parts, extra)
    assert got.content == content
    assert all(type(c) is ToolCall for c in got.tool_calls)


def test_an_entry_written_before_the_extension_field_still_decodes() -> None:
    m = NewMessage(role="user", content="old", content_type="text", priority=None, effective_priority=5,
                   token_count=4, metadata={"a": "b"})
    got = codec.decode_entry(stored_row(1, 5, "id1", m, legacy=True))
    assert got == StoredMessage(seq=1, id="id1", role="user", content="old", content_type="text", priority=None,
                                effective_priority=5, token_count=4, created_at_ms=5, metadata={"a": "b"})
    assert codec.message_args(m, "id1")[-1] == ""  # a plain message stores an empty ``k``
