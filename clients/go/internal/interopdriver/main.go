// Command interopdriver is the Go side of tests/interop (pytest): it reads JSON commands, one per
// line, on stdin and answers each with one JSON line on stdout; "watch" streams one line per event.
// Usage: interopdriver ADDRESS. The Node and Python drivers speak the same protocol.
package main

import (
	"bufio"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"

	"github.com/memoryd/memoryd/clients/go/memoryd"
	pb "github.com/memoryd/memoryd/clients/go/memorydv1"
)

type obj = map[string]interface{}

type refJSON struct {
	Key   *string `json:"key"`
	Agent *struct {
		ID      string                 `json:"id"`
		Context map[string]interface{} `json:"context"`
	} `json:"agent"`
}

type msgJSON struct {
	Role        string            `json:"role"`
	ContentHex  string            `json:"content_hex"`
	ContentType *string           `json:"content_type"`
	Priority    *int32            `json:"priority"`
	Metadata    map[string]string `json:"metadata"`
	ToolCalls   []struct {
		ID           string `json:"id"`
		Name         string `json:"name"`
		ArgumentsHex string `json:"arguments_hex"`
	} `json:"tool_calls"`
	ToolCallID string     `json:"tool_call_id"`
	Name       string     `json:"name"`
	Parts      []partJSON `json:"parts"`
	ExtraHex   string     `json:"extra_hex"`
}

type mediaJSON struct {
	URL       string `json:"url"`
	FileID    string `json:"file_id"`
	DataHex   string `json:"data_hex"`
	MimeType  string `json:"mime_type"`
	SizeBytes string `json:"size_bytes"`
	Detail    string `json:"detail"`
	Width     uint32 `json:"width"`
	Height    uint32 `json:"height"`
	Filename  string `json:"filename"`
}

type partJSON struct {
	TextHex *string    `json:"text_hex"`
	Image   *mediaJSON `json:"image"`
	File    *mediaJSON `json:"file"`
}

type command struct {
	Op             string    `json:"op"`
	Memory         string    `json:"memory"`
	Ref            refJSON   `json:"ref"`
	Messages       []msgJSON `json:"messages"`
	IdempotencyKey string    `json:"idempotency_key"`
	View           string    `json:"view"`
	AfterSeq       uint64    `json:"after_seq"`
	Limit          uint32    `json:"limit"`
	MaxTokens      uint32    `json:"max_tokens"`
	ChunkSize      uint32    `json:"chunk_size"`
	Count          int       `json:"count"`
	MessagesJSON   string    `json:"messages_json"`
	Agent          *struct {
		ID      string                 `json:"id"`
		Context map[string]interface{} `json:"context"`
	} `json:"agent"`
}

var roles = map[string]pb.Role{"system": pb.Role_ROLE_SYSTEM, "user": pb.Role_ROLE_USER,
	"assistant": pb.Role_ROLE_ASSISTANT, "tool": pb.Role_ROLE_TOOL, "developer": pb.Role_ROLE_DEVELOPER}

func dec(v uint64) string { return strconv.FormatUint(v, 10) }

func hexed(s string) string { return hex.EncodeToString([]byte(s)) }

func unhexed(h string) (string, error) {
	b, err := hex.DecodeString(h)
	return string(b), err
}

func media(r *pb.MediaRef) obj {
	return obj{"url": r.GetUrl(), "file_id": r.GetFileId(), "mime_type": r.GetMimeType(), "detail": r.GetDetail(),
		"filename": r.GetFilename(), "data_hex": hex.EncodeToString(r.GetData()), "size_bytes": dec(r.GetSizeBytes()),
		"width": r.GetWidth(), "height": r.GetHeight()}
}

func part(p *pb.ContentPart) obj {
	switch x := p.GetPart().(type) {
	case *pb.ContentPart_Text:
		return obj{"text_hex": hexed(x.Text)}
	case *pb.ContentPart_Image:
		return obj{"image": media(x.Image)}
	case *pb.ContentPart_File:
		return obj{"file": media(x.File)}
	}
	return obj{}
}

func (j *mediaJSON) ref() (*pb.MediaRef, error) {
	data, err := hex.DecodeString(j.DataHex)
	if err != nil {
		return nil, err
	}
	var size uint64
	if j.SizeBytes != "" {
		if size, err = strconv.ParseUint(j.SizeBytes, 10, 64); err != nil {
			return nil, err
		}
	}
	return &pb.MediaRef{Url: j.URL, FileId: j.FileID, Data: data, MimeType: j.MimeType, SizeBytes: size,
		Detail: j.Detail, Width: j.Width, Height: j.Height, Filename: j.Filename}, nil
}

