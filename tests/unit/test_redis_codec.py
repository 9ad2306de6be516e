"""The Redis entry codec: what the append script stores decodes to exactly the message sent.

Pure: rows are built the way ``scripts.APPEND`` writes them (the fields of
``codec.message_args`` in order, with the server's clock as ``c``), without Redis.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from memoryd.models import ROLES, Kind, NewMessage, StoredMessage
from memoryd.store.redis import codec


def stored_row(seq: int, created_ms: int, message_id: str, m: NewMessage) -> list[object]:
    tok, prio, mid, role, content, ctype, priority, metadata = codec.message_args(m, message_id)
    values = (str(tok), str(prio), str(created_ms), mid, role, content, ctype, priority, metadata)
    fields: list[bytes] = []
    for name, value in zip("tpcirxyqm", values, strict=True):
        fields += [name.encode(), value.encode()]
    return [f"{seq}-0".encode(), fields]


text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)


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
