"""The batch digest tells batches apart exactly when their stored fields differ."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from memoryd.models import NewMessage
from memoryd.store.digest import batch_digest

texts = st.text(max_size=8)
messages = st.builds(
    lambda role, content, ctype, priority, metadata: NewMessage(role, content, ctype, priority, 5, 1, metadata),
    st.sampled_from(["user", "assistant"]), texts, texts, st.none() | st.integers(0, 20),
    st.dictionaries(texts, texts, max_size=3),
)
batches = st.lists(messages, min_size=1, max_size=3)


def stored(batch: list[NewMessage]) -> list[tuple[object, ...]]:
    return [(m.role, m.content, m.content_type, m.priority, sorted(m.metadata.items())) for m in batch]


@given(batches, batches)
def test_digests_are_equal_exactly_for_equal_batches(a: list[NewMessage], b: list[NewMessage]) -> None:
    assert (batch_digest(a) == batch_digest(b)) == (stored(a) == stored(b))


def test_field_boundaries_cannot_be_shifted() -> None:
    one = NewMessage("user", "ab", "c", None, 5, 1, {})
    other = NewMessage("user", "a", "bc", None, 5, 1, {})
    assert batch_digest([one]) != batch_digest([other])
    assert batch_digest([NewMessage("user", "x", "t", None, 5, 1, {"k": "v"})]) != batch_digest(
        [NewMessage("user", "x", "t", None, 5, 1, {"kv": ""})])