// build is the message an append command describes, new fields included.
func (m msgJSON) build() (*pb.Message, error) {
	content, err := unhexed(m.ContentHex)
	if err != nil {
		return nil, err
	}
	pm := &pb.Message{Role: roles[m.Role], Content: content, Priority: m.Priority, Metadata: m.Metadata,
		ToolCallId: m.ToolCallID, Name: m.Name}
	if m.ContentType != nil {
		pm.ContentType = *m.ContentType
	}
	for _, t := range m.ToolCalls {
		args, err := unhexed(t.ArgumentsHex)
		if err != nil {
			return nil, err
		}
		pm.ToolCalls = append(pm.ToolCalls, memoryd.Call(t.ID, t.Name, args))
	}
	for _, p := range m.Parts {
		switch {
		case p.TextHex != nil:
			text, err := unhexed(*p.TextHex)
			if err != nil {
				return nil, err
			}
			pm.Parts = append(pm.Parts, memoryd.TextPart(text))
		case p.Image != nil:
			r, err := p.Image.ref()
			if err != nil {
				return nil, err
			}
			pm.Parts = append(pm.Parts, memoryd.ImagePart(r))
		case p.File != nil:
			r, err := p.File.ref()
			if err != nil {
				return nil, err
			}
			pm.Parts = append(pm.Parts, memoryd.FilePart(r))
		}
	}
	if pm.Extra, err = unhexed(m.ExtraHex); err != nil {
		return nil, err
	}
	return pm, nil
}

func (r refJSON) ref(memory string) memoryd.Ref {
	if r.Agent != nil {
		return memoryd.AgentRef(memory, memoryd.Agent{ID: r.Agent.ID, Context: r.Agent.Context})
	}
	return memoryd.KeyRef(memory, *r.Key)
}

func message(m *pb.Message) obj {
	var priority interface{}
	if m.Priority != nil {
		priority = *m.Priority
	}
	md := obj{}
	keys := make([]string, 0, len(m.GetMetadata()))
	for k := range m.GetMetadata() {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		md[k] = m.GetMetadata()[k]
	}
	calls := []obj{}
	for _, t := range m.GetToolCalls() {
		calls = append(calls, obj{"id": t.GetId(), "name": t.GetName(), "arguments_hex": hexed(t.GetArguments())})
	}
	parts := []obj{}
	for _, p := range m.GetParts() {
		parts = append(parts, part(p))
	}
	var created interface{}
	if ts := m.GetCreatedAt(); ts != nil {
		created = fmt.Sprintf("%d.%09d", ts.GetSeconds(), ts.GetNanos())
	}
	return obj{
		"seq": dec(m.GetSeq()), "id": m.GetId(), "role": int32(m.GetRole()),
		"content_hex": hex.EncodeToString([]byte(m.GetContent())), "content_type": m.GetContentType(),
		"metadata": md, "priority": priority, "token_count": m.GetTokenCount(), "kind": int32(m.GetKind()),
		"effective_priority": m.GetEffectivePriority(), "created_at": created,
		"tool_calls": calls, "tool_call_id": m.GetToolCallId(), "name": m.GetName(), "parts": parts,
		"extra_hex": hexed(m.GetExtra()),
	}
}

func messages(ms []*pb.Message) []obj {
	out := make([]obj, len(ms))
	for i, m := range ms {
		out[i] = message(m)
	}
	return out
}

