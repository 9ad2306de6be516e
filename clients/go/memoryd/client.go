// Package memoryd is the Go client of memoryd, the conversation-memory sidecar for LLM agents.
//
//	c, err := memoryd.Dial("127.0.0.1:50051")
//	defer c.Close()
//	_, err = c.Append(ctx, memoryd.KeyRef("default", "conv-1"), []*memorydv1.Message{memoryd.User("hi")})
//	it := c.Read(ctx, memoryd.KeyRef("default", "conv-1"), memoryd.ReadOptions{View: memoryd.ViewRaw})
//	defer it.Close()
//	for m, err := it.Next(); err != io.EOF; m, err = it.Next() { ... }
//
// Every call takes a context first; a default deadline (5 s unary, 60 s per Read) applies
// per attempt on top of the context's own. UNAVAILABLE is retried with backoff only where
// repeating is safe: reads before the first message, appends carrying an idempotency key
// (Append adds one automatically), stats, health, clear, dry-run flush, resolve, list, end.
package memoryd

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net"
	"strings"
	"time"

	pb "github.com/memoryd/memoryd/clients/go/memorydv1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/structpb"
)

// Defaults shared with the Python and Node clients.
const (
	DefaultTimeout     = 5 * time.Second
	DefaultReadTimeout = 60 * time.Second
	MaxMessageBytes    = 64 * 1024 * 1024
)

// RetryPolicy says how UNAVAILABLE is retried (for the calls that are safe to repeat).
type RetryPolicy struct {
	Attempts       int
	InitialBackoff time.Duration
	MaxBackoff     time.Duration
	Multiplier     float64
}

// DefaultRetry: 4 attempts, 50 ms doubling up to 1 s.
var DefaultRetry = RetryPolicy{Attempts: 4, InitialBackoff: 50 * time.Millisecond, MaxBackoff: time.Second, Multiplier: 2}

func (p RetryPolicy) backoffs() []time.Duration {
	var out []time.Duration
	d := p.InitialBackoff
	for i := 0; i < p.Attempts-1; i++ {
		out = append(out, d)
		d = time.Duration(float64(d) * p.Multiplier)
		if d > p.MaxBackoff {
			d = p.MaxBackoff
		}
	}
	return out
}

// Agent addresses an instance through an agent's configured reference (mode enforced by the daemon).
type Agent struct {
	ID      string
	Context map[string]interface{} // e.g. {"workflow": map[string]interface{}{"id": "wf-1"}}
}

// Ref addresses one memory instance: MemoryID plus exactly one of Key and Agent.
type Ref struct {
	MemoryID string
	Key      string
	Agent    *Agent
}

// KeyRef addresses an instance by a direct key.
func KeyRef(memoryID, key string) Ref { return Ref{MemoryID: memoryID, Key: key} }

// AgentRef addresses an instance through an agent's reference to memoryID.
func AgentRef(memoryID string, agent Agent) Ref { return Ref{MemoryID: memoryID, Agent: &agent} }

func (r Ref) proto() (*pb.MemoryRef, error) {
	if r.Agent != nil && r.Key != "" {
		return nil, &Error{Code: codes.InvalidArgument, Details: "ref: pass exactly one of Key and Agent"}
	}
	if r.Agent == nil {
		return &pb.MemoryRef{MemoryId: r.MemoryID, Target: &pb.MemoryRef_Key{Key: r.Key}}, nil
	}
	ctx, err := structpb.NewStruct(r.Agent.Context)
	if err != nil {
		return nil, &Error{Code: codes.InvalidArgument, Details: "agent context: " + err.Error()}
	}
	return &pb.MemoryRef{MemoryId: r.MemoryID, Target: &pb.MemoryRef_Agent{
		Agent: &pb.AgentScope{AgentId: r.Agent.ID, Context: ctx}}}, nil
}

// System, User, Assistant and Tool build a message to append (a tool message also needs the
// ToolCallId of the call it answers: ToolResult sets both).
func System(content string) *pb.Message {
	return &pb.Message{Role: pb.Role_ROLE_SYSTEM, Content: content}
}
func User(content string) *pb.Message { return &pb.Message{Role: pb.Role_ROLE_USER, Content: content} }
func Assistant(content string) *pb.Message {
	return &pb.Message{Role: pb.Role_ROLE_ASSISTANT, Content: content}
}
func Tool(content string) *pb.Message { return &pb.Message{Role: pb.Role_ROLE_TOOL, Content: content} }

