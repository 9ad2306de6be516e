"""The one place where memoryd errors become gRPC status codes (``abort``).

Every refused call -- a servicer's typed error, a bad token, an undecodable body, a read
cut by shutdown -- ends through ``abort``; anything that is not a ``MemorydError`` is a
bug and becomes INTERNAL with no detail on the wire (the log has the traceback).
"""

from __future__ import annotations

import logging
from typing import Any, NoReturn

import grpc

from memoryd.errors import MemorydError, Status

log = logging.getLogger("memoryd.service")  # where operators find the servicer's errors

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
    Status.INTERNAL: grpc.StatusCode.INTERNAL,
}


#: The longest status message sent: it travels in a trailer, and a client refuses
#: trailers over its limit (16 KiB by default), reporting RESOURCE_EXHAUSTED instead.
MAX_DETAILS = 512


def grpc_code(err: MemorydError) -> grpc.StatusCode:
    return GRPC_CODES[err.status]


async def abort(context: grpc.aio.ServicerContext[Any, Any], exc: BaseException, method: str) -> NoReturn:
    """End the call with the status of ``exc``."""
    if isinstance(exc, MemorydError):
        await context.abort(grpc_code(exc), details(exc))
    log.error("unexpected error in %s", method, exc_info=exc)
    await context.abort(grpc.StatusCode.INTERNAL, f"{method}: internal error (see daemon log)")


def details(err: MemorydError) -> str:
    """The status message of ``err``; messages quote client input through ``errors.echo``,
    and this cap keeps any other message (a store's error text) within the trailer too."""
    msg = err.message
    return msg if len(msg) <= MAX_DETAILS else msg[: MAX_DETAILS - 3] + "..."