func handle(ctx context.Context, c *memoryd.Client, cmd command, out func(obj)) error {
	switch cmd.Op {
	case "append":
		var batch []*pb.Message
		for _, m := range cmd.Messages {
			pm, err := m.build()
			if err != nil {
				return err
			}
			batch = append(batch, pm)
		}
		var opts []memoryd.AppendOption
		if cmd.IdempotencyKey != "" {
			opts = append(opts, memoryd.WithIdempotencyKey(cmd.IdempotencyKey))
		}
		r, err := c.Append(ctx, cmd.Ref.ref(cmd.Memory), batch, opts...)
		if err != nil {
			return err
		}
		var results []obj
		for _, x := range r.GetResults() {
			results = append(results, obj{"seq": dec(x.GetSeq()), "id": x.GetId(), "token_count": x.GetTokenCount(),
				"persisted": x.GetPersisted(), "effective_priority": x.GetEffectivePriority()})
		}
		out(obj{"ok": obj{"results": results, "replayed": r.GetReplayed()}})
	case "read":
		view := memoryd.ViewRaw
		if cmd.View == "context" {
			view = memoryd.ViewContext
		}
		ms, err := c.ReadAll(ctx, cmd.Ref.ref(cmd.Memory), memoryd.ReadOptions{View: view, AfterSeq: cmd.AfterSeq,
			Limit: cmd.Limit, MaxTokens: cmd.MaxTokens, ChunkSize: cmd.ChunkSize})
		if err != nil {
			return err
		}
		out(obj{"ok": obj{"messages": messages(ms)}})
	case "append_openai":
		batch, err := memoryd.FromOpenAIJSON([]byte(cmd.MessagesJSON))
		if err != nil {
			return err
		}
		r, err := c.Append(ctx, cmd.Ref.ref(cmd.Memory), batch)
		if err != nil {
			return err
		}
		results := []obj{}
		for _, x := range r.GetResults() {
			results = append(results, obj{"seq": dec(x.GetSeq()), "id": x.GetId(), "token_count": x.GetTokenCount()})
		}
		out(obj{"ok": obj{"results": results, "replayed": r.GetReplayed()}})
	case "read_openai":
		view := memoryd.ViewContext
		if cmd.View == "raw" {
			view = memoryd.ViewRaw
		}
		ms, err := c.ReadAll(ctx, cmd.Ref.ref(cmd.Memory), memoryd.ReadOptions{View: view, MaxTokens: cmd.MaxTokens})
		if err != nil {
			return err
		}
		b, err := json.Marshal(memoryd.ToOpenAI(ms))
		if err != nil {
			return err
		}
		out(obj{"ok": obj{"messages_json": string(b)}})
	case "stats":
		s, err := c.Stats(ctx, cmd.Ref.ref(cmd.Memory))
		if err != nil {
			return err
		}
		out(obj{"ok": obj{"instance_id": s.GetInstanceId(), "message_count": dec(s.GetMessageCount()),
			"token_count": dec(s.GetTokenCount()), "last_seq": dec(s.GetLastSeq())}})
	case "clear":
		n, err := c.Clear(ctx, cmd.Ref.ref(cmd.Memory))
		if err != nil {
			return err
		}
		out(obj{"ok": obj{"removed": dec(n)}})
	case "resolve":
		r, err := c.ResolveAgent(ctx, memoryd.Agent{ID: cmd.Agent.ID, Context: cmd.Agent.Context})
		if err != nil {
			return err
		}
		refs := []obj{}
		for _, x := range r.GetReferences() {
			refs = append(refs, obj{"memory_id": x.GetMemoryId(), "mode": int32(x.GetMode()),
				"key_template": x.GetKeyTemplate(), "key": x.GetKey(), "instance_id": x.GetInstanceId()})
		}
		out(obj{"ok": obj{"level": int32(r.GetLevel()), "references": refs}})
	case "watch":
		w := c.Watch(ctx, cmd.Ref.ref(cmd.Memory), cmd.AfterSeq)
		defer w.Close()
		for seen := 0; seen < cmd.Count; {
			ev, err := w.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				return err
			}
			switch {
			case ev.GetAppended() != nil:
				out(obj{"event": "appended", "messages": messages(ev.GetAppended().GetMessages())})
				seen += len(ev.GetAppended().GetMessages())
			case ev.GetFlushed() != nil:
				var removed []string
				for _, s := range ev.GetFlushed().GetRemovedSeqs() {
					removed = append(removed, dec(s))
				}
				out(obj{"event": "flushed", "removed_seqs": removed})
			default:
				out(obj{"event": "cleared"})
			}
		}
		out(obj{"done": true})
	default:
		return fmt.Errorf("unknown op %q", cmd.Op)
	}
	return nil
}

// sentinels names the errors.Is kind of an error, the Go counterpart of the other clients' classes.
var sentinels = []struct {
	name string
	err  error
}{
	{"ErrInvalidArgument", memoryd.ErrInvalidArgument}, {"ErrNotFound", memoryd.ErrNotFound},
	{"ErrPermissionDenied", memoryd.ErrPermissionDenied}, {"ErrUnauthenticated", memoryd.ErrUnauthenticated},
	{"ErrResourceExhausted", memoryd.ErrResourceExhausted}, {"ErrUnavailable", memoryd.ErrUnavailable},
	{"ErrAborted", memoryd.ErrAborted}, {"ErrDeadlineExceeded", memoryd.ErrDeadlineExceeded},
	{"ErrUnimplemented", memoryd.ErrUnimplemented}, {"ErrCanceled", memoryd.ErrCanceled},
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: interopdriver ADDRESS")
		os.Exit(2)
	}
	c, err := memoryd.Dial(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer c.Close()
	enc := json.NewEncoder(os.Stdout)
	enc.SetEscapeHTML(false)
	out := func(o obj) {
		if err := enc.Encode(o); err != nil {
			panic(err)
		}
	}
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 64<<20)
	for in.Scan() {
		if len(in.Bytes()) == 0 {
			continue
		}
		var cmd command
		if err := json.Unmarshal(in.Bytes(), &cmd); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		err := handle(context.Background(), c, cmd, out)
		var e *memoryd.Error
		if errors.As(err, &e) {
			kind := ""
			for _, s := range sentinels {
				if errors.Is(err, s.err) {
					kind = s.name
				}
			}
			out(obj{"error": obj{"code": int(e.Code), "name": e.CodeName(), "details": e.Details, "kind": kind}})
		} else if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
}
