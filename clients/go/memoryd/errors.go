package memoryd

import (
	"context"
	"errors"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Error is a failed memoryd call: the gRPC status code and the server's message.
// Match kinds with errors.Is(err, memoryd.ErrNotFound) (and the other Err* values),
// or get the details with errors.As(err, &e) where e is *memoryd.Error.
// status.Code(err) works too (Error implements GRPCStatus).
//
// When the caller's context ended the call, the error also wraps the context's error, so
// errors.Is(err, context.Canceled) and errors.Is(err, context.DeadlineExceeded) hold as they
// do for the standard library (the per-call default deadline counts as a context deadline).
type Error struct {
	Code    codes.Code
	Details string
	status  *status.Status
	cause   error // the context's error when the context ended the call
}

// Sentinel kinds for errors.Is; each is an *Error carrying only its code.
var (
	ErrInvalidArgument    = &Error{Code: codes.InvalidArgument}
	ErrNotFound           = &Error{Code: codes.NotFound}
	ErrPermissionDenied   = &Error{Code: codes.PermissionDenied}
	ErrUnauthenticated    = &Error{Code: codes.Unauthenticated}
	ErrResourceExhausted  = &Error{Code: codes.ResourceExhausted}
	ErrUnavailable        = &Error{Code: codes.Unavailable} // safe to retry idempotent calls
	ErrAborted            = &Error{Code: codes.Aborted}
	ErrAlreadyExists      = &Error{Code: codes.AlreadyExists} // idempotency key reused for another batch
	ErrDeadlineExceeded   = &Error{Code: codes.DeadlineExceeded}
	ErrUnimplemented      = &Error{Code: codes.Unimplemented}
	ErrFailedPrecondition = &Error{Code: codes.FailedPrecondition} // e.g. PlanFlush on a fifo resource
	ErrCanceled           = &Error{Code: codes.Canceled}
)

var codeNames = map[codes.Code]string{
	codes.OK: "OK", codes.Canceled: "CANCELLED", codes.Unknown: "UNKNOWN",
	codes.InvalidArgument: "INVALID_ARGUMENT", codes.DeadlineExceeded: "DEADLINE_EXCEEDED",
	codes.NotFound: "NOT_FOUND", codes.AlreadyExists: "ALREADY_EXISTS",
	codes.PermissionDenied: "PERMISSION_DENIED", codes.ResourceExhausted: "RESOURCE_EXHAUSTED",
	codes.FailedPrecondition: "FAILED_PRECONDITION", codes.Aborted: "ABORTED",
	codes.OutOfRange: "OUT_OF_RANGE", codes.Unimplemented: "UNIMPLEMENTED", codes.Internal: "INTERNAL",
	codes.Unavailable: "UNAVAILABLE", codes.DataLoss: "DATA_LOSS", codes.Unauthenticated: "UNAUTHENTICATED",
}

// CodeName is the canonical status name (e.g. "NOT_FOUND"), as the other clients print it.
func (e *Error) CodeName() string {
	if n, ok := codeNames[e.Code]; ok {
		return n
	}
	return e.Code.String()
}

func (e *Error) Error() string { return e.CodeName() + ": " + e.Details }

// Is reports whether target is an *Error with the same code (so the Err* sentinels match).
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Code == e.Code
}

// Unwrap returns the context's error (context.Canceled or context.DeadlineExceeded) when the
// context ended the call, so that errors.Is sees it; otherwise nil.
func (e *Error) Unwrap() error { return e.cause }

// GRPCStatus lets status.FromError and status.Code see the original status.
func (e *Error) GRPCStatus() *status.Status {
	if e.status != nil {
		return e.status
	}
	return status.New(e.Code, e.Details)
}

// fromCall converts the error of a call made with ctx; when ctx is done its error is wrapped,
// and a CANCELLED/DEADLINE_EXCEEDED status takes the code that matches the context's error.
func fromCall(ctx context.Context, err error) *Error {
	e := fromRPC(err).(*Error)
	cerr := ctx.Err()
	if dl, ok := ctx.Deadline(); ok && cerr == nil && e.Code == codes.DeadlineExceeded && !time.Now().Before(dl) {
		// The server's copy of the deadline (grpc-timeout) can fire before the client's
		// context timer has marked ctx done: it is the same deadline.
		cerr = context.DeadlineExceeded
	}
	if cerr == nil || e.cause != nil {
		return e
	}
	out := *e
	out.cause = cerr
	if e.Code == codes.Canceled || e.Code == codes.DeadlineExceeded || e.Code == codes.Unknown {
		out.Code, out.status = contextCode(cerr), nil
	}
	return &out
}

// fromContext is the error of a call abandoned because ctx ended (e.g. during a retry backoff).
func fromContext(ctx context.Context) *Error {
	cerr := ctx.Err()
	return &Error{Code: contextCode(cerr), Details: cerr.Error(), cause: cerr}
}

func contextCode(cerr error) codes.Code {
	if errors.Is(cerr, context.DeadlineExceeded) {
		return codes.DeadlineExceeded
	}
	return codes.Canceled
}

// fromRPC converts a gRPC error to *Error; context errors become DEADLINE_EXCEEDED/CANCELLED.
func fromRPC(err error) error {
	if err == nil {
		return nil
	}
	var own *Error
	if errors.As(err, &own) {
		return own
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return &Error{Code: codes.DeadlineExceeded, Details: err.Error(), cause: context.DeadlineExceeded}
	}
	if errors.Is(err, context.Canceled) {
		return &Error{Code: codes.Canceled, Details: err.Error(), cause: context.Canceled}
	}
	st, ok := status.FromError(err)
	if !ok {
		return &Error{Code: codes.Unknown, Details: err.Error()}
	}
	// grpc-go 1.33 (Debian's) reports a deadline that expires while the connection is
	// still being set up as UNKNOWN "context deadline exceeded": map it to what it is.
	if st.Code() == codes.Unknown {
		switch st.Message() {
		case context.DeadlineExceeded.Error():
			return &Error{Code: codes.DeadlineExceeded, Details: st.Message()}
		case context.Canceled.Error():
			return &Error{Code: codes.Canceled, Details: st.Message()}
		}
	}
	return &Error{Code: st.Code(), Details: st.Message(), status: st}
}
