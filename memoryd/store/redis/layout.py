"""Every Redis key name memoryd uses, in one place (like arq's constants).

All keys start with ``memoryd:v1:`` so a future layout can live beside this one and an
operator can find (or ACL-restrict) memoryd's keys with one pattern. The keys of one
instance share its cluster hash tag, so each Lua script touches exactly one slot::

    memoryd:v1:{<storage_hash>}:<project>:<resource>:msgs   Stream, entry id "<seq>-0"
    ...:meta    Hash: counters, last_seq, flush stats, fence, epoch (the instance's identity)
    ...:sum     Hash: the rolling summary (content, token_count, through_seq, updated_at_ms)
    ...:idem    Hash: idempotency key -> remembered append outcome
    ...:idemx   Sorted set: idempotency key -> expiry (ms), to prune ``idem``
    ...:calls   Hash: tool call id -> seq of the message that made it (memoryd.store.calls)
    ...:lock    String: the flush lock (redis-py Lock); not part of the instance's data

    memoryd:v1:wf:{<sha(project, workflow)>}:<project>   Set of instance prefixes (EndWorkflow)

The workflow index has its own tag (it lists instances of many slots); see docs/redis.md
for how it is kept without a cross-slot script.
"""

from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass, field

from memoryd.keys import InstanceAddr

VERSION_PREFIX = "memoryd:v1:"
WORKFLOW_PREFIX = VERSION_PREFIX + "wf:"

MSGS, META, SUMMARY, IDEM, IDEM_EXPIRY, CALLS, LOCK = "msgs", "meta", "sum", "idem", "idemx", "calls", "lock"

# Meta hash fields, in the order the scripts return them (HMGET).
META_FIELDS = (
    "message_count",
    "pinned_tokens",
    "recent_tokens",
    "summary_tokens",
    "last_seq",
    "flush_count",
    "last_flush_at_ms",
    "fence",
    "epoch",
    "evicted",
)
SUMMARY_FIELDS = ("content", "token_count", "through_seq", "updated_at_ms")

# Stream entry fields, in the order the append script writes them and codec.decode_entry
# reads them: t=token_count, p=effective_priority, c=created_at_ms (Redis server time), i=id,
# r=role, x=content, y=content_type, q=priority ("" unset), m=metadata JSON ("" empty),
# k=tool calls, tool_call_id, name, parts and extra as one compact JSON object ("" when none
# is set; absent from entries written before them). New fields go at the end: codec reads
# entries by position, and an older entry simply ends earlier.
ENTRY_FIELDS = ("t", "p", "c", "i", "r", "x", "y", "q", "m", "k")

_COSMETIC = re.compile(r"[^A-Za-z0-9\-_.]")


def _readable(part: str) -> str:
    """Project/resource as shown in key names; cosmetic only (the hash tag is the identity)."""
    return _COSMETIC.sub("_", part)[:64]


@dataclass(frozen=True, slots=True)
class InstanceKeys:
    """The key names of one instance, all in the slot of ``prefix``'s hash tag.

    Built once per instance (``of`` is cached): the names are on every call's path.
    """

    prefix: str
    msgs: str = field(init=False)
    meta: str = field(init=False)
    summary: str = field(init=False)
    idem: str = field(init=False)
    idem_expiry: str = field(init=False)
    calls: str = field(init=False)
    lock: str = field(init=False)
    # The keys every mutation script receives (KEYS[1..6]); the lock is not data.
    data: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        names = {"msgs": MSGS, "meta": META, "summary": SUMMARY, "idem": IDEM, "idem_expiry": IDEM_EXPIRY,
                 "calls": CALLS, "lock": LOCK}
        for attr, suffix in names.items():
            object.__setattr__(self, attr, f"{self.prefix}:{suffix}")
        object.__setattr__(self, "data", (self.msgs, self.meta, self.summary, self.idem, self.idem_expiry,
                                          self.calls))

    @classmethod
    def of(cls, addr: InstanceAddr) -> InstanceKeys:
        return _keys_of(addr)

    @classmethod
    def from_prefix(cls, prefix: str) -> InstanceKeys:
        """Rebuild from a workflow index member; refuses anything that is not an instance prefix."""
        if not _PREFIX_RE.fullmatch(prefix):
            raise ValueError(f"not a memoryd instance prefix: {prefix!r}")
        return cls(prefix)


@functools.lru_cache(maxsize=4096)
def _keys_of(addr: InstanceAddr) -> InstanceKeys:
    return InstanceKeys(f"{VERSION_PREFIX}{addr.hash_tag}:{_readable(addr.project)}:{_readable(addr.resource)}")


_PREFIX_RE = re.compile(re.escape(VERSION_PREFIX) + r"\{[0-9a-f]{16}\}:[A-Za-z0-9\-_.]*:[A-Za-z0-9\-_.]*")


def workflow_index(project: str, workflow_id: str) -> str:
    """The set listing the instance prefixes written under (project, workflow)."""
    digest = hashlib.sha256(f"{project}\0{workflow_id}".encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"{WORKFLOW_PREFIX}{{{digest}}}:{_readable(project)}"
