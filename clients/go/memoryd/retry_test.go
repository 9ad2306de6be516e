package memoryd_test

// Retry, deadline and metadata behaviour against an in-process gRPC server that injects
// failures (a real grpc-go server; the daemon cannot be made to fail on cue).

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/memoryd/memoryd/clients/go/memoryd"
	pb "github.com/memoryd/memoryd/clients/go/memorydv1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// flaky answers UNAVAILABLE to the first `failures` calls of each method, then succeeds.
type flaky struct {
	pb.UnimplementedMemoryServiceServer
	failures int32
	calls    atomic.Int32
	auth     atomic.Value
	midRead  bool // Read: send one item, then fail
}

var errUnavailable = status.Error(codes.Unavailable, "store down")

func (f *flaky) fail(ctx context.Context) bool {
	if md, ok := metadata.FromIncomingContext(ctx); ok && len(md.Get("authorization")) > 0 {
		f.auth.Store(md.Get("authorization")[0])
	}
	return f.calls.Add(1) <= f.failures
}

func (f *flaky) Append(ctx context.Context, _ *pb.AppendRequest) (*pb.AppendResponse, error) {
	if f.fail(ctx) {
		return nil, errUnavailable
	}
	return &pb.AppendResponse{Results: []*pb.AppendResult{{Seq: 1}}}, nil
}

func (f *flaky) GetStats(ctx context.Context, _ *pb.GetStatsRequest) (*pb.GetStatsResponse, error) {
	if f.fail(ctx) {
		return nil, errUnavailable
	}
	return &pb.GetStatsResponse{Stats: &pb.InstanceStats{MessageCount: 7}}, nil
}

func (f *flaky) Flush(ctx context.Context, _ *pb.FlushRequest) (*pb.FlushResponse, error) {
	if f.fail(ctx) {
		return nil, errUnavailable
	}
	return &pb.FlushResponse{}, nil
}

func (f *flaky) GetHealth(ctx context.Context, _ *pb.GetHealthRequest) (*pb.GetHealthResponse, error) {
	<-ctx.Done() // never answers: the client's deadline must end the call
	return nil, ctx.Err()
}

func (f *flaky) Read(_ *pb.ReadRequest, s pb.MemoryService_ReadServer) error {
	if f.midRead {
		f.calls.Add(1)
		if err := s.Send(&pb.ReadResponse{Messages: []*pb.Message{{Seq: 1}}}); err != nil {
			return err
		}
		return errUnavailable
	}
	if f.fail(s.Context()) {
		return errUnavailable
	}
	return s.Send(&pb.ReadResponse{Messages: []*pb.Message{{Seq: 1}, {Seq: 2}}})
}

var fast = memoryd.RetryPolicy{Attempts: 4, InitialBackoff: time.Millisecond, MaxBackoff: 4 * time.Millisecond, Multiplier: 2}

func serveFlaky(t *testing.T, f *flaky, network, address string) string {
	t.Helper()
	lis, err := net.Listen(network, address)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	pb.RegisterMemoryServiceServer(srv, f)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	if network == "unix" {
		return "unix:" + address
	}
	return lis.Addr().String()
}

func TestRetries(t *testing.T) {
	ctx := context.Background()
	ref := memoryd.KeyRef("m", "k")
	cases := []struct {
		name      string
		failures  int32
		opts      []memoryd.Option
		call      func(c *memoryd.Client) error
		wantCalls int32
		wantErr   *memoryd.Error
	}{
		{"append with auto key is retried", 2, nil, func(c *memoryd.Client) error {
			_, err := c.Append(ctx, ref, []*pb.Message{memoryd.User("x")})
			return err
		}, 3, nil},
		{"append without a key is not retried", 2, []memoryd.Option{memoryd.WithoutAutoIdempotency()}, func(c *memoryd.Client) error {
			_, err := c.Append(ctx, ref, []*pb.Message{memoryd.User("x")})
			return err
		}, 1, memoryd.ErrUnavailable},
		{"append with an explicit key is retried", 1, []memoryd.Option{memoryd.WithoutAutoIdempotency()}, func(c *memoryd.Client) error {
			_, err := c.Append(ctx, ref, []*pb.Message{memoryd.User("x")}, memoryd.WithIdempotencyKey("k1"))
			return err
		}, 2, nil},
		{"stats gives up after the policy's attempts", 100, nil, func(c *memoryd.Client) error {
			_, err := c.Stats(ctx, ref)
			return err
		}, 4, memoryd.ErrUnavailable},
		{"flush is not retried", 1, nil, func(c *memoryd.Client) error {
			_, err := c.Flush(ctx, ref, false)
			return err
		}, 1, memoryd.ErrUnavailable},
		{"dry-run flush is retried", 1, nil, func(c *memoryd.Client) error {
			_, err := c.Flush(ctx, ref, true)
			return err
		}, 2, nil},
		{"read is retried before the first item", 3, nil, func(c *memoryd.Client) error {
			ms, err := c.ReadAll(ctx, ref, memoryd.ReadOptions{})
			if err == nil && len(ms) != 2 {
				return errors.New("wrong read")
			}
			return err
		}, 4, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := &flaky{failures: tc.failures}
			c := dial(t, serveFlaky(t, f, "tcp", "127.0.0.1:0"), append([]memoryd.Option{memoryd.WithRetry(fast)}, tc.opts...)...)
			err := tc.call(c)
			if tc.wantErr == nil && err != nil || tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			if got := f.calls.Load(); got != tc.wantCalls {
				t.Fatalf("calls = %d, want %d", got, tc.wantCalls)
			}
		})
	}
}

func TestReadIsNotRetriedAfterTheFirstItem(t *testing.T) {
	f := &flaky{midRead: true}
	c := dial(t, serveFlaky(t, f, "tcp", "127.0.0.1:0"), memoryd.WithRetry(fast))
	it := c.Read(context.Background(), memoryd.KeyRef("m", "k"), memoryd.ReadOptions{})
	if m, err := it.Next(); err != nil || m.GetSeq() != 1 {
		t.Fatal(m, err)
	}
	if _, err := it.Next(); !errors.Is(err, memoryd.ErrUnavailable) {
		t.Fatalf("want UNAVAILABLE, got %v", err)
	}
	if f.calls.Load() != 1 {
		t.Fatalf("read was retried: %d calls", f.calls.Load())
	}
}

func TestDefaultDeadlineAndToken(t *testing.T) {
	f := &flaky{}
	c := dial(t, serveFlaky(t, f, "tcp", "127.0.0.1:0"), memoryd.WithTimeout(100*time.Millisecond), memoryd.WithToken("s3cret"))
	if _, err := c.Health(context.Background(), nil); !errors.Is(err, memoryd.ErrDeadlineExceeded) {
		t.Fatalf("want DEADLINE_EXCEEDED, got %v", err)
	}
	if _, err := c.Stats(context.Background(), memoryd.KeyRef("m", "k")); err != nil {
		t.Fatal(err)
	}
	if got := f.auth.Load(); got != "Bearer s3cret" {
		t.Fatalf("authorization = %v", got)
	}
}

func TestUnixSocketTarget(t *testing.T) {
	f := &flaky{}
	c := dial(t, serveFlaky(t, f, "unix", filepath.Join(t.TempDir(), "m.sock")))
	st, err := c.Stats(context.Background(), memoryd.KeyRef("m", "k"))
	if err != nil || st.GetMessageCount() != 7 {
		t.Fatal(st, err)
	}
}
