"""Python client of memoryd (needs only grpcio and protobuf).

    from memoryd_client import MemoryClient
    with MemoryClient("127.0.0.1:50051") as c:
        c.append("default", [{"role": "user", "content": "hi"}], key="conv-1")
        for m in c.read("default", key="conv-1", view="raw"):
            print(m.seq, m.content)
"""

from memoryd_client._common import Agent, RetryPolicy, call_metadata
from memoryd_client.aio import AsyncMemoryClient
from memoryd_client.anthropic_input import from_anthropic
from memoryd_client.errors import (
    AbortedError,
    AlreadyExistsError,
    DeadlineExceededError,
    FailedPreconditionError,
    InvalidArgumentError,
    MemorydClientError,
    NotFoundError,
    PermissionDeniedError,
    ResourceExhaustedError,
    UnauthenticatedError,
    UnavailableError,
    UnimplementedError,
)
from memoryd_client.formats import to_anthropic, to_openai
from memoryd_client.sync import MemoryClient
from memoryd_client.v1 import memory_pb2 as pb

__all__ = [
    "AbortedError",
    "Agent",
    "AlreadyExistsError",
    "AsyncMemoryClient",
    "DeadlineExceededError",
    "FailedPreconditionError",
    "InvalidArgumentError",
    "MemoryClient",
    "MemorydClientError",
    "NotFoundError",
    "PermissionDeniedError",
    "ResourceExhaustedError",
    "RetryPolicy",
    "UnauthenticatedError",
    "UnavailableError",
    "UnimplementedError",
    "call_metadata",
    "from_anthropic",
    "pb",
    "to_anthropic",
    "to_openai",
]
