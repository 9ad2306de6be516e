"""Typed client errors carrying the gRPC status code and the server's message."""

from __future__ import annotations

import grpc


class MemorydClientError(Exception):
    """A failed memoryd call; ``code`` is the gRPC status, ``details`` the server's message."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details


class InvalidArgumentError(MemorydClientError): ...


class NotFoundError(MemorydClientError): ...


class PermissionDeniedError(MemorydClientError): ...


class UnauthenticatedError(MemorydClientError): ...


class ResourceExhaustedError(MemorydClientError): ...


class UnavailableError(MemorydClientError):
    """The daemon or its store is unavailable; safe to retry idempotent calls."""


class AbortedError(MemorydClientError): ...


class AlreadyExistsError(MemorydClientError):
    """The idempotency key already stored a different batch: nothing was stored; use a new key."""


class DeadlineExceededError(MemorydClientError): ...


class UnimplementedError(MemorydClientError): ...


class FailedPreconditionError(MemorydClientError):
    """The instance or resource is not in a state for this call (e.g. PlanFlush on a fifo
    resource, or pinned messages over a reconfigured budget); retrying will not help."""


_BY_CODE: dict[grpc.StatusCode, type[MemorydClientError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDeniedError,
    grpc.StatusCode.UNAUTHENTICATED: UnauthenticatedError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhaustedError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.ABORTED: AbortedError,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExistsError,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceededError,
    grpc.StatusCode.UNIMPLEMENTED: UnimplementedError,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPreconditionError,
}


def from_rpc_error(err: grpc.RpcError) -> MemorydClientError:
    code: grpc.StatusCode = err.code()
    details: str = err.details() or ""
    return _BY_CODE.get(code, MemorydClientError)(code, details)
