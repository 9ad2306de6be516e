"""Privacy and metrics through the real daemon: what the store holds, what is reported, what is counted."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import urllib.request

import pytest
import redis
from memoryd_client import ResourceExhaustedError
from prometheus_client.parser import text_string_to_metric_families

from memoryd.config.model import MemoryResource, PrivacyPolicy, Project
from memoryd.keys import InstanceAddr
from memoryd.store.embedded import EmbeddedStore
from memoryd.store.url import open_store
from tests.redis_servers import RedisProcess
from tests.support import running_server

SSN = "123-45-6789"
CARD = "4111 1111 1111 1111"
TENANT_KEY = "tenant-7f3a-conversation-991"
POLICY = PrivacyPolicy(
    redact_patterns=(r"\b\d{3}-\d{2}-\d{4}\b", r"\b(?:\d[ -]?){13,16}\b", r"(?i)password=\S+"),
    non_persistable_message_types=("payment_card", "tool"),
)


def project() -> Project:
    res = MemoryResource(id="support", max_tokens=100_000, privacy_policy=POLICY)
    return Project(id="p", resources={res.id: res}, agents={})


async def test_redaction_and_exclusion_happen_before_storage(caplog: pytest.LogCaptureFixture) -> None:
    store = EmbeddedStore()
    caplog.set_level(logging.INFO, logger="memoryd")
    async with running_server(project(), store=store) as srv, srv.client() as c:
        resp = await c.append("support", [
            {"role": "user", "content": f"my ssn is {SSN} and card {CARD}, password=hunter2"},
            {"role": "user", "content": f"card again {CARD}", "content_type": "payment_card"},
            {"role": "tool", "tool_call_id": "call-1", "content": "tool output with secrets"},
            {"role": "assistant", "content": "noted", "persist": False},
            {"role": "assistant", "content": "kept as is"},
        ], key=TENANT_KEY)
        raw = await c.read_all("support", key=TENANT_KEY, view="raw")
    assert [r.persisted for r in resp.results] == [True, False, False, False, True]
    assert resp.results[0].redactions == 3 and resp.results[0].seq == 1 and resp.results[4].seq == 2
    assert [m.content for m in raw] == ["my ssn is [REDACTED] and card [REDACTED], [REDACTED]", "kept as is"]
    held = await store.state(InstanceAddr("p", "support", TENANT_KEY))
    stored = " ".join(m.content for m in held.messages)
    for secret in (SSN, CARD, "hunter2", "tool output", "noted"):
        assert secret not in stored
    assert held.meta.token_count == sum(m.token_count for m in raw)  # counted after redaction
    lines = [r for r in caplog.records if getattr(r, "event", "") == "not_persisted"]
    assert len(lines) == 1 and lines[0].count == 3
    logged = "\n".join(json.dumps(vars(r), default=str) for r in caplog.records)
    for secret in (SSN, CARD, "hunter2", "tool output", "noted", "kept as is", TENANT_KEY):
        assert secret not in logged


async def test_redaction_cannot_grow_a_message_or_a_batch_past_the_size_limits() -> None:
    """``\\d`` turns each digit into ``[REDACTED]`` (10 bytes): a message within the message size
    limit must not be stored ten times larger, nor a batch past the request size limit. The call
    fails with RESOURCE_EXHAUSTED naming the message, and nothing of the batch is stored."""
    res = MemoryResource(id="digits", max_tokens=10_000_000, privacy_policy=PrivacyPolicy(redact_patterns=(r"\d",)))
    store = EmbeddedStore()
    addr = InstanceAddr("p", "digits", "k")
    limits = {"max_message_bytes": 4096, "max_request_bytes": 20_000}
    async with running_server(Project(id="p", resources={res.id: res}, agents={}), store=store, **limits) as srv, \
            srv.client() as c:
        with pytest.raises(ResourceExhaustedError, match=r"messages\[1\]\.content: .*10000 bytes.* 4096") as info:
            await c.append("digits", [{"role": "user", "content": "order 42"},
                                      {"role": "user", "content": "7" * 1000}], key="k")
        assert "7777" not in str(info.value)
        assert (await store.state(addr)).messages == ()
        # each at most the message limit, together past the request limit: refused at the one that crosses it
        with pytest.raises(ResourceExhaustedError, match=r"messages\[5\]\.content: .*20000 bytes"):
            await c.append("digits", [{"role": "user", "content": "7" * 400} for _ in range(6)], key="k")
        assert (await store.state(addr)).messages == ()
        # up to the limits, redaction stores as before
        resp = await c.append("digits", [{"role": "user", "content": "7" * 409 + "ab"}] * 4, key="k")
        assert [r.redactions for r in resp.results] == [409] * 4
    held = (await store.state(addr)).messages
    assert [len(m.content) for m in held] == [4092] * 4


async def test_redacting_a_large_message_does_not_stall_the_daemon() -> None:
    """Redaction of large content runs off the event loop (as token counting does): while a
    pattern works through 200 KB of digits, the daemon's loop keeps turning. A ticker task
    notes the longest gap between its turns during the append: a loop blocked by the
    redaction shows one gap as long as the redaction, a large share of the whole call."""
    # "#" keeps the output small, so nearly all of the call is the redaction itself
    policy = PrivacyPolicy(redact_patterns=(r"\d",), default_redaction_string="#")
    res = MemoryResource(id="digits", max_tokens=10_000_000, privacy_policy=policy)
    longest = 0.0
    done = asyncio.Event()

    async def ticker() -> None:
        nonlocal longest
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(0)
            now = time.perf_counter()
            longest, last = max(longest, now - last), now

    async with running_server(Project(id="p", resources={res.id: res}, agents={}), max_message_bytes=4_000_000,
                              max_request_bytes=8_000_000) as srv, srv.client() as c:
        task = asyncio.create_task(ticker())
        started = time.perf_counter()
        resp = await c.append("digits", [{"role": "user", "content": "7" * 200_000}], key="k")
        elapsed = time.perf_counter() - started
        done.set()
        await task
    assert resp.results[0].redactions == 200_000
    assert longest < elapsed / 2, f"the loop stalled {longest:.3f}s of a {elapsed:.3f}s append"


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_metrics_move_with_real_traffic() -> None:
    async with running_server(project(), metrics_listen="127.0.0.1:0") as srv, srv.client() as c:
        port = srv.server.ports["metrics"]
        before = scrape(port)
        await c.append("support", [{"role": "user", "content": f"ssn {SSN}"},
                                   {"role": "tool", "tool_call_id": "call-1", "content": "dropped"}], key="m")
        await c.append("support", [{"role": "user", "content": f"hello {i}"} for i in range(4)], key="m")
        await c.read_all("support", key="m")
        plan = await c.flush("support", key="m")
        await c.clear("support", key="m")
        after = scrape(port)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("memoryd_messages_appended_total", memory_id="support") == 5
    assert moved("memoryd_privacy_redactions_total", memory_id="support") == 1
    assert moved("memoryd_privacy_excluded_total", memory_id="support") == 1
    assert moved("memoryd_config_resolutions_total", level="direct") == 5  # append x2, read, flush, clear
    assert moved("memoryd_flushes_total", memory_id="support", strategy="hybrid_summary", status="ok") == 1
    assert moved("memoryd_messages_evicted_total", memory_id="support", strategy="hybrid_summary") == \
        len(plan.removed_seqs)
    assert moved("memoryd_operation_duration_seconds_count", operation="append", memory_id="support",
                 status="ok") == 2
    assert moved("grpc_server_handled_total", grpc_service="memoryd.v1.MemoryService", grpc_method="Append",
                 grpc_type="unary", grpc_code="OK") == 2
    assert value(after, "memoryd_circuit_breaker_state", breaker="embedded") == 0
    label_names = {name for (_, labels) in after for name, _ in labels}
    assert not label_names & {"key", "instance", "instance_id", "instance_hash"}  # unbounded: never a label


def redis_dump(url: str) -> str:
    """Everything memoryd keeps in Redis, as one text: every key, field and value."""
    client = redis.Redis.from_url(url)
    parts: list[bytes] = []
    for key in client.scan_iter("memoryd:*"):
        parts.append(key)
        kind = client.type(key)
        if kind == b"stream":
            for _, fields in client.xrange(key):
                parts.extend(b for kv in fields.items() for b in kv)
        elif kind == b"hash":
            parts.extend(b for kv in client.hgetall(key).items() for b in kv)
        elif kind == b"string":
            parts.append(client.get(key) or b"")
        elif kind == b"zset":
            parts.extend(client.zrange(key, 0, -1))
        elif kind == b"set":
            parts.extend(client.smembers(key))
    client.close()
    return b"\n".join(parts).decode("utf-8", "replace")


async def test_redis_never_holds_redacted_or_unpersisted_content(redis_standalone: RedisProcess) -> None:
    store = open_store(redis_standalone.url)
    async with running_server(project(), store=store) as srv, srv.client() as c:
        resp = await c.append("support", [
            {"role": "user", "content": f"ssn {SSN}, card {CARD}, password=hunter2"},
            {"role": "user", "content": f"pay with {CARD}", "content_type": "payment_card"},
            {"role": "tool", "tool_call_id": "call-1", "content": "raw tool output"},
            {"role": "assistant", "content": "ephemeral note", "persist": False},
        ], key="redis-privacy")
        raw = await c.read_all("support", key="redis-privacy", view="raw")
    assert [r.persisted for r in resp.results] == [True, False, False, False]
    assert [m.content for m in raw] == ["ssn [REDACTED], card [REDACTED], [REDACTED]"]
    held = redis_dump(redis_standalone.url)
    assert "[REDACTED]" in held  # we are looking at the right data
    for secret in (SSN, CARD, "hunter2", "pay with", "raw tool output", "ephemeral note"):
        assert secret not in held
