package memoryd_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"testing"

	"github.com/memoryd/memoryd/clients/go/memoryd"
	pb "github.com/memoryd/memoryd/clients/go/memorydv1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func dial(t *testing.T, addr string, opts ...memoryd.Option) *memoryd.Client {
	t.Helper()
	c, err := memoryd.Dial(addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func seqs(ms []*pb.Message) []uint64 {
	out := make([]uint64, len(ms))
	for i, m := range ms {
		out[i] = m.GetSeq()
	}
	return out
}

func TestDefaultProject(t *testing.T) {
	addr := startDaemon(t)
	c := dial(t, addr)
	ctx := context.Background()

	t.Run("append and read back byte for byte", func(t *testing.T) {
		ref := memoryd.KeyRef("default", "go-roundtrip")
		contents := []string{"héllo wörld", "emoji 🧠🚀 and CJK 記憶", "plain"}
		sys := memoryd.System(contents[0])
		zero := int32(0)
		sys.Priority = &zero
		user := memoryd.User(contents[1])
		user.Metadata = map[string]string{"lang": "mixed"}
		res, err := c.Append(ctx, ref, []*pb.Message{sys, user, memoryd.Assistant(contents[2])})
		if err != nil {
			t.Fatal(err)
		}
		if res.GetReplayed() || len(res.GetResults()) != 3 || res.GetStats().GetMessageCount() != 3 {
			t.Fatalf("unexpected append response: %v", res)
		}
		got, err := c.ReadAll(ctx, ref, memoryd.ReadOptions{View: memoryd.ViewRaw})
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(seqs(got)) != "[1 2 3]" {
			t.Fatalf("seqs %v", seqs(got))
		}
		for i, m := range got {
			if !bytes.Equal([]byte(m.GetContent()), []byte(contents[i])) {
				t.Errorf("content %d: %q != %q", i, m.GetContent(), contents[i])
			}
			if m.GetId() != res.GetResults()[i].GetId() || m.GetTokenCount() == 0 || m.GetCreatedAt() == nil {
				t.Errorf("server-set fields of %d: %v", i, m)
			}
		}
		if got[0].GetRole() != pb.Role_ROLE_SYSTEM || got[1].GetMetadata()["lang"] != "mixed" {
			t.Errorf("role/metadata not kept: %v", got)
		}
	})

	t.Run("retry with the same idempotency key replays", func(t *testing.T) {
		ref := memoryd.KeyRef("default", "go-idem")
		key := memoryd.NewIdempotencyKey()
		batch := []*pb.Message{memoryd.User("only once ✅")}
		first, err := c.Append(ctx, ref, batch, memoryd.WithIdempotencyKey(key))
		if err != nil {
			t.Fatal(err)
		}
		again, err := c.Append(ctx, ref, batch, memoryd.WithIdempotencyKey(key))
		if err != nil {
			t.Fatal(err)
		}
		if !again.GetReplayed() || again.GetResults()[0].GetSeq() != first.GetResults()[0].GetSeq() {
			t.Fatalf("not replayed: %v", again)
		}
		got, _ := c.ReadAll(ctx, ref, memoryd.ReadOptions{View: memoryd.ViewRaw})
		if len(got) != 1 {
			t.Fatalf("stored %d copies", len(got))
		}
	})

	t.Run("each append gets its own key by default", func(t *testing.T) {
		ref := memoryd.KeyRef("default", "go-auto")
		for i := 0; i < 2; i++ {
			if _, err := c.Append(ctx, ref, []*pb.Message{memoryd.User("same")}); err != nil {
				t.Fatal(err)
			}
		}
		st, err := c.Stats(ctx, ref)
		if err != nil || st.GetMessageCount() != 2 {
			t.Fatalf("stats %v %v", st, err)
		}
	})

	t.Run("read after a seq, limited, chunked, closed early", func(t *testing.T) {
		ref := memoryd.KeyRef("default", "go-paging")
		var batch []*pb.Message
		for i := 1; i <= 25; i++ {
			batch = append(batch, memoryd.User(fmt.Sprintf("m%d", i)))
		}
		if _, err := c.Append(ctx, ref, batch); err != nil {
			t.Fatal(err)
		}
		tail, err := c.ReadAll(ctx, ref, memoryd.ReadOptions{View: memoryd.ViewRaw, AfterSeq: 20})
		if err != nil || fmt.Sprint(seqs(tail)) != "[21 22 23 24 25]" {
			t.Fatalf("tail %v %v", seqs(tail), err)
		}
		page, _ := c.ReadAll(ctx, ref, memoryd.ReadOptions{View: memoryd.ViewRaw, AfterSeq: 5, Limit: 3})
		if fmt.Sprint(seqs(page)) != "[6 7 8]" {
			t.Fatalf("page %v", seqs(page))
		}
		it := c.Read(ctx, ref, memoryd.ReadOptions{View: memoryd.ViewRaw, ChunkSize: 4})
		n := 0
		for {
			m, err := it.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			n++
			if m.GetSeq() != uint64(n) {
				t.Fatalf("out of order: %d at %d", m.GetSeq(), n)
			}
		}
		if n != 25 || it.Info().GetLastSeq() != 25 || it.Info().GetInstanceId() == "" {
			t.Fatalf("read %d, info %v", n, it.Info())
		}
		early := c.Read(ctx, ref, memoryd.ReadOptions{View: memoryd.ViewRaw, ChunkSize: 1})
		if m, err := early.Next(); err != nil || m.GetSeq() != 1 {
			t.Fatal(m, err)
		}
		early.Close()
		if _, err := early.Next(); err != io.EOF {
			t.Fatalf("after Close: %v", err)
		}
	})

	t.Run("plan and apply a fold under the caller's summary", func(t *testing.T) {
		ref := memoryd.KeyRef("default", "go-external")
		var batch []*pb.Message
		for i := 0; i < 10; i++ {
			batch = append(batch, memoryd.User(fmt.Sprintf("e%d", i)))
		}
		if _, err := c.Append(ctx, ref, batch); err != nil {
			t.Fatal(err)
		}
		plan, err := c.PlanFlush(ctx, ref)
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(plan.GetSeqs()) != "[1 2 3]" || len(plan.GetMessages()) != 3 || plan.GetSummaryMaxTokens() == 0 {
			t.Fatalf("unexpected plan: %v", plan)
		}
		if _, err := c.Append(ctx, ref, []*pb.Message{memoryd.User("while the model wrote")}); err != nil {
			t.Fatal(err)
		}
		done, err := c.ApplyFlush(ctx, ref, plan.GetPlanToken(), "e0 to e2, summed up")
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(done.GetRemovedSeqs()) != "[1 2 3]" || done.GetSummary().GetContent() != "e0 to e2, summed up" ||
			done.GetStats().GetMessageCount() != 8 {
			t.Fatalf("unexpected fold: %v", done)
		}
		if _, err := c.ApplyFlush(ctx, ref, plan.GetPlanToken(), "again"); !errors.Is(err, memoryd.ErrAborted) {
			t.Fatalf("a plan applied twice: %v, want ErrAborted", err)
		}
		if _, err := c.ApplyFlush(ctx, ref, "pt1.garbled.token", "s"); !errors.Is(err, memoryd.ErrInvalidArgument) {
			t.Fatalf("a garbled token: %v, want ErrInvalidArgument", err)
		}
	})

	t.Run("stats health clear", func(t *testing.T) {
		ref := memoryd.KeyRef("default", "go-clear")
		if _, err := c.Append(ctx, ref, []*pb.Message{memoryd.User("a"), memoryd.User("b")}); err != nil {
			t.Fatal(err)
		}
		st, err := c.Stats(ctx, ref)
		if err != nil || st.GetMessageCount() != 2 || st.GetTokenCount() == 0 || st.GetInstanceId() == "" {
			t.Fatalf("stats %v %v", st, err)
		}
		h, err := c.Health(ctx, &ref)
		if err != nil || !h.GetHealthy() || h.GetStore() != "embedded" || h.GetInstance().GetStats().GetMessageCount() != 2 {
			t.Fatalf("health %v %v", h, err)
		}
		if n, err := c.Clear(ctx, ref); err != nil || n != 2 {
			t.Fatalf("clear %d %v", n, err)
		}
		if n, err := c.Clear(ctx, ref); err != nil || n != 0 {
			t.Fatalf("second clear %d %v", n, err)
		}
	})

	t.Run("history view and single deletes", func(t *testing.T) {
		ref := memoryd.KeyRef("default", "go-history")
		batch := []*pb.Message{memoryd.User("a"), memoryd.User("b"), memoryd.User("c"), memoryd.User("d"), memoryd.User("e")}
		if _, err := c.Append(ctx, ref, batch); err != nil {
			t.Fatal(err)
		}
		fl, err := c.Flush(ctx, ref, false)
		if err != nil || !fl.GetApplied() || len(fl.GetRemovedSeqs()) == 0 {
			t.Fatalf("flush %v %v", fl, err)
		}
		removed := map[uint64]bool{}
		for _, s := range fl.GetRemovedSeqs() {
			removed[s] = true
		}
		hist, err := c.ReadAll(ctx, ref, memoryd.ReadOptions{View: memoryd.ViewHistory})
		if err != nil || fmt.Sprint(seqs(hist)) != "[1 2 3 4 5]" {
			t.Fatalf("history %v %v", seqs(hist), err)
		}
		for _, m := range hist {
			if m.GetFolded() != removed[m.GetSeq()] {
				t.Fatalf("seq %d folded=%v", m.GetSeq(), m.GetFolded())
			}
		}
		st, err := c.Stats(ctx, ref)
		if err != nil || st.GetHistoryMessages() != uint64(len(removed)) || st.GetSummaryThroughSeq() == 0 {
			t.Fatalf("stats %v %v", st, err)
		}
		res, err := c.DeleteMessages(ctx, ref, []uint64{1, 5, 99}, memoryd.DeleteOptions{})
		if err != nil || fmt.Sprint(res.GetDeletedSeqs()) != "[1 5]" {
			t.Fatalf("delete %v %v", res, err)
		}
		stale, newest := uint64(4), uint64(5)
		if _, err := c.DeleteMessages(ctx, ref, []uint64{4}, memoryd.DeleteOptions{IfLastSeq: &stale}); !errors.Is(err, memoryd.ErrAborted) {
			t.Fatalf("want ABORTED, got %v", err)
		}
		res, err = c.DeleteMessages(ctx, ref, []uint64{4}, memoryd.DeleteOptions{IfLastSeq: &newest})
		if err != nil || fmt.Sprint(res.GetDeletedSeqs()) != "[4]" {
			t.Fatalf("pop %v %v", res, err)
		}
		hist, err = c.ReadAll(ctx, ref, memoryd.ReadOptions{View: memoryd.ViewHistory})
		if err != nil || fmt.Sprint(seqs(hist)) != "[2 3]" {
			t.Fatalf("history after deletes %v %v", seqs(hist), err)
		}
	})

	t.Run("typed errors", func(t *testing.T) {
		_, err := c.Append(ctx, memoryd.KeyRef("default", ""), []*pb.Message{memoryd.User("x")})
		var e *memoryd.Error
		if !errors.As(err, &e) || !errors.Is(err, memoryd.ErrInvalidArgument) || e.CodeName() != "INVALID_ARGUMENT" {
			t.Fatalf("want INVALID_ARGUMENT, got %v", err)
		}
		if status.Code(err) != codes.InvalidArgument || e.Details == "" {
			t.Fatalf("status not carried: %v", err)
		}
		if _, err := c.Stats(ctx, memoryd.KeyRef("no-such-memory", "k")); !errors.Is(err, memoryd.ErrNotFound) {
			t.Fatalf("want NOT_FOUND, got %v", err)
		}
		it := c.Read(ctx, memoryd.KeyRef("no-such-memory", "k"), memoryd.ReadOptions{View: memoryd.ViewRaw})
		if _, err := it.Next(); !errors.Is(err, memoryd.ErrNotFound) {
			t.Fatalf("read: want NOT_FOUND, got %v", err)
		}
		both := memoryd.Ref{MemoryID: "default", Key: "k", Agent: &memoryd.Agent{ID: "a"}}
		if _, err := c.Stats(ctx, both); !errors.Is(err, memoryd.ErrInvalidArgument) {
			t.Fatalf("ambiguous ref: %v", err)
		}
	})
}
