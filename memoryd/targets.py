"""A resolved instance and what the daemon derives once from its resource.

The manager resolves every request's reference to a ``Target`` (where the instance lives,
under which resource, with which access); the flusher, the watchers and the servicer take
it from there.
"""

from __future__ import annotations

from dataclasses import dataclass

from memoryd import tokens
from memoryd.config.model import MemoryResource
from memoryd.engine import Budget
from memoryd.errors import PermissionDenied
from memoryd.keys import InstanceAddr
from memoryd.models import HistoryPolicy
from memoryd.privacy import PrivacyFilter
from memoryd.store.base import MemoryStore


@dataclass(frozen=True, slots=True)
class ResourceRuntime:
    """What the daemon derives once from a resource: its budget and token counter."""

    resource: MemoryResource
    budget: Budget
    counter: tokens.TokenCounter
    store: MemoryStore
    privacy: PrivacyFilter

    @property
    def history(self) -> HistoryPolicy:
        """What a fold does with the messages it takes out (``persistence.history``)."""
        p = self.resource.persistence
        return HistoryPolicy(keep=p.history == "keep", max_messages=p.max_history_messages)

    @property
    def ttl_ms(self) -> int | None:
        ttl = self.resource.persistence.ttl_s
        return None if ttl is None else int(ttl * 1000)


@dataclass(frozen=True, slots=True)
class Target:
    """A resolved instance: where it lives, under which resource, with which access."""

    runtime: ResourceRuntime
    addr: InstanceAddr
    mode: str  # "read-write" | "read-only"
    workflow_id: str | None = None

    @property
    def resource(self) -> MemoryResource:
        return self.runtime.resource

    @property
    def budget_tokens(self) -> int:
        return self.runtime.budget.total

    @property
    def encoding(self) -> str:
        return self.runtime.counter.encoding_name

    def require_write(self, operation: str) -> None:
        if self.mode != "read-write":
            raise PermissionDenied(f"{operation}: the reference to memory '{self.resource.id}' is read-only")
