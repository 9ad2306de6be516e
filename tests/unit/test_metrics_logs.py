"""Structured logs: request id and per-call fields on every line, level, writes off the loop."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys

from memoryd import logs


def _format(msg: str, **extra: object) -> dict[str, object]:
    record = logging.LogRecord("memoryd.test", logging.INFO, __file__, 1, msg, None, None)
    for k, v in extra.items():
        setattr(record, k, v)
    out: dict[str, object] = json.loads(logs.JsonFormatter().format(record))
    return out


async def test_lines_inside_a_call_carry_request_id_and_annotations_and_nothing_leaks_out() -> None:
    async def call(request_id: str, memory_id: str) -> dict[str, object]:
        logs.REQUEST_ID.set(request_id)
        logs.CALL_FIELDS.set({})
        logs.annotate(memory_id=memory_id, instance_hash="abcd1234abcd1234")
        await asyncio.sleep(0)  # interleave with the other call
        return _format("in call", event="x")

    a, b = await asyncio.gather(asyncio.create_task(call("r-1", "chat")), asyncio.create_task(call("r-2", "prefs")))
    assert (a["request_id"], a["memory_id"], a["instance_hash"]) == ("r-1", "chat", "abcd1234abcd1234")
    assert (b["request_id"], b["memory_id"]) == ("r-2", "prefs")
    outside = _format("outside")
    assert "request_id" not in outside and "memory_id" not in outside
    logs.annotate(memory_id="ignored")  # outside a call: no effect, no error
    assert "memory_id" not in _format("outside again")


def test_explicit_extra_fields_win_over_call_fields() -> None:
    token = logs.CALL_FIELDS.set({"status": "from-call"})
    try:
        assert _format("m", status="explicit")["status"] == "explicit"
    finally:
        logs.CALL_FIELDS.reset(token)


def test_configure_writes_json_lines_at_the_configured_level_and_drains_at_exit() -> None:
    program = (
        "import logging\n"
        "from memoryd import logs\n"
        "logs.configure('warning')\n"
        "log = logging.getLogger('memoryd.t')\n"
        "log.info('hidden', extra={'event': 'quiet'})\n"
        "for i in range(200):\n"
        "    log.warning('shown %d', i, extra={'event': 'loud', 'n': i})\n"
    )
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=True)
    lines = [json.loads(line) for line in done.stderr.splitlines()]
    assert [e["n"] for e in lines] == list(range(200))  # all written, in order, nothing below warning
    assert lines[0]["level"] == "warning" and lines[0]["event"] == "loud" and lines[0]["message"] == "shown 0"
