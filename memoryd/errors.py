"""One exception hierarchy for the daemon.

Every foreseeable failure is a ``MemorydError`` subclass carrying a ``Status``; the
status becomes a gRPC code in exactly one place (``memoryd.status.abort``), for the
servicer's errors, a refused token and an undecodable body alike. The store, the
engine and the configuration raise these without knowing anything of gRPC::

    MemorydError                      status
    ├── InvalidArgument               INVALID_ARGUMENT  (.field names the request field)
    │   └── ToolCallRefused                               (the store: a call id the instance contradicts)
    ├── UndecodableRequest            INVALID_ARGUMENT  (the body is not the method's message)
    ├── ConfigError                   INVALID_ARGUMENT  (.problems; load time: file, line, field)
    ├── NotFound                      NOT_FOUND
    ├── PermissionDenied              PERMISSION_DENIED (read-only reference, bad token)
    ├── Unauthenticated               UNAUTHENTICATED   (no token where one is required)
    ├── ResourceExhausted             RESOURCE_EXHAUSTED
    │   └── PinnedTierFull
    ├── FailedPrecondition            FAILED_PRECONDITION
    ├── IdempotencyConflict           ALREADY_EXISTS    (a key reused for another batch)
    ├── ShuttingDown                  UNAVAILABLE       (the daemon cut a stream)
    ├── StoreUnavailable              UNAVAILABLE       (Redis down, breaker open: retry)
    └── LockContention                ABORTED           (plan again, later)
        ├── FenceRejected                               (the lock was lost)
        └── InstanceChanged                             (wiped and created again meanwhile)

Anything else reaching the wire is a bug: INTERNAL, with the traceback only in the log.
"""

from __future__ import annotations

from enum import Enum

#: Characters of a client-supplied value an error message may quote: the message travels
#: in a gRPC trailer (the client's limit is 16 KiB), and a 20 KB memory id would turn a
#: NOT_FOUND into a RESOURCE_EXHAUSTED.
MAX_ECHO = 100


def echo(value: str) -> str:
    """``value`` quoted for an error message, cut to ``MAX_ECHO`` characters."""
    if len(value) <= MAX_ECHO:
        return f"'{value}'"
    return f"'{value[:MAX_ECHO]}...' ({len(value)} characters)"


class Status(Enum):
    """Abstract status of a failure; mirrors the gRPC codes memoryd uses."""

    INVALID_ARGUMENT = "invalid_argument"
    NOT_FOUND = "not_found"
    PERMISSION_DENIED = "permission_denied"
    UNAUTHENTICATED = "unauthenticated"
    RESOURCE_EXHAUSTED = "resource_exhausted"
    FAILED_PRECONDITION = "failed_precondition"
    ALREADY_EXISTS = "already_exists"
    UNAVAILABLE = "unavailable"
    ABORTED = "aborted"
    INTERNAL = "internal"


class MemorydError(Exception):
    """Base of every memoryd error; ``status`` decides the wire status code."""

    status: Status = Status.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(MemorydError):
    """Bad input; ``field`` names the offending request field (e.g. ``messages[2].role``)."""

    status = Status.INVALID_ARGUMENT

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field


class ToolCallRefused(InvalidArgument):
    """The store refused a batch because of a tool call id, and stored nothing.

    ``position`` is the message's index in the batch the store received (the manager maps
    it to the request's index, which differs when some messages were not persisted);
    ``call`` is the index in its ``tool_calls`` (a new call whose id the instance already
    has), or None (a tool result whose call is neither earlier in the batch nor stored)."""

    def __init__(self, position: int, call: int | None, call_id: str) -> None:
        self.position, self.call, self.call_id = position, call, call_id
        super().__init__(*self.describe(f"messages[{position}]"))

    def describe(self, at: str) -> tuple[str, str]:
        """(field, problem) for the message addressed as ``at``."""
        if self.call is None:
            return (f"{at}.tool_call_id",
                    f"answers call {echo(self.call_id)}, which is neither earlier in this batch nor stored "
                    "in the instance; nothing was stored")
        return (f"{at}.tool_calls[{self.call}].id",
                f"call id {echo(self.call_id)} is already used in the instance; nothing was stored")


class UndecodableRequest(MemorydError):
    """The request body is not a valid message of the method's type (grpcio would say UNKNOWN)."""

    status = Status.INVALID_ARGUMENT


class NotFound(MemorydError):
    """Unknown memory resource, agent, or agent reference."""

    status = Status.NOT_FOUND


class PermissionDenied(MemorydError):
    """A write through a read-only reference, direct access denied, or a bad token."""

    status = Status.PERMISSION_DENIED


class Unauthenticated(MemorydError):
    """No credentials where the daemon requires them."""

    status = Status.UNAUTHENTICATED


class ResourceExhausted(MemorydError):
    """A limit was hit: request too large, pinned tier full."""

    status = Status.RESOURCE_EXHAUSTED


class PinnedTierFull(ResourceExhausted):
    """An append would push pinned (priority 0) tokens over the pinned cap."""


class FailedPrecondition(MemorydError):
    """The operation does not apply in the current state (e.g. a stale idempotency key reuse)."""

    status = Status.FAILED_PRECONDITION


class IdempotencyConflict(MemorydError):
    """An idempotency key already stored a different batch: nothing is stored, the key is not reusable."""

    status = Status.ALREADY_EXISTS


class ShuttingDown(MemorydError):
    """The daemon is stopping: a stream it cuts ends UNAVAILABLE, so the client resumes elsewhere."""

    status = Status.UNAVAILABLE


class StoreUnavailable(MemorydError):
    """The store cannot be reached (connection error, timeout, breaker open). Safe to retry."""

    status = Status.UNAVAILABLE


class LockContention(MemorydError):
    """The instance lock could not be acquired in time."""

    status = Status.ABORTED


class FenceRejected(LockContention):
    """A flush plan was refused because its fencing token is stale (the lock expired)."""


class InstanceChanged(LockContention):
    """A flush plan was refused because the instance was wiped and created again since it was read."""


class ConfigError(MemorydError):
    """The project configuration (or a store URL) is invalid; ``problems`` lists every error found."""

    status = Status.INVALID_ARGUMENT

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems
