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
    KEEP_ALL_HISTORY,
    AppendOutcome,
    DeleteOutcome,
    FlushOutcome,
    FlushPlan,
    HistoryPolicy,
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

    async def shared_secret(self, name: str) -> bytes:
        """A random secret named ``name``, the same for every daemon of this store: made by
        the first daemon that asks, kept as long as the store keeps its data (the embedded
        store: per process). Keys plan tokens when no ``plan_token_key`` is configured."""
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

    async def read_history(self, addr: InstanceAddr, *, after_seq: int = 0, limit: int = 0) -> list[StoredMessage]:
        """Every kept message with seq > after_seq, live or folded into history (``folded``
        set), oldest first, at most ``limit`` (0: all); one consistent moment per call."""
        ...

    async def delete_messages(
        self, addr: InstanceAddr, seqs: Sequence[int], *, if_last_seq: int | None = None, ttl_ms: int | None = None
    ) -> DeleteOutcome:
        """Delete the given seqs from the live messages and from history, adjusting counters,
        atomically; seqs not stored are ignored (not reported). With ``if_last_seq``, delete
        only if the instance's ``last_seq`` equals it (0 for an instance that does not exist),
        else raise LastSeqChanged and change nothing. The summary is never rewritten.
        ``ttl_ms`` is (re)applied when something was deleted."""
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
        self, addr: InstanceAddr, plan: FlushPlan, *, fence: int, ttl_ms: int | None = None,
        history: HistoryPolicy = KEEP_ALL_HISTORY,
    ) -> FlushOutcome:
        """Take exactly ``plan.remove_seqs`` (those still present) out of the live messages,
        into history when ``history.keep`` (then drop the lowest seqs of history beyond
        ``history.max_messages``, counted in ``history_dropped``), write the summary,
        adjust counters by what was really removed. Raise FenceRejected when ``fence``
        is not the instance's current fence, InstanceChanged when ``plan.epoch`` is set and
        is not the instance's, FoldedMeanwhile when ``plan.flush_count`` is set and is not
        the instance's fold count (all checked atomically with the write)."""
        ...

    async def clear(self, addr: InstanceAddr) -> int:
        """Delete the instance completely, history included; return the number of live messages deleted."""
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
