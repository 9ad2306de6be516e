"""Instance keys: sanitising, namespacing and the Redis Cluster hash tag.

A rendered key is reduced to ``[A-Za-z0-9-_.:]`` and at most 512 characters; when
that changes anything, a hash of the original is appended, so two different inputs
can never share an instance. Template rendering lives in ``memoryd.config.templates``.

An instance has two hashes. ``storage_hash`` (unkeyed SHA-256) names its Redis keys and
must never change, or stored data would be orphaned; it is never logged, since keys are
often guessable (``support-48213``) and an unkeyed hash of one is reversed by trying
them. ``instance_hash``, the one logs and metrics carry, is an HMAC-SHA256 keyed with
the deployment's ``log_hash_key`` (random per process when unset).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass, field

from memoryd.errors import InvalidArgument

MAX_KEY_LENGTH = 512
MAX_DIRECT_KEY_BYTES = 1024  # a direct key longer than this is a client bug, not a tenant id
_HASH_LEN = 16  # hex chars of sha256 appended when sanitising changed the key
_DISALLOWED = re.compile(r"[^A-Za-z0-9\-_.:]")


def sanitize_key(raw: str) -> str:
    """Return the storage-safe form of ``raw``; injective over all strings."""
    clean = _DISALLOWED.sub("_", raw)
    if clean == raw and 0 < len(raw) <= MAX_KEY_LENGTH and not _HASHED_FORM.search(raw):
        return raw
    digest = hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()[:_HASH_LEN]
    suffix = f".h{digest}"
    return clean[: MAX_KEY_LENGTH - len(suffix)] + suffix


# A raw key that already looks like a hashed key is hashed too, so a caller can never
# imitate the sanitised form of another key.
_HASHED_FORM = re.compile(r"\.h[0-9a-f]{16}$")


def validate_direct_key(key: str, field: str = "ref.key", max_bytes: int = MAX_DIRECT_KEY_BYTES) -> str:
    """Check a client-supplied direct key and return its sanitised form."""
    if not key:
        raise InvalidArgument(field, "must not be empty")
    size = len(key.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        raise InvalidArgument(field, f"the key is {size} bytes; at most {max_bytes} are allowed")
    return sanitize_key(key)


def _log_hmac(secret: bytes) -> hmac.HMAC:
    return hmac.new(secret, digestmod=hashlib.sha256)


_LOG_HMAC = _log_hmac(secrets.token_bytes(32))


def set_log_hash_key(secret: str) -> None:
    """Key the instance hashes of logs and metrics with ``secret`` (the ``log_hash_key``
    setting); empty: a random key, so hashes correlate only within this process.

    Call it at startup, before any InstanceAddr exists: an address keeps the hash it was
    built with."""
    global _LOG_HMAC
    _LOG_HMAC = _log_hmac(secret.encode("utf-8") if secret else secrets.token_bytes(32))


@dataclass(frozen=True, slots=True)
class InstanceAddr:
    """Where one memory instance lives: project, resource, sanitised key."""

    project: str
    resource: str
    key: str
    # Both computed once (they are on every call's path); see the module docstring.
    storage_hash: str = field(init=False, repr=False, compare=False)  # Redis key names; never logged
    instance_hash: str = field(init=False, repr=False, compare=False)  # keyed: for logs and metrics

    def __post_init__(self) -> None:
        ident = self.instance_id.encode()
        object.__setattr__(self, "storage_hash", hashlib.sha256(ident).hexdigest()[:16])
        keyed = _LOG_HMAC.copy()
        keyed.update(ident)
        object.__setattr__(self, "instance_hash", keyed.hexdigest()[:16])

    @property
    def instance_id(self) -> str:
        """Unique by construction (ids contain no '/'); shown to clients, never logged."""
        return f"{self.project}/{self.resource}/{self.key}"

    @property
    def hash_tag(self) -> str:
        """Redis Cluster hash tag shared by every key of this instance."""
        return "{" + self.storage_hash + "}"
