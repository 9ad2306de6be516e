"""The embedded store forgets idempotency keys after their window, as Redis does.

The Python client sends a key with every append: a store that never forgets them grows
by one record per append for as long as the instance lives.
"""

from __future__ import annotations

from memoryd.store.embedded import EmbeddedStore
from tests.store.conftest import new_addr
from tests.store.test_conformance import msg

WINDOW_MS = 60_000


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


async def test_keys_are_forgotten_after_their_window() -> None:
    clock = Clock()
    store = EmbeddedStore(idempotency_window_ms=WINDOW_MS, clock=clock)
    addr = new_addr()
    for i in range(3_000):
        await store.append(addr, [msg(f"m{i}")], idempotency_key=f"req-{i}")
    assert (await store.append(addr, [msg("m0")], idempotency_key="req-0")).replayed  # within the window
    clock.now += WINDOW_MS / 1000 + 1
    out = await store.append(addr, [msg("another batch")], idempotency_key="req-0")
    assert not out.replayed and out.refs[0].seq == 3_001  # the key was forgotten: a new append
    assert len(store._instances[addr].idempotency) == 1  # only the record just written is left


async def test_an_instance_ttl_is_the_window_when_set() -> None:
    clock = Clock()
    store = EmbeddedStore(idempotency_window_ms=WINDOW_MS, clock=clock)
    addr = new_addr()
    await store.append(addr, [msg("a")], idempotency_key="k", ttl_ms=600_000)
    clock.now += WINDOW_MS / 1000 + 1  # past the default window, within the TTL
    assert (await store.append(addr, [msg("a")], idempotency_key="k", ttl_ms=600_000)).replayed
