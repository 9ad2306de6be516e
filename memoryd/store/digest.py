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

    Each field is hashed with its length in front (metadata with its number of pairs), so
    the encoding is unambiguous: two batches share a digest only if they hold the same
    messages. Hashing the UTF-8 bytes directly costs well under half of hashing a ``repr``.
    """
    h = hashlib.blake2b(digest_size=16)
    update = h.update
    for m in messages:
        fields = [m.role, m.content, m.content_type, "" if m.priority is None else str(m.priority)]
        for key, value in sorted(m.metadata.items()):
            fields += (key, value)
        update(len(m.metadata).to_bytes(8, "little"))
        for field in fields:
            data = field.encode("utf-8", "surrogatepass")
            update(len(data).to_bytes(8, "little"))
            update(data)
    return h.hexdigest()
