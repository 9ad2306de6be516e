"""The digest of an append batch, kept with its idempotency key.

A retry with the same key must carry the same batch: a key reused for different content
is refused (``IdempotencyConflict``) instead of answering OK and dropping the new messages.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from memoryd.models import NewMessage


def batch_digest(messages: Sequence[NewMessage]) -> str:
    """32 hex digits over every stored field of every message, in order.

    ``repr`` of a tuple is unambiguous (strings are quoted and escaped), so two batches
    share a digest only if they hold the same messages.
    """
    h = hashlib.blake2b(digest_size=16)
    for m in messages:
        fields = (m.role, m.content, m.content_type, m.priority, sorted(m.metadata.items()))
        h.update(repr(fields).encode("utf-8", "surrogatepass"))
    return h.hexdigest()
