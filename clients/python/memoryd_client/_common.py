"""Request building shared by the async and sync clients."""

from __future__ import annotations

import contextlib
import os
import sys
import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import struct_pb2

from memoryd_client.openai_input import message_from_openai, take_memoryd_keys
from memoryd_client.v1 import memory_pb2 as pb

ROLES = {"system": pb.ROLE_SYSTEM, "user": pb.ROLE_USER, "assistant": pb.ROLE_ASSISTANT, "tool": pb.ROLE_TOOL,
         "developer": pb.ROLE_DEVELOPER}
ROLE_NAMES = {v: k for k, v in ROLES.items()}

DEFAULT_TIMEOUT_S = 5.0
DEFAULT_READ_TIMEOUT_S = 60.0
MAX_MESSAGE_BYTES = 64 * 1024 * 1024

MessageLike = pb.Message | Mapping[str, Any] | Any  # Any: an OpenAI SDK message object
_PLAIN_KEYS = frozenset(("role", "content", "content_type", "priority", "metadata", "persist"))

DEFAULT_TARGET = "127.0.0.1:50051"
# What the chart's memoryd.clientEnv gives agent containers (and memoryctl reads).
ENV_ADDR, ENV_TOKEN_FILE, ENV_TLS_CA_FILE = "MEMORYD_ADDR", "MEMORYD_TOKEN_FILE", "MEMORYD_TLS_CA_FILE"


def read_token_file(path: str) -> str | None:
    """The bearer token in ``path`` (surrounding whitespace removed); None when the file is blank."""
    with open(path, encoding="utf-8") as fh:
        return fh.read().strip() or None


def connection_from_env(
    target: str | None, token: str | None, credentials: grpc.ChannelCredentials | None
) -> tuple[str, str | None, grpc.ChannelCredentials | None]:
    """Fill what the caller left None from the environment, so that code in a pod set up by the
    chart connects as ``memoryctl`` does: MEMORYD_ADDR (else 127.0.0.1:50051), the token in
    MEMORYD_TOKEN_FILE, TLS trusting the CA bundle in MEMORYD_TLS_CA_FILE. Unreadable files raise
    OSError naming the file."""
    env = os.environ
    target = target or env.get(ENV_ADDR) or DEFAULT_TARGET
    if token is None and env.get(ENV_TOKEN_FILE):
        token = read_token_file(env[ENV_TOKEN_FILE])
    if credentials is None and env.get(ENV_TLS_CA_FILE):
        with open(env[ENV_TLS_CA_FILE], "rb") as fh:
            credentials = grpc.ssl_channel_credentials(root_certificates=fh.read())
    return target, token, credentials


@dataclass(frozen=True)
class Agent:
    """Address an instance through an agent's configured reference (mode is enforced)."""

    agent_id: str
    context: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RetryPolicy:
    """Retries of UNAVAILABLE: only reads, and appends that carry an idempotency key."""

    attempts: int = 4
    initial_backoff_s: float = 0.05
    max_backoff_s: float = 1.0
    multiplier: float = 2.0

    def backoffs(self) -> Iterable[float]:
        delay = self.initial_backoff_s
        for _ in range(self.attempts - 1):
            yield delay
            delay = min(delay * self.multiplier, self.max_backoff_s)


def channel_options() -> list[tuple[str, Any]]:
    return [
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ]


def make_ref(memory_id: str, key: str | None, agent: Agent | None) -> pb.MemoryRef:
    if (key is None) == (agent is None):
        raise ValueError("pass exactly one of key= and agent=")
    if key is not None:
        return pb.MemoryRef(memory_id=memory_id, key=key)
    assert agent is not None
    ctx = struct_pb2.Struct()
    ctx.update(dict(agent.context))
    return pb.MemoryRef(memory_id=memory_id, agent=pb.AgentScope(agent_id=agent.agent_id, context=ctx))


def make_message(m: MessageLike) -> pb.Message:
    """Accept a pb.Message, a dict like {"role": "user", "content": "hi", "priority": 1}, or an
    OpenAI Chat Completions message (dict or SDK object: ``openai_input``)."""
    if isinstance(m, pb.Message):
        return m
    if not isinstance(m, Mapping) or not m.keys() <= _PLAIN_KEYS or not isinstance(m.get("content", ""), str):
        return message_from_openai(m)
    data = dict(m)
    role = data.pop("role")
    out = pb.Message(role=ROLES[role] if isinstance(role, str) else role, content=data.pop("content", ""))
    take_memoryd_keys(out, data)
    if data:
        raise ValueError(f"unknown message fields: {sorted(data)}")
    return out


def new_idempotency_key() -> str:
    return uuid.uuid4().hex


Metadata = tuple[tuple[str, str], ...]
_CALL_METADATA: ContextVar[Metadata] = ContextVar("memoryd_client_call_metadata", default=())


@contextlib.contextmanager
def call_metadata(*pairs: tuple[str, str], **headers: str) -> Iterator[None]:
    """Send extra gRPC metadata on every call made inside the block (this thread or task).

    ``with call_metadata(("x-request-id", rid), traceparent=tp):`` -- keyword names are
    lower-cased with ``_`` as ``-``. A ``traceparent`` given here wins over the one taken
    from the current OpenTelemetry span.
    """
    extra = tuple(pairs) + tuple((k.replace("_", "-").lower(), v) for k, v in headers.items())
    token = _CALL_METADATA.set(_CALL_METADATA.get() + extra)
    try:
        yield
    finally:
        _CALL_METADATA.reset(token)


def outgoing_metadata(fixed: Metadata) -> Metadata:
    """``fixed`` (the client's own, e.g. authorization) plus ``call_metadata``, plus the
    current OpenTelemetry context (``traceparent``) when the caller's process uses
    OpenTelemetry: opentelemetry is never imported here unless the caller already did."""
    md = fixed + _CALL_METADATA.get()
    if "opentelemetry.context" in sys.modules and not any(k == "traceparent" for k, _ in md):
        from opentelemetry import propagate

        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        if carrier:
            md += tuple(carrier.items())
    return md


class OutgoingMetadata:
    """Mixin of both clients: what every call sends (the token, ``call_metadata`` and the
    caller's trace context), from the client's own fixed pairs."""

    _fixed_metadata: Metadata = ()

    @property
    def _metadata(self) -> Metadata:
        return outgoing_metadata(self._fixed_metadata)

