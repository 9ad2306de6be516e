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
        if m.tool_calls or m.tool_call_id or m.name or m.parts or m.extra:
            # Only when set: a batch without issue 18's fields keeps the digest it had before
            # them, so a retry across a daemon upgrade still replays.
            fields += _extension_fields(m)
        for field in fields:
            data = field.encode("utf-8", "surrogatepass")
            update(len(data).to_bytes(8, "little"))
            update(data)
    return h.hexdigest()


def _extension_fields(m: NewMessage) -> list[str]:
    """Tool calls, tool_call_id, name, parts and extra as length-prefixed strings, each list
    preceded by its length, with a marker no plain message's fields can produce at that place
    (a plain message's next field is the next message's role)."""
    out = ["\x00ext", str(len(m.tool_calls))]
    for call in m.tool_calls:
        out += call
    out += (m.tool_call_id, m.name, str(len(m.parts)))
    for p in m.parts:
        out += (p.kind, p.text, p.url, p.file_id, p.data.hex(), p.mime_type, str(p.size_bytes), p.detail,
                str(p.width), str(p.height), p.filename)
    out.append(m.extra)
    return out
