package memoryd

import (
	"context"
	"io"
	"time"

	pb "github.com/memoryd/memoryd/clients/go/memorydv1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// View selects what Read returns.
type View int

const (
	// ViewContext is what a model should see: pinned, summary, newest recent messages within budget.
	ViewContext View = iota
	// ViewRaw is every stored message, oldest first, no budget applied.
	ViewRaw
	// ViewHistory is every kept message, folded into history or live, oldest first, each
	// with Folded set accordingly (no budget applied).
	ViewHistory
)

// ReadOptions of Read; the zero value reads the whole context view.
type ReadOptions struct {
	View      View
	AfterSeq  uint64        // only seq > AfterSeq
	Limit     uint32        // at most this many (0: no limit)
	MaxTokens uint32        // context view: a smaller budget (0: the resource's)
	ChunkSize uint32        // messages per stream item (0: the daemon's default)
	Timeout   time.Duration // deadline of the whole stream, per attempt (0: the client's, 60 s)
}

// MessageIterator yields messages of a Read oldest first; Next returns io.EOF at the end.
// Close it when stopping early (it cancels the stream).
type MessageIterator struct {
	c        *Client
	ctx      context.Context
	req      *pb.ReadRequest
	err      error
	timeout  time.Duration
	cancel   context.CancelFunc
	sctx     context.Context // the current attempt's context
	stream   pb.MemoryService_ReadClient
	buf      []*pb.Message
	info     *pb.ReadInfo
	received bool
	backoffs []time.Duration
	attempt  int
}

// Read streams an instance oldest first. UNAVAILABLE is retried until the first item arrives.
func (c *Client) Read(ctx context.Context, ref Ref, opts ReadOptions) *MessageIterator {
	it := &MessageIterator{c: c, ctx: ctx, timeout: opts.Timeout, backoffs: c.o.retry.backoffs()}
	if it.timeout <= 0 {
		it.timeout = c.o.readTimeout
	}
	r, err := ref.proto()
	if err != nil {
		it.err = err
		return it
	}
	view := pb.ReadView_READ_VIEW_CONTEXT
	switch opts.View {
	case ViewRaw:
		view = pb.ReadView_READ_VIEW_RAW
	case ViewHistory:
		view = pb.ReadView_READ_VIEW_HISTORY
	}
	it.req = &pb.ReadRequest{Ref: r, View: view, AfterSeq: opts.AfterSeq, Limit: opts.Limit,
		MaxTokens: opts.MaxTokens, ChunkSize: opts.ChunkSize}
	return it
}

// Info describes the whole read (message and token totals, last seq); nil before the first Next.
func (it *MessageIterator) Info() *pb.ReadInfo { return it.info }

// Next returns the next message, or io.EOF after the last one, or an *Error.
func (it *MessageIterator) Next() (*pb.Message, error) {
	for {
		if it.err != nil {
			return nil, it.err
		}
		if len(it.buf) > 0 {
			m := it.buf[0]
			it.buf = it.buf[1:]
			return m, nil
		}
		if it.stream == nil {
			sctx, cancel := context.WithTimeout(it.c.outgoing(it.ctx), it.timeout)
			stream, err := it.c.stub.Read(sctx, it.req)
			if err != nil {
				e := fromCall(sctx, err)
				cancel()
				if it.retry(e) {
					continue
				}
				return nil, it.err
			}
			it.stream, it.cancel, it.sctx = stream, cancel, sctx
		}
		item, err := it.stream.Recv()
		if err == io.EOF {
			it.finish(io.EOF)
			return nil, io.EOF
		}
		if err != nil {
			e := fromCall(it.sctx, err)
			it.cancel()
			it.stream = nil
			if it.retry(e) {
				continue
			}
			return nil, it.err
		}
		if !it.received {
			it.received = true
			it.info = item.GetInfo()
		}
		it.buf = item.GetMessages()
	}
}

// retry records e and reports whether another attempt should be made.
func (it *MessageIterator) retry(e *Error) bool {
	if e.Code == codes.Unavailable && !it.received && it.attempt < len(it.backoffs) && it.ctx.Err() == nil {
		if sleepCtx(it.ctx, it.backoffs[it.attempt]) == nil {
			it.attempt++
			return true
		}
		e = fromContext(it.ctx)
	}
	it.finish(e)
	return false
}

func (it *MessageIterator) finish(err error) {
	it.err = err
	if it.cancel != nil {
		it.cancel()
	}
}

// Close stops the stream; Next then returns io.EOF.
func (it *MessageIterator) Close() {
	if it.err == nil {
		it.finish(io.EOF)
	}
}

// All drains the iterator (and closes it).
func (it *MessageIterator) All() ([]*pb.Message, error) {
	defer it.Close()
	var out []*pb.Message
	for {
		m, err := it.Next()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, m)
	}
}

// ReadAll reads every message of a Read into a slice.
func (c *Client) ReadAll(ctx context.Context, ref Ref, opts ReadOptions) ([]*pb.Message, error) {
	return c.Read(ctx, ref, opts).All()
}

// Watcher yields changes of an instance as they happen; Next returns io.EOF when the daemon
// ends the stream, after Close, or once the context passed to Watch is cancelled or past its
// deadline (ctx.Err() tells which). Close it (or cancel its context) to stop.
type Watcher struct {
	ctx    context.Context // the caller's: when it ends, the watch ends with io.EOF
	stream pb.MemoryService_WatchClient
	cancel context.CancelFunc
	err    error
}

// Watch delivers messages with seq > afterSeq first, then live changes (no deadline).
func (c *Client) Watch(ctx context.Context, ref Ref, afterSeq uint64) *Watcher {
	r, err := ref.proto()
	if err != nil {
		return &Watcher{err: err}
	}
	wctx, cancel := context.WithCancel(c.outgoing(ctx))
	stream, err := c.stub.Watch(wctx, &pb.WatchRequest{Ref: r, AfterSeq: afterSeq})
	if err != nil {
		cancel()
		if ctx.Err() != nil {
			return &Watcher{err: io.EOF}
		}
		return &Watcher{err: fromCall(wctx, err)}
	}
	return &Watcher{ctx: ctx, stream: stream, cancel: cancel}
}

// Next returns the next change: exactly one of GetAppended, GetFlushed, GetCleared is set.
func (w *Watcher) Next() (*pb.WatchResponse, error) {
	if w.err != nil {
		return nil, w.err
	}
	ev, err := w.stream.Recv()
	if err == io.EOF {
		w.Close()
		w.err = io.EOF
		return nil, io.EOF
	}
	if err != nil {
		// The caller cancelled, or its deadline passed: a normal end, like Close. The
		// daemon's DEADLINE_EXCEEDED (it enforces the same deadline) can arrive a moment
		// before the caller's own context reports it: that is the same end.
		_, hasDeadline := w.ctx.Deadline()
		if w.ctx.Err() != nil || (hasDeadline && status.Code(err) == codes.DeadlineExceeded) {
			w.Close()
			return nil, io.EOF
		}
		w.Close()
		w.err = fromRPC(err)
		return nil, w.err
	}
	return ev, nil
}

// Close stops watching; Next then returns io.EOF.
func (w *Watcher) Close() {
	if w.cancel != nil {
		w.cancel()
	}
	if w.err == nil {
		w.err = io.EOF
	}
}
