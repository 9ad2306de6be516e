package memoryd_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/memoryd/memoryd/clients/go/memoryd"
	pb "github.com/memoryd/memoryd/clients/go/memorydv1"
)

var wfCounter atomic.Int32

func freshWorkflow() string { return fmt.Sprintf("wf-go-%d", wfCounter.Add(1)) }

func as(agent, wf string) memoryd.Agent {
	return memoryd.Agent{ID: agent, Context: map[string]interface{}{
		"workflow": map[string]interface{}{"id": wf}, "user": map[string]interface{}{"id": "u-" + wf}}}
}

func tokens(ms []*pb.Message) (n uint32) {
	for _, m := range ms {
		n += m.GetTokenCount()
	}
	return n
}

// TestProject runs against testdata/project.yaml: agent scopes, read-only references, the context
// view, flush, resolve, list, end workflow and watch.
func TestProject(t *testing.T) {
	project, err := filepath.Abs(filepath.Join("testdata", "project.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	c := dial(t, startDaemon(t, "--config", project))
	ctx := context.Background()

	t.Run("list resources", func(t *testing.T) {
		res, err := c.ListResources(ctx)
		if err != nil || res.GetProject() != "client-tests" {
			t.Fatal(res, err)
		}
		for _, r := range res.GetResources() {
			if r.GetId() == "chat" {
				fs := r.GetSettings().GetFields()["flushing_strategy"].GetStructValue().GetFields()
				if r.GetBudgetTokens() != 300 || fs["summary_tokens"].GetNumberValue() != 64 {
					t.Fatalf("chat: %v", r)
				}
				return
			}
		}
		t.Fatal("no chat resource")
	})

	t.Run("a fold plan on a fifo resource is ErrFailedPrecondition", func(t *testing.T) {
		ref := memoryd.KeyRef("log", "go-log")
		if _, err := c.Append(ctx, ref, []*pb.Message{memoryd.User("event")}); err != nil {
			t.Fatal(err)
		}
		if _, err := c.PlanFlush(ctx, ref); !errors.Is(err, memoryd.ErrFailedPrecondition) {
			t.Fatalf("want ErrFailedPrecondition, got %v", err)
		}
	})

	t.Run("resolve agent", func(t *testing.T) {
		res, err := c.ResolveAgent(ctx, as("reader", "wf-42"))
		if err != nil || res.GetLevel() != pb.ConfigLevel_CONFIG_LEVEL_ADVANCED || len(res.GetReferences()) != 2 {
			t.Fatal(res, err)
		}
		r := res.GetReferences()[0]
		if r.GetMemoryId() != "chat" || r.GetMode() != pb.AccessMode_ACCESS_MODE_READ_ONLY || r.GetKey() != "chat-wf-42" {
			t.Fatal(r)
		}
		if _, err := c.ResolveAgent(ctx, memoryd.Agent{ID: "nobody"}); !errors.Is(err, memoryd.ErrNotFound) {
			t.Fatal(err)
		}
	})

	t.Run("read-only reference is enforced", func(t *testing.T) {
		wf := freshWorkflow()
		if _, err := c.Append(ctx, memoryd.AgentRef("facts", as("writer", wf)), []*pb.Message{memoryd.User("likes tea 🍵")}); err != nil {
			t.Fatal(err)
		}
		_, err := c.Append(ctx, memoryd.AgentRef("facts", as("reader", wf)), []*pb.Message{memoryd.User("no")})
		var e *memoryd.Error
		if !errors.Is(err, memoryd.ErrPermissionDenied) || !errors.As(err, &e) || !strings.Contains(e.Details, "read-only") {
			t.Fatalf("want PERMISSION_DENIED, got %v", err)
		}
		if _, err := c.Clear(ctx, memoryd.AgentRef("facts", as("reader", wf))); !errors.Is(err, memoryd.ErrPermissionDenied) {
			t.Fatal(err)
		}
		direct := memoryd.KeyRef("facts", "facts-u-"+wf) // access.direct: read-only
		if _, err := c.Append(ctx, direct, []*pb.Message{memoryd.User("no")}); !errors.Is(err, memoryd.ErrPermissionDenied) {
			t.Fatal(err)
		}
		seen, err := c.ReadAll(ctx, memoryd.AgentRef("facts", as("reader", wf)), memoryd.ReadOptions{View: memoryd.ViewRaw})
		if err != nil || len(seen) != 1 || seen[0].GetContent() != "likes tea 🍵" {
			t.Fatal(seen, err)
		}
	})

	t.Run("context view stays within budget", func(t *testing.T) {
		ref := memoryd.AgentRef("chat", as("writer", freshWorkflow()))
		if _, err := c.Append(ctx, ref, []*pb.Message{memoryd.System("You are terse.")}); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 6; i++ {
			msg := memoryd.User(fmt.Sprintf("question %d %s", i, strings.Repeat("word ", 20)))
			if _, err := c.Append(ctx, ref, []*pb.Message{msg}); err != nil {
				t.Fatal(err)
			}
		}
		full, err := c.ReadAll(ctx, ref, memoryd.ReadOptions{})
		if err != nil || full[0].GetContent() != "You are terse." || tokens(full) > 300 {
			t.Fatal(tokens(full), err)
		}
		small, err := c.ReadAll(ctx, ref, memoryd.ReadOptions{View: memoryd.ViewContext, MaxTokens: 60})
		if err != nil || tokens(small) > 60 || len(small) >= len(full) {
			t.Fatal(len(small), tokens(small), err)
		}
	})

	t.Run("flush dry run then applied", func(t *testing.T) {
		ref := memoryd.AgentRef("chat", as("writer", freshWorkflow()))
		var batch []*pb.Message
		for i := 0; i < 8; i++ {
			batch = append(batch, memoryd.User(fmt.Sprintf("note %d %s", i, strings.Repeat("detail ", 8))))
		}
		if _, err := c.Append(ctx, ref, batch); err != nil {
			t.Fatal(err)
		}
		before, _ := c.Stats(ctx, ref)
		plan, err := c.Flush(ctx, ref, true)
		if err != nil || plan.GetApplied() || len(plan.GetRemovedSeqs()) == 0 {
			t.Fatal(plan, err)
		}
		if same, _ := c.Stats(ctx, ref); same.GetTokenCount() != before.GetTokenCount() || same.GetFlushCount() != before.GetFlushCount() {
			t.Fatal("dry run changed the instance")
		}
		done, err := c.Flush(ctx, ref, false)
		if err != nil || !done.GetApplied() || fmt.Sprint(done.GetRemovedSeqs()) != fmt.Sprint(plan.GetRemovedSeqs()) {
			t.Fatal(done, err)
		}
		after, _ := c.Stats(ctx, ref)
		if after.GetFlushCount() != before.GetFlushCount()+1 {
			t.Fatal(after)
		}
	})

	t.Run("end workflow", func(t *testing.T) {
		wf := freshWorkflow()
		if _, err := c.Append(ctx, memoryd.AgentRef("chat", as("writer", wf)), []*pb.Message{memoryd.User("temporary")}); err != nil {
			t.Fatal(err)
		}
		if n, err := c.EndWorkflow(ctx, wf); err != nil || n != 1 {
			t.Fatal(n, err)
		}
		if n, err := c.EndWorkflow(ctx, wf); err != nil || n != 0 {
			t.Fatal(n, err)
		}
	})

	t.Run("watch appends and clear, resuming from after_seq", func(t *testing.T) {
		wf := freshWorkflow()
		ref := memoryd.AgentRef("chat", as("writer", wf))
		if _, err := c.Append(ctx, ref, []*pb.Message{memoryd.User("backlog 📜")}); err != nil {
			t.Fatal(err)
		}
		w := c.Watch(ctx, memoryd.AgentRef("chat", as("reader", wf)), 0)
		defer w.Close()
		// The backlog arrives once the watch is live; only then is a Clear sure to be seen.
		ev, err := w.Next()
		if err != nil || ev.GetAppended().GetMessages()[0].GetContent() != "backlog 📜" {
			t.Fatal(ev, err)
		}
		if _, err := c.Append(ctx, ref, []*pb.Message{memoryd.User("live ⚡")}); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Clear(ctx, ref); err != nil {
			t.Fatal(err)
		}
		var live []string
		for {
			ev, err := w.Next()
			if err != nil {
				t.Fatal(err)
			}
			if ev.GetCleared() != nil {
				break
			}
			for _, m := range ev.GetAppended().GetMessages() {
				live = append(live, fmt.Sprintf("%d:%s", m.GetSeq(), m.GetContent()))
			}
		}
		if fmt.Sprint(live) != "[2:live ⚡]" {
			t.Fatal(live)
		}
		w.Close()
		if _, err := w.Next(); err != io.EOF {
			t.Fatalf("after Close: %v", err)
		}
	})
}