// NewIdempotencyKey returns a random 32-hex-digit key.
func NewIdempotencyKey() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b[:])
}

type options struct {
	timeout, readTimeout time.Duration
	retry                RetryPolicy
	autoIdempotency      bool
	token                string
	creds                credentials.TransportCredentials
	dial                 []grpc.DialOption
}

// Option configures Dial.
type Option func(*options)

// WithTimeout sets the per-attempt deadline of unary calls (default 5 s).
func WithTimeout(d time.Duration) Option { return func(o *options) { o.timeout = d } }

// WithReadTimeout sets the per-attempt deadline of a whole Read stream (default 60 s).
func WithReadTimeout(d time.Duration) Option { return func(o *options) { o.readTimeout = d } }

// WithRetry replaces the retry policy (Attempts 1 disables retries).
func WithRetry(p RetryPolicy) Option { return func(o *options) { o.retry = p } }

// WithoutAutoIdempotency stops Append from adding an idempotency key (appends are then never retried).
func WithoutAutoIdempotency() Option { return func(o *options) { o.autoIdempotency = false } }

// WithToken sends "authorization: Bearer <token>" on every call.
func WithToken(token string) Option { return func(o *options) { o.token = token } }

// WithTransportCredentials enables TLS; the default is plaintext (the daemon is pod-local).
func WithTransportCredentials(c credentials.TransportCredentials) Option {
	return func(o *options) { o.creds = c }
}

// WithDialOptions passes extra options to grpc.Dial.
func WithDialOptions(d ...grpc.DialOption) Option {
	return func(o *options) { o.dial = append(o.dial, d...) }
}

// Client is a client of one memoryd daemon; safe for concurrent use.
type Client struct {
	conn *grpc.ClientConn
	stub pb.MemoryServiceClient
	o    options
}

// DefaultTarget is the daemon's default address, used when Dial gets "".
const DefaultTarget = "127.0.0.1:50051"

// Dial connects lazily to target: "127.0.0.1:50051" or "unix:/path/memoryd.sock" ("" means DefaultTarget).
func Dial(target string, opts ...Option) (*Client, error) {
	if target == "" {
		target = DefaultTarget
	}
	o := options{timeout: DefaultTimeout, readTimeout: DefaultReadTimeout, retry: DefaultRetry, autoIdempotency: true}
	for _, f := range opts {
		f(&o)
	}
	dial := []grpc.DialOption{grpc.WithDefaultCallOptions(
		grpc.MaxCallRecvMsgSize(MaxMessageBytes), grpc.MaxCallSendMsgSize(MaxMessageBytes))}
	if o.creds != nil {
		dial = append(dial, grpc.WithTransportCredentials(o.creds))
	} else {
		dial = append(dial, grpc.WithInsecure())
	}
	if path := strings.TrimPrefix(strings.TrimPrefix(target, "unix://"), "unix:"); path != target {
		// Older grpc-go (Debian's 1.33) has no unix: resolver; dial the socket ourselves.
		dial = append(dial, grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", path)
		}))
		target = "passthrough:///unix"
	}
	conn, err := grpc.Dial(target, append(dial, o.dial...)...)
	if err != nil {
		return nil, err
	}
	return &Client{conn: conn, stub: pb.NewMemoryServiceClient(conn), o: o}, nil
}

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

