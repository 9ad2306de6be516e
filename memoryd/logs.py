"""Structured JSON logs: one object per line on stderr, never message content.

Fields: time, level, logger, event, message, plus whatever a call passes in
``extra`` (memory_id, instance_hash, duration_ms, status...). Inside an RPC every
line also carries ``request_id`` and the fields bound with ``annotate()`` (the
handler wrapper opens a fresh scope per call), and ``trace_id``/``span_id`` while
traces are on (memoryd.tracing). Lines are formatted on the caller's
thread (so context variables are seen) and written to stderr by a background
thread, so a slow log reader never blocks the event loop.
"""

from __future__ import annotations

import atexit
import json
import logging
import logging.handlers
import queue
import sys
import time
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}

REQUEST_ID: ContextVar[str | None] = ContextVar("memoryd_request_id", default=None)
CALL_FIELDS: ContextVar[dict[str, Any] | None] = ContextVar("memoryd_call_fields", default=None)
# Set by memoryd.tracing while traces are on: the current span's (trace_id, span_id), or None.
TRACE_IDS: Callable[[], tuple[str, str] | None] | None = None


def annotate(**fields: Any) -> None:
    """Add fields (memory_id, instance_hash...) to every later log line of the current RPC.

    Never pass message content or an instance key. Outside an RPC this does nothing.
    """
    current = CALL_FIELDS.get()
    if current is not None:
        current.update(fields)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = REQUEST_ID.get()
        if request_id is not None:
            out["request_id"] = request_id
        if TRACE_IDS is not None:
            ids = TRACE_IDS()
            if ids is not None:
                out["trace_id"], out["span_id"] = ids
        call_fields = CALL_FIELDS.get()
        if call_fields:
            out.update(call_fields)
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, ensure_ascii=False)


class _FormattedQueueHandler(logging.handlers.QueueHandler):
    """Formats on the logging thread (context variables visible), ships only the line."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        line = self.format(record)
        return logging.makeLogRecord({"msg": line, "levelno": record.levelno, "levelname": record.levelname})


_listener: logging.handlers.QueueListener | None = None


def _stop_listener() -> None:
    global _listener
    if _listener is not None:
        _listener.stop()  # drains the queue: lines logged before exit are written
        _listener = None


def configure(level: str) -> None:
    """JSON lines on stderr at ``level`` (the ``log_level`` setting); safe to call again."""
    global _listener
    _stop_listener()
    q: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    writer = logging.StreamHandler(sys.stderr)
    writer.setFormatter(logging.Formatter("%(message)s"))
    handler = _FormattedQueueHandler(q)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    _listener = logging.handlers.QueueListener(q, writer)
    _listener.start()


atexit.register(_stop_listener)
