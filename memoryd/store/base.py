"""The storage protocol every backend implements (embedded and Redis).

The store knows nothing of gRPC, configuration or budgets: it stores what the
manager hands it, atomically, and keeps counters consistent with content. One
conformance suite (tests/store) runs against every backend.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol

from memoryd.keys import InstanceAddr
from memoryd.models import (
    AppendOutcome,
    FlushOutcome,
    FlushPlan,
    InstanceMeta,
    InstanceState,
    NewMessage,
    StoredMessage,
    TailState,
)


@dataclass(frozen=True, slots=True)
class LockLease:
    """A held instance lock; ``fence`` increases at every acquisition of that instance."""

    fence: int


class MemoryStore(Protocol):
    """Async storage of memory instances. Every mutation is atomic."""

    @property
    def backend(self) -> str:
        """"embedded" or "redis"."""
        ...

    @property
    def breaker_state(self) -> str:
        """"closed", "open" or "half-open" (always "closed" for the embedded store)."""
        ...

    async def start(self) -> None:
        """Connect / load scripts. A store that cannot be reached yet does not fail here: it keeps
        trying in the background, and its calls (``ping`` included) raise StoreUnavailable until
        it is reached; errors of configuration (the store answered with an error) are raised."""
        ...

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Raise StoreUnavailable when the store cannot serve calls."""
        ...

    async def append(
        self,
        addr: InstanceAddr,
        messages: Sequence[NewMessage],
        *,
        idempotency_key: str | None = None,
        ttl_ms: int | None = None,
        pinned_cap: int | None = None,
        workflow_id: str | None = None,
    ) -> AppendOutcome:
        """Store the whole batch or nothing.

        Seqs come from the instance's sequence: strictly increasing and never reused
        while the instance lives (flushes do not reset it). Clear and TTL expiry delete
        the instance completely, sequence included: a later append starts at 1 again.
        A known ``idempotency_key`` replays the original outcome and stores nothing.
        ``pinned_cap``: raise PinnedTierFull (storing nothing) if pinned tokens would
        exceed it. ``ttl_ms`` is (re)applied to every key of the instance.
        ``workflow_id`` records the instance in that workflow's index for EndWorkflow.
        """
        ...

    async def read(self, addr: InstanceAddr, *, after_seq: int = 0, limit: int = 0) -> list[StoredMessage]:
        """Stored messages with seq > after_seq, oldest first, at most ``limit`` (0: all)."""
        ...

    async def state(self, addr: InstanceAddr) -> InstanceState:
        """Counters, summary and every stored message, read consistently."""
        ...

    async def meta(self, addr: InstanceAddr) -> InstanceMeta: ...

    async def tail_state(self, addr: InstanceAddr, *, min_tokens: int, min_messages: int) -> TailState | None:
        """Counters, summary, every pinned message and the newest non-pinned messages, read
        consistently, going back from the newest until the ones older than the newest hold
        more than ``min_tokens`` tokens, or there are more than ``min_messages`` of them
        (``min_messages`` < 0: no count bound), or all of them. The newest is not counted: a
        view always shows it, cut if it must be, and the older ones share what it leaves.
        Costs what it returns plus the pinned tier, not the instance's length.

        None when the instance's counters cannot vouch for a partial read (an instance written
        by a daemon that predates them): the caller reads ``state()`` instead. A missing
        instance is an empty, complete TailState."""
        ...


    async def apply_flush(
        self, addr: InstanceAddr, plan: FlushPlan, *, fence: int, ttl_ms: int | None = None
    ) -> FlushOutcome:
        """Delete exactly ``plan.remove_seqs`` (those still present), write the summary,
        adjust counters by what was really removed. Raise FenceRejected when ``fence``
        is not the instance's current fence."""
        ...

    async def clear(self, addr: InstanceAddr) -> int:
        """Delete the instance completely; return the number of messages deleted."""
        ...

    def lock(
        self, addr: InstanceAddr, *, ttl_ms: int, acquire_timeout_s: float
    ) -> AbstractAsyncContextManager[LockLease]:
        """Hold the instance's flush lock; raise LockContention if not acquired in time."""
        ...

    async def wait_for_change(self, addr: InstanceAddr, *, after_seq: int, timeout_s: float) -> None:
        """Return when the instance may have changed (a message with seq > after_seq exists,
        a flush or clear happened), or after ``timeout_s``. Spurious returns are allowed:
        Watch re-reads the store after every return, so this is only a wake-up signal."""
        ...

    async def end_workflow(self, project: str, workflow_id: str) -> int:
        """Delete every instance recorded under the workflow; return how many."""
        ...
