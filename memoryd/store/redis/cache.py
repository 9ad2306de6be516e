"""A validated read cache of decoded messages, per instance.

A stored message never changes while its instance lives: seq -> message is immutable,
and messages leave only by a flush (which increments ``flush_count``) or when the whole
instance goes (Clear, TTL expiry, EndWorkflow; the instance created again after that has
a new ``epoch``). So a daemon may keep what it decoded, provided every read re-checks the
instance in one round trip: the epoch, the counters, and the entries appended since.
The check fails closed (any doubt: read everything again), so the cache never serves
what another daemon changed; it only saves decoding what did not change.
"""

from __future__ import annotations

import bisect
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

from memoryd.keys import InstanceAddr
from memoryd.models import NO_METADATA, InstanceMeta, InstanceState, NewMessage, StoredMessage


def token_sums(messages: Sequence[StoredMessage]) -> tuple[int, int]:
    """(pinned tokens, all tokens) of ``messages``."""
    pinned = tokens = 0
    for m in messages:
        tokens += m.token_count
        if m.pinned:
            pinned += m.token_count
    return pinned, tokens


def accounts_for(meta: InstanceMeta, count: int, pinned: int, tokens: int) -> bool:
    """Whether ``count`` messages holding ``tokens`` tokens, ``pinned`` of them pinned, are
    exactly what ``meta``'s counters say the instance holds."""
    return meta.message_count == count and meta.pinned_tokens == pinned and meta.recent_tokens == tokens - pinned


DEFAULT_MAX_MESSAGES = 50_000  # ~25-50 MB of typical chat messages per daemon


@dataclass
class CachedInstance:
    messages: list[StoredMessage]  # by seq
    epoch: str  # the incarnation these messages belong to (InstanceMeta.epoch)
    flush_count: int
    covered_seq: int  # every stored message with seq <= covered_seq is in ``messages``
    seqs: list[int] = field(default_factory=list)
    # Token sums of ``messages``, kept as they grow: every read checks them against the
    # instance's counters, and summing every cached message per read would cost more than the check.
    pinned_tokens: int = field(init=False, default=0)
    tokens: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self.seqs = [m.seq for m in self.messages]
        self.pinned_tokens, self.tokens = token_sums(self.messages)

    def counters_match(self, meta: InstanceMeta, new: list[StoredMessage]) -> bool:
        """Whether the cached messages plus ``new`` account exactly for ``meta``'s counters."""
        pinned, tokens = token_sums(new)
        return accounts_for(meta, len(self.messages) + len(new), self.pinned_tokens + pinned, self.tokens + tokens)

    def extend(self, new: list[StoredMessage], covered_seq: int) -> None:
        self.messages.extend(new)
        self.seqs.extend(m.seq for m in new)
        self.covered_seq = covered_seq
        pinned, tokens = token_sums(new)
        self.pinned_tokens += pinned
        self.tokens += tokens

    def after(self, after_seq: int, limit: int) -> list[StoredMessage]:
        start = bisect.bisect_right(self.seqs, after_seq)
        return self.messages[start : start + limit] if limit else self.messages[start:]


class ReadCache:
    """Least-recently-used instances, bounded by their total number of messages."""

    def __init__(self, max_messages: int = DEFAULT_MAX_MESSAGES) -> None:
        self.max_messages = max_messages
        self._entries: OrderedDict[InstanceAddr, CachedInstance] = OrderedDict()
        self._size = 0

    def get(self, addr: InstanceAddr) -> CachedInstance | None:
        entry = self._entries.get(addr)
        if entry is not None:
            self._entries.move_to_end(addr)
        return entry

    def put(self, addr: InstanceAddr, entry: CachedInstance) -> None:
        self.drop(addr)
        if len(entry.messages) > self.max_messages:
            return
        self._entries[addr] = entry
        self._size += len(entry.messages)
        self._shrink()

    def grew(self, by: int) -> None:
        """Account for messages added to a cached entry in place."""
        self._size += by
        self._shrink()

    def drop(self, addr: InstanceAddr) -> None:
        entry = self._entries.pop(addr, None)
        if entry is not None:
            self._size -= len(entry.messages)

    def remember_appended(
        self, addr: InstanceAddr, first_seq: int, now_ms: int, ids: Sequence[str], messages: Sequence[NewMessage],
        meta: InstanceMeta,
    ) -> None:
        """What this daemon has just stored is exactly what a read would decode: keep it when
        it starts the instance or continues the cached copy of the same incarnation (epoch),
        so that reading back what one wrote (the common sidecar pattern) needs no full read.
        A cached copy of another incarnation is dropped; anything else leaves the cache as it
        was: every read re-validates it anyway."""
        cached = self.get(addr)
        if cached is None:
            if not (first_seq == 1 and meta.message_count == len(messages) and meta.flush_count == 0):
                return
        elif cached.epoch != meta.epoch:
            self.drop(addr)
            return
        elif cached.covered_seq != first_seq - 1 or cached.flush_count != meta.flush_count:
            return
        stored = [
            StoredMessage(seq=first_seq + i, id=mid, role=m.role, content=m.content, content_type=m.content_type,
                          priority=m.priority, effective_priority=m.effective_priority, token_count=m.token_count,
                          created_at_ms=now_ms, metadata=dict(m.metadata) if m.metadata else NO_METADATA,
                          tool_calls=m.tool_calls, tool_call_id=m.tool_call_id, name=m.name, parts=m.parts,
                          extra=m.extra)
            for i, (mid, m) in enumerate(zip(ids, messages, strict=True))
        ]
        if cached is None:
            self.put(addr, CachedInstance(stored, meta.epoch, meta.flush_count, meta.last_seq))
        elif cached.counters_match(meta, stored):
            cached.extend(stored, meta.last_seq)
            self.grew(len(stored))

    def remember(self, addr: InstanceAddr, state: InstanceState) -> None:
        meta = state.meta
        if not meta.epoch:  # gone, or written only by daemons that predate epochs: not cacheable
            self.drop(addr)
            return
        self.put(addr, CachedInstance(list(state.messages), meta.epoch, meta.flush_count, meta.last_seq))

    def _shrink(self) -> None:
        while self._size > self.max_messages and self._entries:
            _, oldest = self._entries.popitem(last=False)
            self._size -= len(oldest.messages)

    def __len__(self) -> int:
        return len(self._entries)
