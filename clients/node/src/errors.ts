// Typed errors carrying the gRPC status code and the server's message (as the Python client).
import { Metadata, status, type ServiceError } from "@grpc/grpc-js";

/** A failed memoryd call: `code` is the gRPC status, `codeName` its name, `details` the server's message. */
export class MemorydError extends Error {
  readonly code: status;
  readonly codeName: string;
  readonly details: string;
  readonly metadata: Metadata;

  constructor(code: status, details: string, metadata: Metadata = new Metadata()) {
    const codeName = status[code] ?? "UNKNOWN";
    super(`${codeName}: ${details}`);
    this.name = new.target.name;
    this.code = code;
    this.codeName = codeName;
    this.details = details;
    this.metadata = metadata;
  }
}

export class InvalidArgumentError extends MemorydError {}
export class NotFoundError extends MemorydError {}
export class PermissionDeniedError extends MemorydError {}
export class UnauthenticatedError extends MemorydError {}
export class ResourceExhaustedError extends MemorydError {}
/** The daemon or its store is unavailable; safe to retry idempotent calls. */
export class UnavailableError extends MemorydError {}
export class AbortedError extends MemorydError {}
/** The idempotency key already stored a different batch: nothing was stored; use a new key. */
export class AlreadyExistsError extends MemorydError {}
export class DeadlineExceededError extends MemorydError {}
export class UnimplementedError extends MemorydError {}
/** Not in a state for this call (e.g. planFlush on a fifo resource); retrying will not help. */
export class FailedPreconditionError extends MemorydError {}
export class CancelledError extends MemorydError {}

const BY_CODE = new Map<status, new (code: status, details: string, md?: Metadata) => MemorydError>([
  [status.INVALID_ARGUMENT, InvalidArgumentError],
  [status.NOT_FOUND, NotFoundError],
  [status.PERMISSION_DENIED, PermissionDeniedError],
  [status.UNAUTHENTICATED, UnauthenticatedError],
  [status.RESOURCE_EXHAUSTED, ResourceExhaustedError],
  [status.UNAVAILABLE, UnavailableError],
  [status.ABORTED, AbortedError],
  [status.ALREADY_EXISTS, AlreadyExistsError],
  [status.DEADLINE_EXCEEDED, DeadlineExceededError],
  [status.UNIMPLEMENTED, UnimplementedError],
  [status.FAILED_PRECONDITION, FailedPreconditionError],
  [status.CANCELLED, CancelledError],
]);

export function isServiceError(err: unknown): err is ServiceError {
  return err instanceof Error && typeof (err as Partial<ServiceError>).code === "number"
    && "details" in err && "metadata" in err;
}

/** Map a grpc-js ServiceError to the typed error of its status code. */
export function fromServiceError(err: ServiceError): MemorydError {
  const Cls = BY_CODE.get(err.code) ?? MemorydError;
  return new Cls(err.code, err.details ?? "", err.metadata);
}
