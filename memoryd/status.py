"""The one place where memoryd errors become gRPC status codes."""

from __future__ import annotations

import grpc

from memoryd.errors import MemorydError, Status

GRPC_CODES: dict[Status, grpc.StatusCode] = {
    Status.INVALID_ARGUMENT: grpc.StatusCode.INVALID_ARGUMENT,
    Status.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    Status.PERMISSION_DENIED: grpc.StatusCode.PERMISSION_DENIED,
    Status.UNAUTHENTICATED: grpc.StatusCode.UNAUTHENTICATED,
    Status.RESOURCE_EXHAUSTED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Status.FAILED_PRECONDITION: grpc.StatusCode.FAILED_PRECONDITION,
    Status.ALREADY_EXISTS: grpc.StatusCode.ALREADY_EXISTS,
    Status.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    Status.ABORTED: grpc.StatusCode.ABORTED,
    Status.DEADLINE_EXCEEDED: grpc.StatusCode.DEADLINE_EXCEEDED,
    Status.INTERNAL: grpc.StatusCode.INTERNAL,
}


def grpc_code(err: MemorydError) -> grpc.StatusCode:
    return GRPC_CODES[err.status]