func (c *Client) outgoing(ctx context.Context) context.Context {
	if c.o.token == "" {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+c.o.token)
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// unary runs one call with a per-attempt deadline, retrying UNAVAILABLE when retry is true.
func unary[T any](c *Client, ctx context.Context, retry bool, timeout time.Duration, call func(context.Context) (T, error)) (T, error) {
	var backoffs []time.Duration
	if retry {
		backoffs = c.o.retry.backoffs()
	}
	if timeout <= 0 {
		timeout = c.o.timeout
	}
	for attempt := 0; ; attempt++ {
		actx, cancel := context.WithTimeout(c.outgoing(ctx), timeout)
		res, err := call(actx)
		var e *Error
		if err != nil {
			e = fromCall(actx, err) // before cancel(): actx.Err() tells a deadline from a cancellation
		}
		cancel()
		if err == nil {
			return res, nil
		}
		var zero T
		if e.Code == codes.Unavailable && attempt < len(backoffs) && ctx.Err() == nil {
			if sleepCtx(ctx, backoffs[attempt]) == nil {
				continue
			}
			return zero, fromContext(ctx)
		}
		return zero, e
	}
}

// AppendOption tunes one Append call.
type AppendOption func(*appendOptions)

type appendOptions struct {
	key     string
	timeout time.Duration
}

// WithIdempotencyKey sets the key; a retry carrying the same key replays the first result.
func WithIdempotencyKey(key string) AppendOption { return func(o *appendOptions) { o.key = key } }

// WithAppendTimeout overrides the unary deadline for this append.
func WithAppendTimeout(d time.Duration) AppendOption { return func(o *appendOptions) { o.timeout = d } }

// Append stores a batch atomically; it returns seqs, ids and the instance's new totals.
// Every message is checked first (CheckMessage): a bad one fails the call with
// ErrInvalidArgument naming the field, and nothing is sent.
func (c *Client) Append(ctx context.Context, ref Ref, messages []*pb.Message, opts ...AppendOption) (*pb.AppendResponse, error) {
	var ao appendOptions
	for _, f := range opts {
		f(&ao)
	}
	for i, m := range messages {
		if err := CheckMessage(i, m); err != nil {
			return nil, err
		}
	}
	if ao.key == "" && c.o.autoIdempotency {
		ao.key = NewIdempotencyKey()
	}
	r, err := ref.proto()
	if err != nil {
		return nil, err
	}
	req := &pb.AppendRequest{Ref: r, Messages: messages, IdempotencyKey: ao.key}
	return unary(c, ctx, ao.key != "", ao.timeout, func(ctx context.Context) (*pb.AppendResponse, error) {
		return c.stub.Append(ctx, req)
	})
}

// Stats reports one instance's counters.
func (c *Client) Stats(ctx context.Context, ref Ref) (*pb.InstanceStats, error) {
	r, err := ref.proto()
	if err != nil {
		return nil, err
	}
	res, err := unary(c, ctx, true, 0, func(ctx context.Context) (*pb.GetStatsResponse, error) {
		return c.stub.GetStats(ctx, &pb.GetStatsRequest{Ref: r})
	})
	if err != nil {
		return nil, err
	}
	return res.GetStats(), nil
}

// Health reports the daemon's health; with a non-nil ref, the instance's too.
func (c *Client) Health(ctx context.Context, ref *Ref) (*pb.GetHealthResponse, error) {
	req := &pb.GetHealthRequest{}
	if ref != nil {
		r, err := ref.proto()
		if err != nil {
			return nil, err
		}
		req.Ref = r
	}
	return unary(c, ctx, true, 0, func(ctx context.Context) (*pb.GetHealthResponse, error) {
		return c.stub.GetHealth(ctx, req)
	})
}

// Flush runs the flushing strategy now; with dryRun it only plans (and is then retried like a read).
func (c *Client) Flush(ctx context.Context, ref Ref, dryRun bool) (*pb.FlushResponse, error) {
	r, err := ref.proto()
	if err != nil {
		return nil, err
	}
	return unary(c, ctx, dryRun, 0, func(ctx context.Context) (*pb.FlushResponse, error) {
		return c.stub.Flush(ctx, &pb.FlushRequest{Ref: r, DryRun: dryRun})
	})
}

// PlanFlush returns what a fold would take out now (Seqs, Messages), the summary it replaces
// (CurrentSummary) and its cap (SummaryMaxTokens), for a summary the caller's own model writes;
// give PlanToken to ApplyFlush. It changes nothing (and is retried like a read).
func (c *Client) PlanFlush(ctx context.Context, ref Ref) (*pb.PlanFlushResponse, error) {
	r, err := ref.proto()
	if err != nil {
		return nil, err
	}
	return unary(c, ctx, true, 0, func(ctx context.Context) (*pb.PlanFlushResponse, error) {
		return c.stub.PlanFlush(ctx, &pb.PlanFlushRequest{Ref: r})
	})
}

// ApplyFlush folds the plan's messages under summary. ErrAborted: another fold (or a Clear)
// happened since the plan, plan again; ErrResourceExhausted: the summary is over SummaryMaxTokens.
// Not retried (a repeat of an applied fold is refused).
func (c *Client) ApplyFlush(ctx context.Context, ref Ref, planToken, summary string) (*pb.ApplyFlushResponse, error) {
	r, err := ref.proto()
	if err != nil {
		return nil, err
	}
	return unary(c, ctx, false, 0, func(ctx context.Context) (*pb.ApplyFlushResponse, error) {
		return c.stub.ApplyFlush(ctx, &pb.ApplyFlushRequest{Ref: r, PlanToken: planToken, Summary: summary})
	})
}

// Clear deletes an instance and returns how many messages it removed (retried: twice equals once).
func (c *Client) Clear(ctx context.Context, ref Ref) (uint64, error) {
	r, err := ref.proto()
	if err != nil {
		return 0, err
	}
	res, err := unary(c, ctx, true, 0, func(ctx context.Context) (*pb.ClearResponse, error) {
		return c.stub.Clear(ctx, &pb.ClearRequest{Ref: r})
	})
	if err != nil {
		return 0, err
	}
	return res.GetRemovedCount(), nil
}

// DeleteOptions of DeleteMessages; the zero value deletes unconditionally.
type DeleteOptions struct {
	// IfLastSeq, when set, deletes only if the instance's newest seq is still this value
	// (else an ABORTED error, and nothing is deleted): the OpenAI Agents SDK's pop_item.
	IfLastSeq *uint64
}

// DeleteMessages deletes single messages, live or in history. Seqs not stored are ignored
// (the response lists those deleted); the summary is not rewritten. Retried: deleting the
// same seqs twice equals once.
func (c *Client) DeleteMessages(ctx context.Context, ref Ref, seqs []uint64, opts DeleteOptions) (
	*pb.DeleteMessagesResponse, error) {
	r, err := ref.proto()
	if err != nil {
		return nil, err
	}
	req := &pb.DeleteMessagesRequest{Ref: r, Seqs: seqs, IfLastSeq: opts.IfLastSeq}
	return unary(c, ctx, true, 0, func(ctx context.Context) (*pb.DeleteMessagesResponse, error) {
		return c.stub.DeleteMessages(ctx, req)
	})
}

// ResolveAgent renders an agent's memory references for its context.
func (c *Client) ResolveAgent(ctx context.Context, agent Agent) (*pb.ResolveAgentResponse, error) {
	s, err := structpb.NewStruct(agent.Context)
	if err != nil {
		return nil, &Error{Code: codes.InvalidArgument, Details: "agent context: " + err.Error()}
	}
	req := &pb.ResolveAgentRequest{AgentId: agent.ID, Context: s}
	return unary(c, ctx, true, 0, func(ctx context.Context) (*pb.ResolveAgentResponse, error) {
		return c.stub.ResolveAgent(ctx, req)
	})
}

// ListResources lists the project's memory resources with their effective settings.
func (c *Client) ListResources(ctx context.Context) (*pb.ListResourcesResponse, error) {
	return unary(c, ctx, true, 0, func(ctx context.Context) (*pb.ListResourcesResponse, error) {
		return c.stub.ListResources(ctx, &pb.ListResourcesRequest{})
	})
}

// EndWorkflow deletes every workflow-scoped instance of a workflow and returns how many.
func (c *Client) EndWorkflow(ctx context.Context, workflowID string) (uint64, error) {
	res, err := unary(c, ctx, true, 0, func(ctx context.Context) (*pb.EndWorkflowResponse, error) {
		return c.stub.EndWorkflow(ctx, &pb.EndWorkflowRequest{WorkflowId: workflowID})
	})
	if err != nil {
		return 0, err
	}
	return res.GetDeletedInstances(), nil
}
