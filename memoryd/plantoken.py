"""Plan tokens of PlanFlush / ApplyFlush: opaque, versioned, tamper-evident.

A token names the state a fold was planned on -- the instance, its incarnation (epoch),
its fold count (``flush_count``) -- and carries the planned seqs and the summary's
``through_seq``, so ApplyFlush needs no copy of the plan and no full read of the instance.
It is ``pt1.<payload>.<mac>``: base64url JSON and the first 16 bytes of an HMAC-SHA256
over ``pt1.<payload>`` keyed by the daemon's ``plan_token_key`` (by default, a secret the
store keeps). The MAC makes the seqs trustworthy (a caller cannot fold messages the daemon
did not plan, e.g. pinned ones or the newest turn); whether the state is still the one
planned on is checked by the store, atomically with the fold (epoch and fold count).

Without a configured key, the key is a random secret kept in the store and shared by every
daemon of it (``MemoryStore.shared_secret``): a plan made through one daemon applies through
another, and across restarts, with no configuration (docs/external-summaries.md).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass

from memoryd.errors import InvalidArgument
from memoryd.keys import InstanceAddr

VERSION = "pt1"
MAC_BYTES = 16
# A token longer than this is not one of ours (a plan of 100,000 scattered seqs stays below it).
MAX_TOKEN_CHARS = 1 << 20
FIELD = "plan_token"


@dataclass(frozen=True, slots=True)
class PlanToken:
    """What a plan token names: the state planned on and the plan's seqs."""

    instance: str  # InstanceAddr.storage_hash: a token is refused on any other instance
    epoch: str
    flush_count: int
    through_seq: int  # of the summary the fold writes (max of the folded seqs and the old summary's)
    seqs: tuple[int, ...]  # ascending


def _runs(seqs: Sequence[int]) -> list[list[int]]:
    """Ascending seqs as [first, last] runs: a plan is mostly one or a few runs."""
    out: list[list[int]] = []
    for s in seqs:
        if out and out[-1][1] + 1 == s:
            out[-1][1] = s
        else:
            out.append([s, s])
    return out


def _seqs(runs: Iterable[object]) -> tuple[int, ...]:
    out: list[int] = []
    for run in runs:
        if not (isinstance(run, list) and len(run) == 2 and all(type(x) is int for x in run)):
            raise ValueError("bad run")
        lo, hi = run
        if lo < 1 or hi < lo or (out and lo <= out[-1]):
            raise ValueError("runs not ascending")
        out.extend(range(lo, hi + 1))
    return tuple(out)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class PlanTokens:
    """Issues and verifies plan tokens with one key: the daemon's ``plan_token_key``, else
    the store's shared secret (``MemoryStore.shared_secret``), fetched once by ``ready``."""

    def __init__(self, key: str = "") -> None:
        self._key = key.encode("utf-8") if key else b""

    async def ready(self, shared: Callable[[], Awaitable[bytes]] | None = None) -> PlanTokens:
        """These tokens with their key known: the configured one, else ``shared()`` (one store
        round trip, the first time only), else a random one for this process."""
        if not self._key:
            self._key = await shared() if shared is not None else secrets.token_bytes(32)
        return self

    def _mac(self, signed: str) -> bytes:
        if not self._key:
            raise RuntimeError("PlanTokens used before ready()")
        return hmac.new(self._key, signed.encode("ascii"), hashlib.sha256).digest()[:MAC_BYTES]

    def issue(self, addr: InstanceAddr, *, epoch: str, flush_count: int, through_seq: int,
              seqs: Sequence[int]) -> str:
        body = {"i": addr.storage_hash, "e": epoch, "f": flush_count, "t": through_seq, "s": _runs(seqs)}
        signed = f"{VERSION}.{_b64(json.dumps(body, separators=(',', ':')).encode())}"
        return f"{signed}.{_b64(self._mac(signed))}"

    def verify(self, addr: InstanceAddr, token: str) -> PlanToken:
        """The plan ``token`` names; InvalidArgument (naming plan_token) when it is empty,
        garbled, of another version, not issued with this daemon's key, or of another instance."""
        if not token:
            raise InvalidArgument(FIELD, "required (PlanFlushResponse.plan_token)")
        if len(token) > MAX_TOKEN_CHARS:
            raise InvalidArgument(FIELD, f"{len(token)} characters: not a plan token")
        parts = token.split(".")
        if len(parts) != 3 or parts[0] != VERSION:
            raise InvalidArgument(FIELD, f"not a plan token of this daemon (expected {VERSION}.<payload>.<mac>)")
        signed = f"{parts[0]}.{parts[1]}"
        try:
            mac = _unb64(parts[2])
            good = hmac.compare_digest(mac, self._mac(signed))
        except (binascii.Error, ValueError, UnicodeEncodeError):
            good = False
        if not good:
            raise InvalidArgument(FIELD, "altered, or issued by a daemon with another plan_token_key (or "
                                         "before a restart): plan again")
        try:
            body = json.loads(_unb64(parts[1]))
            plan = PlanToken(instance=body["i"], epoch=body["e"], flush_count=body["f"], through_seq=body["t"],
                             seqs=_seqs(body["s"]))
            if not (isinstance(plan.instance, str) and isinstance(plan.epoch, str)
                    and type(plan.flush_count) is int and type(plan.through_seq) is int):
                raise ValueError("bad field")
        except (ValueError, KeyError, TypeError) as exc:  # only a bug or a leaked key gets here
            raise InvalidArgument(FIELD, "malformed payload") from exc
        if plan.instance != addr.storage_hash:
            raise InvalidArgument(FIELD, "made for another instance (memory id or key differ)")
        return plan
