"""Python, Node and Go clients against one daemon of the example project: they must agree byte for
byte on content, order and seq, enforce read-only references alike, and replay idempotent retries."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from tests.interop.conftest import LANGS, Driver, Json, Watch

# The first test also installs the toolchains on a fresh machine (apt, npm ci, a cold Go build).
pytestmark = pytest.mark.timeout(900)

CONTENTS = [
    "plain ascii",
    "héllo wörld — ünïcödé",
    "emoji 🧠🚀 family 👨‍👩‍👧 flag 🇫🇷 skin 👋🏽",
    "CJK 記憶 / العربية / עברית / हिन्दी",
    "quotes \"'` backslash \\ tab\t newline\n<tag>&amp;",
    "combining e\u0301 vs \u00e9, zero-width a\u200db, bom \ufeff",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 outside the BMP 𐍈",
]
PAIRS = list(itertools.permutations(LANGS, 2))
READ_ONLY_REASON = "read-only"


def conversation(tag: str) -> Json:
    """An agent context with a fresh conversation id: every test gets its own instances."""
    return {"workflow": {"id": f"wf-{tag}", "input": {"conversationId": f"{tag}-{uuid.uuid4().hex[:8]}"}},
            "user": {"id": f"user-{uuid.uuid4().hex[:8]}"}}


def agent_ref(agent: str, ctx: Json) -> Json:
    return {"agent": {"id": agent, "context": ctx}}


def msgs(*contents: str, role: str = "user", **extra: Any) -> list[Json]:
    return [{"role": role, "content_hex": c.encode("utf-8").hex(), **extra} for c in contents]


def read_raw(d: Driver, memory: str, ref: Json, **kw: Any) -> list[Json]:
    return list(d.ok({"op": "read", "memory": memory, "ref": ref, "view": "raw", **kw})["messages"])


def all_read(drivers: dict[str, Driver], memory: str, ref: Json, **kw: Any) -> list[Json]:
    """Read with every client; assert they return identical messages; return them."""
    reads = {lang: read_raw(d, memory, ref, **kw) for lang, d in drivers.items()}
    for lang in LANGS[1:]:
        assert reads[lang] == reads["python"], f"{lang} disagrees with python"
    return reads["python"]


@pytest.mark.parametrize("writer", LANGS)
def test_what_one_language_appends_every_language_reads_identically(drivers: dict[str, Driver], writer: str) -> None:
    ref = agent_ref("resolution-agent", conversation(f"rw-{writer}"))
    sent = drivers[writer].ok({"op": "append", "memory": "customer-support-context", "ref": ref,
                               "messages": msgs(*CONTENTS)})
    assert [r["seq"] for r in sent["results"]] == [str(i) for i in range(1, len(CONTENTS) + 1)]
    got = all_read(drivers, "customer-support-context", ref)
    assert [bytes.fromhex(m["content_hex"]) for m in got] == [c.encode("utf-8") for c in CONTENTS]
    assert [m["seq"] for m in got] == [r["seq"] for r in sent["results"]]
    assert [m["id"] for m in got] == [r["id"] for r in sent["results"]]
    assert [m["token_count"] for m in got] == [r["token_count"] for r in sent["results"]]
    assert all(m["created_at"] is not None for m in got)


def test_interleaved_writers_share_one_order(drivers: dict[str, Driver]) -> None:
    ctx = conversation("mixed")
    ref = agent_ref("intake-agent", ctx)
    other = agent_ref("resolution-agent", ctx)  # same template: the same shared instance
    expected = []
    for round_ in range(3):
        for lang in LANGS:
            text = f"{lang} round {round_} ✍️"
            d = drivers[lang]
            d.ok({"op": "append", "memory": "customer-support-context", "ref": ref if round_ % 2 else other,
                  "messages": msgs(text, metadata={"from": lang, "émoji": "🏷"}, content_type="note",
                                            priority=round_ + 1)})
            expected.append(text)
    got = all_read(drivers, "customer-support-context", ref)
    assert [bytes.fromhex(m["content_hex"]).decode() for m in got] == expected
    assert [int(m["seq"]) for m in got] == list(range(1, len(expected) + 1))
    assert [m["metadata"]["from"] for m in got] == list(LANGS) * 3
    assert {(m["content_type"], m["metadata"]["émoji"]) for m in got} == {("note", "🏷")}
    assert [m["priority"] for m in got] == [r + 1 for r in range(3) for _ in LANGS]
    page = all_read(drivers, "customer-support-context", ref, after_seq=4, limit=3, chunk_size=1)
    assert [m["seq"] for m in page] == ["5", "6", "7"]
    stats = {lang: d.ok({"op": "stats", "memory": "customer-support-context", "ref": other})
             for lang, d in drivers.items()}
    assert stats["python"] == stats["node"] == stats["go"]
    assert stats["go"]["last_seq"] == str(len(expected))


@pytest.mark.parametrize("first", LANGS)
def test_idempotent_retry_from_any_language_is_replayed(drivers: dict[str, Driver], first: str) -> None:
    ref = agent_ref("intake-agent", conversation(f"idem-{first}"))
    key = uuid.uuid4().hex
    cmd = {"op": "append", "memory": "customer-support-context", "ref": ref, "idempotency_key": key,
           "messages": msgs("pay once 💳", "confirm ✔")}
    original = drivers[first].ok(cmd)
    assert original["replayed"] is False
    for lang in LANGS:  # the retry may come from any client, even the same one
        again = drivers[lang].ok(cmd)
        assert again == {**original, "replayed": True}, lang
    got = all_read(drivers, "customer-support-context", ref)
    assert [m["seq"] for m in got] == ["1", "2"]


@pytest.mark.parametrize("lang", LANGS)
def test_read_only_reference_is_enforced_identically(drivers: dict[str, Driver], lang: str) -> None:
    ctx = conversation(f"ro-{lang}")
    prefs_rw = agent_ref("preferences-agent", ctx)
    prefs_ro = agent_ref("intake-agent", ctx)
    writer = LANGS[(LANGS.index(lang) + 1) % len(LANGS)]
    drivers[writer].ok({"op": "append", "memory": "user-preferences", "ref": prefs_rw,
                        "messages": msgs("prefers email 📧, answers in Deutsch")})
    denied = drivers[lang].call({"op": "append", "memory": "user-preferences", "ref": prefs_ro,
                                 "messages": msgs("sneaky overwrite")})
    assert denied["error"]["name"] == "PERMISSION_DENIED" and denied["error"]["code"] == 7
    assert denied["error"]["kind"] == {"python": "PermissionDeniedError", "node": "PermissionDeniedError",
                                       "go": "ErrPermissionDenied"}[lang]
    assert READ_ONLY_REASON in denied["error"]["details"]
    cleared = drivers[lang].call({"op": "clear", "memory": "user-preferences", "ref": prefs_ro})
    assert cleared["error"]["name"] == "PERMISSION_DENIED"
    # The read-only reference still reads, and every client sees the same single message.
    got = all_read(drivers, "user-preferences", prefs_ro)
    assert [bytes.fromhex(m["content_hex"]).decode() for m in got] == ["prefers email 📧, answers in Deutsch"]


def test_every_language_resolves_an_agent_identically(drivers: dict[str, Driver]) -> None:
    cmd = {"op": "resolve", "agent": {"id": "intake-agent", "context": conversation("resolve")}}
    replies = {lang: d.ok(cmd) for lang, d in drivers.items()}
    assert replies["python"] == replies["node"] == replies["go"]
    modes = {r["memory_id"]: r["mode"] for r in replies["go"]["references"]}
    assert modes == {"customer-support-context": 1, "user-preferences": 2}


def test_unknown_agent_is_not_found_everywhere(drivers: dict[str, Driver]) -> None:
    for lang, d in drivers.items():
        err = d.call({"op": "resolve", "agent": {"id": "no-such-agent", "context": {}}})["error"]
        assert (err["name"], err["code"]) == ("NOT_FOUND", 5), lang


@pytest.mark.parametrize(("watcher", "writer"), PAIRS)
def test_watch_in_one_language_sees_appends_from_another(
    drivers: dict[str, Driver], start_watch: Callable[[str, Json], Watch], watcher: str, writer: str
) -> None:
    ref = agent_ref("resolution-agent", conversation(f"watch-{watcher}-{writer}"))
    memory = "customer-support-context"
    drivers[writer].ok({"op": "append", "memory": memory, "ref": ref, "messages": msgs("before the watch 🕰")})
    # Resume from seq 0: the backlog first, then the live appends, with no gap and no duplicate
    # whether or not the watch is established before the writer appends.
    w = start_watch(watcher, {"memory": memory, "ref": ref, "after_seq": 0, "count": 3})
    drivers[writer].ok({"op": "append", "memory": memory, "ref": ref, "messages": msgs("live 1 ⚡", "live 2 🔔")})
    events = w.events()
    assert {e["event"] for e in events} == {"appended"}
    watched = [m for e in events for m in e["messages"]]
    assert watched == all_read(drivers, memory, ref)
    assert [bytes.fromhex(m["content_hex"]).decode() for m in watched] == ["before the watch 🕰", "live 1 ⚡",
                                                                          "live 2 🔔"]
