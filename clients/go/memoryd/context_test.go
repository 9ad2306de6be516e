package memoryd_test

// The context's end is visible through errors.Is, as with the standard library, and ends a
// Watch quietly (io.EOF). A real grpc-go server that holds each call until the client ends it.

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/memoryd/memoryd/clients/go/memoryd"
	pb "github.com/memoryd/memoryd/clients/go/memorydv1"
	"google.golang.org/grpc"
)

// holding answers nothing until the client goes away; `arrived` says a call is in the server.
type holding struct {
	pb.UnimplementedMemoryServiceServer
	arrived chan struct{}
}

func (h *holding) GetHealth(ctx context.Context, _ *pb.GetHealthRequest) (*pb.GetHealthResponse, error) {
	h.arrived <- struct{}{}
	<-ctx.Done()
	return nil, ctx.Err()
}

func (h *holding) Read(_ *pb.ReadRequest, s pb.MemoryService_ReadServer) error {
	h.arrived <- struct{}{}
	<-s.Context().Done()
	return s.Context().Err()
}

func (h *holding) Watch(_ *pb.WatchRequest, s pb.MemoryService_WatchServer) error {
	ev := &pb.WatchResponse{Event: &pb.WatchResponse_Cleared{Cleared: &pb.Cleared{}}}
	if err := s.Send(ev); err != nil {
		return err
	}
	<-s.Context().Done()
	return s.Context().Err()
}

func dialHolding(t *testing.T, opts ...memoryd.Option) (*memoryd.Client, *holding) {
	t.Helper()
	h := &holding{arrived: make(chan struct{}, 1)}
	srv := serve(t, h)
	c, err := memoryd.Dial(srv, append([]memoryd.Option{memoryd.WithRetry(fast)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c, h
}

func TestErrorsWrapTheContextsError(t *testing.T) {
	t.Run("cancelled during a unary call", func(t *testing.T) {
		c, h := dialHolding(t)
		ctx, cancel := context.WithCancel(context.Background())
		go func() { <-h.arrived; cancel() }()
		_, err := c.Health(ctx, nil)
		if !errors.Is(err, context.Canceled) || !errors.Is(err, memoryd.ErrCanceled) {
			t.Fatalf("want context.Canceled and ErrCanceled, got %#v", err)
		}
	})
	t.Run("cancelled before the call", func(t *testing.T) {
		c, _ := dialHolding(t)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_, err := c.Stats(ctx, memoryd.KeyRef("m", "k"))
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("want context.Canceled, got %#v", err)
		}
	})
	t.Run("the caller's deadline", func(t *testing.T) {
		c, h := dialHolding(t)
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		go func() { <-h.arrived }()
		_, err := c.Health(ctx, nil)
		if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, memoryd.ErrDeadlineExceeded) {
			t.Fatalf("want context.DeadlineExceeded and ErrDeadlineExceeded, got %#v", err)
		}
		var e *memoryd.Error
		if !errors.As(err, &e) || e.CodeName() != "DEADLINE_EXCEEDED" {
			t.Fatalf("want a *memoryd.Error DEADLINE_EXCEEDED, got %#v", err)
		}
	})
	t.Run("the client's default deadline", func(t *testing.T) {
		c, h := dialHolding(t, memoryd.WithTimeout(50*time.Millisecond))
		go func() { <-h.arrived }()
		_, err := c.Health(context.Background(), nil)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("want context.DeadlineExceeded, got %#v", err)
		}
	})
	t.Run("cancelled during a read", func(t *testing.T) {
		c, h := dialHolding(t)
		ctx, cancel := context.WithCancel(context.Background())
		go func() { <-h.arrived; cancel() }()
		_, err := c.Read(ctx, memoryd.KeyRef("m", "k"), memoryd.ReadOptions{}).Next()
		if !errors.Is(err, context.Canceled) || !errors.Is(err, memoryd.ErrCanceled) {
			t.Fatalf("want context.Canceled, got %#v", err)
		}
	})
}

func TestCancellingAWatchEndsItWithEOF(t *testing.T) {
	t.Run("cancel", func(t *testing.T) {
		c, _ := dialHolding(t)
		ctx, cancel := context.WithCancel(context.Background())
		w := c.Watch(ctx, memoryd.KeyRef("m", "k"), 0)
		defer w.Close()
		if ev, err := w.Next(); err != nil || ev.GetCleared() == nil {
			t.Fatalf("first event: %v %v", ev, err)
		}
		cancel()
		if _, err := w.Next(); err != io.EOF {
			t.Fatalf("want io.EOF after cancel, got %#v", err)
		}
	})
	t.Run("deadline", func(t *testing.T) {
		c, _ := dialHolding(t)
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		w := c.Watch(ctx, memoryd.KeyRef("m", "k"), 0)
		defer w.Close()
		for {
			ev, err := w.Next()
			if err == io.EOF {
				break
			}
			if err != nil || ev.GetCleared() == nil {
				t.Fatalf("want events then io.EOF once the deadline passed, got %v %#v", ev, err)
			}
		}
		// The daemon's DEADLINE_EXCEEDED may come a moment before the context reports it.
		if dl, _ := ctx.Deadline(); !errors.Is(ctx.Err(), context.DeadlineExceeded) && time.Until(dl) > 50*time.Millisecond {
			t.Fatalf("the watch ended %v before its deadline", time.Until(dl))
		}
	})
}

func serve(t *testing.T, impl pb.MemoryServiceServer) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	pb.RegisterMemoryServiceServer(srv, impl)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return lis.Addr().String()
}
