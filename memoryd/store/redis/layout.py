"""Every Redis key name memoryd uses, in one place (like arq's constants).

All keys start with ``memoryd:v1:`` so a future layout can live beside this one and an
operator can find (or ACL-restrict) memoryd's keys with one pattern. The keys of one
instance share its cluster hash tag, so each Lua script touches exactly one slot::

    memoryd:v1:{<instance_hash>}:<project>:<resource>:msgs   Stream, entry id "<seq>-0"
    ...:meta    Hash: counters, last_seq, flush stats, fence
    ...:sum     Hash: the rolling summary (content, token_count, through_seq, updated_at_ms)
    ...:idem    Hash: idempotency key -> remembered append outcome
    ...:idemx   Sorted set: idempotency key -> expiry (ms), to prune ``idem``
    ...:lock    String: the flush lock (redis-py Lock); not part of the instance's data

    memoryd:v1:wf:{<sha(project, workflow)>}:<project>   Set of instance prefixes (EndWorkflow)

The workflow index has its own tag (it lists instances of many slots); see docs/redis.md
for how it is kept without a cross-slot script.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from memoryd.keys import InstanceAddr

VERSION_PREFIX = "memoryd:v1:"
WORKFLOW_PREFIX = VERSION_PREFIX + "wf:"

MSGS, META, SUMMARY, IDEM, IDEM_EXPIRY, LOCK = "msgs", "meta", "sum", "idem", "idemx", "lock"

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
)
SUMMARY_FIELDS = ("content", "token_count", "through_seq", "updated_at_ms")

# Stream entry fields, written in this order (codec.py): t=token_count, p=effective_priority,
# c=created_at_ms (Redis server time), i=id, r=role, x=content, y=content_type,
# q=priority ("" unset), m=metadata JSON ("" empty).
ENTRY_FIELDS = ("t", "p", "c", "i", "r", "x", "y", "q", "m")

_COSMETIC = re.compile(r"[^A-Za-z0-9\-_.]")


def _readable(part: str) -> str:
    """Project/resource as shown in key names; cosmetic only (the hash tag is the identity)."""
    return _COSMETIC.sub("_", part)[:64]


@dataclass(frozen=True, slots=True)
class InstanceKeys:
    """The key names of one instance, all in the slot of ``prefix``'s hash tag."""

    prefix: str

    @classmethod
    def of(cls, addr: InstanceAddr) -> InstanceKeys:
        return cls(f"{VERSION_PREFIX}{addr.hash_tag}:{_readable(addr.project)}:{_readable(addr.resource)}")

    @classmethod
    def from_prefix(cls, prefix: str) -> InstanceKeys:
        """Rebuild from a workflow index member; refuses anything that is not an instance prefix."""
        if not _PREFIX_RE.fullmatch(prefix):
            raise ValueError(f"not a memoryd instance prefix: {prefix!r}")
        return cls(prefix)

    @property
    def msgs(self) -> str:
        return f"{self.prefix}:{MSGS}"

    @property
    def meta(self) -> str:
        return f"{self.prefix}:{META}"

    @property
    def summary(self) -> str:
        return f"{self.prefix}:{SUMMARY}"

    @property
    def idem(self) -> str:
        return f"{self.prefix}:{IDEM}"

    @property
    def idem_expiry(self) -> str:
        return f"{self.prefix}:{IDEM_EXPIRY}"

    @property
    def lock(self) -> str:
        return f"{self.prefix}:{LOCK}"

    @property
    def data(self) -> tuple[str, str, str, str, str]:
        """The keys every mutation script receives (KEYS[1..5]); the lock is not data."""
        return (self.msgs, self.meta, self.summary, self.idem, self.idem_expiry)


_PREFIX_RE = re.compile(re.escape(VERSION_PREFIX) + r"\{[0-9a-f]{16}\}:[A-Za-z0-9\-_.]*:[A-Za-z0-9\-_.]*")


def workflow_index(project: str, workflow_id: str) -> str:
    """The set listing the instance prefixes written under (project, workflow)."""
    digest = hashlib.sha256(f"{project}\0{workflow_id}".encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"{WORKFLOW_PREFIX}{{{digest}}}:{_readable(project)}"
