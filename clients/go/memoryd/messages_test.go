package memoryd_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"testing"

	"github.com/memoryd/memoryd/clients/go/memoryd"
	pb "github.com/memoryd/memoryd/clients/go/memorydv1"
	"google.golang.org/protobuf/proto"
)

// conversation is the OpenAI conversation shared with the Node test and tests/interop:
// parallel calls, a pending call, parts, a name and provider fields kept in extra.
func conversation(t *testing.T) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot(t), "tests", "interop", "openai_conversation.json"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// stored is what the daemon returns for appended messages: the same fields plus server-set ones.
func stored(ms []*pb.Message) []*pb.Message {
	out := make([]*pb.Message, len(ms))
	for i, m := range ms {
		c := proto.Clone(m).(*pb.Message)
		c.Seq, c.Id, c.Kind = uint64(i+1), fmt.Sprintf("id-%d", i+1), pb.MessageKind_MESSAGE_KIND_MESSAGE
		out[i] = c
	}
	return out
}

// sameJSON fails unless got marshals to the same JSON value as want (key order aside).
func sameJSON(t *testing.T, got interface{}, want []byte) {
	t.Helper()
	b, err := json.Marshal(got)
	if err != nil {
		t.Fatal(err)
	}
	var g, w interface{}
	if err := json.Unmarshal(b, &g); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(want, &w); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(g, w) {
		t.Fatalf("got  %s\nwant %s", b, want)
	}
}

func TestOpenAIRoundTrip(t *testing.T) {
	conv := conversation(t)
	ms, err := memoryd.FromOpenAIJSON(conv)
	if err != nil {
		t.Fatal(err)
	}
	sameJSON(t, memoryd.ToOpenAI(stored(ms)), conv)
	if ms[1].GetContent() != "" || len(ms[1].GetParts()) != 3 || ms[1].GetParts()[1].GetImage().GetDetail() != "low" {
		t.Fatalf("array content not stored as parts: %v", ms[1])
	}
	if ms[0].GetRole() != pb.Role_ROLE_DEVELOPER || ms[3].GetToolCallId() != "call_1" ||
		ms[2].GetToolCalls()[1].GetArguments() != `{"id":"A-48213","tz":"Europe/Paris"}` {
		t.Fatalf("fields lost: %v", ms[:4])
	}
	if ms[5].GetExtra() != `{"audio":{"id":"aud_1"},"refusal":"none"}` {
		t.Fatalf("extra %q", ms[5].GetExtra())
	}
	// The SDK's nulls are not provider data (an empty list is kept, as Python does).
	m, err := memoryd.FromOpenAI(map[string]interface{}{"role": "assistant", "content": "hi", "refusal": nil,
		"audio": nil, "annotations": []interface{}{}})
	if err != nil || m.GetExtra() != `{"annotations":[]}` {
		t.Fatalf("%v %v", m, err)
	}
	// file_data (a data: URL or bare base64) becomes the part's bytes and MIME type.
	files, err := memoryd.FromOpenAIJSON([]byte(`[{"role": "user", "content": [
	  {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERg==", "filename": "a.pdf"}},
	  {"type": "file", "file": {"file_data": "JVBERg=="}}]}]`))
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []string{"application/pdf", ""} {
		f := files[0].GetParts()[i].GetFile()
		if string(f.GetData()) != "%PDF" || f.GetMimeType() != want || f.GetUrl() != "" {
			t.Fatalf("part %d: %v", i, f)
		}
	}
}

func TestToOpenAIGroupsResultsAfterTheirCall(t *testing.T) {
	summary := &pb.Message{Role: pb.Role_ROLE_SYSTEM, Content: "Earlier: A-1.", Kind: pb.MessageKind_MESSAGE_KIND_SUMMARY}
	named := memoryd.ToolResult("b", "B")
	named.Name, named.Extra = "f", `{"cached": true}`
	parts := &pb.Message{Role: pb.Role_ROLE_TOOL, ToolCallId: "a", Parts: []*pb.ContentPart{memoryd.TextPart("A"),
		memoryd.ImagePart(&pb.MediaRef{Url: "https://x/a.png"}), memoryd.FilePart(&pb.MediaRef{FileId: "file-1"})}}
	ms := []*pb.Message{
		summary,
		memoryd.ToolResult("a", "before its call: left out"),
		memoryd.AssistantCalls("", memoryd.Call("b", "f", "1"), memoryd.Call("a", "g", "2")),
		memoryd.User("meanwhile"),
		parts,
		memoryd.ToolResult("orphan", "its call is gone"),
		named,
		memoryd.ToolResult("b", "a second result: left out"),
		memoryd.AssistantCalls("", memoryd.Call("lost", "h", "{}")),
		memoryd.User("the agent stopped mid-call"),
		memoryd.AssistantCalls("pending", memoryd.Call("p", "h", "{}")),
	}
	sameJSON(t, memoryd.ToOpenAI(ms), []byte(`[
	  {"role": "system", "content": "Earlier: A-1."},
	  {"role": "assistant", "content": null, "tool_calls": [
	    {"id": "b", "type": "function", "function": {"name": "f", "arguments": "1"}},
	    {"id": "a", "type": "function", "function": {"name": "g", "arguments": "2"}}]},
	  {"role": "tool", "tool_call_id": "b", "content": "B", "cached": true},
	  {"role": "tool", "tool_call_id": "a", "content": "A\n[image: https://x/a.png]\n[file: file-1]"},
	  {"role": "user", "content": "meanwhile"},
	  {"role": "assistant", "content": null, "tool_calls": [{"id": "lost", "type": "function", "function": {"name": "h", "arguments": "{}"}}]},
	  {"role": "tool", "tool_call_id": "lost", "content": "[no result recorded]"},
	  {"role": "user", "content": "the agent stopped mid-call"},
	  {"role": "assistant", "content": "pending", "tool_calls": [
	    {"id": "p", "type": "function", "function": {"name": "h", "arguments": "{}"}}]}]`))
}

func TestToOpenAIMediaAndExtra(t *testing.T) {
	m := &pb.Message{Role: pb.Role_ROLE_USER, Parts: []*pb.ContentPart{
		memoryd.ImagePart(&pb.MediaRef{Data: []byte("png!"), MimeType: "image/png", Width: 10, Height: 20}),
		memoryd.FilePart(&pb.MediaRef{Data: []byte("%PDF"), MimeType: "application/pdf", Filename: "a.pdf"}),
		memoryd.FilePart(&pb.MediaRef{Url: "data:application/pdf;base64,JVBERg=="}),
		memoryd.ImagePart(&pb.MediaRef{FileId: "file-img"}),
		memoryd.TextPart(""),
	}, Extra: `{"role": "system", "content": "no", "cache": {"ttl": 5}}`}
	out := memoryd.ToOpenAI([]*pb.Message{m})
	sameJSON(t, out, []byte(`[{"role": "user", "cache": {"ttl": 5}, "content": [
	  {"type": "image_url", "image_url": {"url": "data:image/png;base64,cG5nIQ=="}},
	  {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERg==", "filename": "a.pdf"}},
	  {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERg=="}},
	  {"type": "file", "file": {"file_id": "file-img"}},
	  {"type": "text", "text": ""}]}]`))
	b, _ := json.Marshal(out[0])
	if !bytes.HasPrefix(b, []byte(`{"role":"user","content":[`)) || !bytes.HasSuffix(b, []byte(`,"cache":{"ttl":5}}`)) {
		t.Fatalf("marshalled as %s", b)
	}
}

func TestBadMessagesAreRefusedNamingTheField(t *testing.T) {
	cases := []struct {
		json string
		why  string
	}{
		{`[{"role":"user","content":[{"type":"input_audio","input_audio":{"data":"","format":"wav"}}]}]`,
			`messages\[0\]\.content\[0\]\.type: unknown content part type "input_audio"`},
		{`[{"role":"user","content":[{"type":"text","text":"a"},{"kind":"text"}]}]`, `messages\[0\]\.content\[1\]\.type: unknown content part type null`},
		{`[{"role":"user","content":[{"type":"text","text":3}]}]`, `content\[0\]\.text: must be a string`},
		{`[{"role":"user","content":{"type":"text"}}]`, `messages\[0\]\.content: must be a string, null or an array`},
		{`[{"role":"user","content":[{"type":"image_url","image_url":{"url":""}}]}]`, `image_url\.url: must not be empty`},
		{`[{"role":"user","content":[{"type":"image_url","image_url":{"url":"u","detail":"max"}}]}]`, `parts\[0\]\.image\.detail: must be`},
		{`[{"role":"user","content":[{"type":"file","file":{"filename":"a.pdf"}}]}]`, `content\[0\]\.file: needs file_id or file_data`},
		{`[{"role":"user","content":[{"type":"file","file":{"file_data":"data:application/pdf;base64,%%%"}}]}]`,
			`content\[0\]\.file\.file_data: is not base64`},
		{`[{"role":"assistant","tool_calls":[{"id":"c","type":"custom","custom":{}}]}]`, `tool_calls\[0\]\.type: must be "function"`},
		{`[{"role":"assistant","tool_calls":[{"id":"","type":"function","function":{"name":"f","arguments":"{}"}}]}]`,
			`tool_calls\[0\]\.id: must not be empty`},
		{`[{"role":"assistant","tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":{}}}]}]`,
			`tool_calls\[0\]\.function\.arguments: must be a string`},
		{`[{"role":"assistant","tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{}"}},` +
			`{"id":"c","type":"function","function":{"name":"g","arguments":"{}"}}]}]`, `tool_calls\[1\]\.id: repeats the call id "c"`},
		{`[{"role":"tool","content":"r"}]`, `messages\[0\]\.tool_call_id: is required on tool messages`},
		{`[{"role":"user","tool_call_id":"c","content":"r"}]`, `messages\[0\]\.tool_call_id: only tool messages`},
		{`[{"role":"function","name":"f","content":"r"}]`, `messages\[0\]\.role: unknown role "function"`},
		{`[{"role":"user","content":"x","colour":"red"}]`, `messages\[0\]: unknown fields colour`},
		{`[{"role":"user","content":"x","name":7}]`, `messages\[0\]\.name: must be a string`},
	}
	for _, c := range cases {
		_, err := memoryd.FromOpenAIJSON([]byte(c.json))
		var e *memoryd.Error
		if !errors.As(err, &e) || !errors.Is(err, memoryd.ErrInvalidArgument) || !regexp.MustCompile(c.why).MatchString(e.Details) {
			t.Errorf("%s: got %v, want %s", c.json, err, c.why)
		}
	}
	native := []struct {
		m   *pb.Message
		why string
	}{
		{&pb.Message{Role: pb.Role_ROLE_USER, Content: "x", ToolCalls: []*pb.ToolCall{memoryd.Call("c", "f", "{}")}},
			`messages\[0\]\.tool_calls: only assistant`},
		{memoryd.AssistantCalls("", memoryd.Call("c", "", "{}")), `tool_calls\[0\]\.name: must not be empty`},
		{&pb.Message{Role: pb.Role_ROLE_USER, Content: "x", Parts: []*pb.ContentPart{memoryd.TextPart("y")}},
			`messages\[0\]\.content: must be empty when parts is set`},
		{&pb.Message{Role: pb.Role_ROLE_USER, Parts: []*pb.ContentPart{{}}}, `messages\[0\]\.parts\[0\]: must be a text, an image or a file`},
		{&pb.Message{Role: pb.Role_ROLE_USER, Parts: []*pb.ContentPart{memoryd.ImagePart(&pb.MediaRef{})}},
			`parts\[0\]\.image: needs a url`},
		{&pb.Message{Role: pb.Role_ROLE_USER, Content: "x", Extra: "[1]"}, `messages\[0\]\.extra: must be a JSON object text`},
		{&pb.Message{Role: pb.Role_ROLE_USER, Content: "x", Extra: `{"tool_calls": []}`}, `extra\.tool_calls: is a field memoryd models`},
		{&pb.Message{Role: pb.Role_ROLE_USER, Content: "half \xf0\x9f"}, `messages\[0\]\.content: is not valid UTF-8`},
		{memoryd.Tool("no call id"), `messages\[0\]\.tool_call_id: is required`},
	}
	for _, c := range native {
		err := memoryd.CheckMessage(0, c.m)
		var e *memoryd.Error
		if !errors.As(err, &e) || !regexp.MustCompile(c.why).MatchString(e.Details) {
			t.Errorf("%v: got %v, want %s", c.m, err, c.why)
		}
	}
}

// randomConversation is a seeded OpenAI conversation: groups with parallel calls (the newest
// maybe pending), parts, names, provider fields.
func randomConversation(seed int64) []map[string]interface{} {
	r := rand.New(rand.NewSource(seed))
	texts := []string{"hi", "héllo 🧠", "", `{"a": [1, 2]}`, "line\nbreak \"q\" \\ <&>", "記憶"}
	text := func() string { return texts[r.Intn(len(texts))] }
	var out []map[string]interface{}
	n, call := 1+r.Intn(12), 0
	for i := 0; i < n; i++ {
		switch r.Intn(5) {
		case 0:
			out = append(out, map[string]interface{}{"role": []string{"system", "developer"}[r.Intn(2)], "content": text()})
		case 1:
			m := map[string]interface{}{"role": "user", "content": text()}
			if r.Intn(2) == 0 {
				m["content"] = []interface{}{map[string]interface{}{"type": "text", "text": text()},
					map[string]interface{}{"type": "image_url", "image_url": map[string]interface{}{"url": fmt.Sprintf("https://x/%d.png", r.Intn(99))}}}
			}
			if r.Intn(3) == 0 {
				m["name"] = fmt.Sprintf("u%d", r.Intn(9))
			}
			out = append(out, m)
		case 2:
			m := map[string]interface{}{"role": "assistant", "content": "ok " + text()}
			if r.Intn(3) == 0 {
				m["refusal"] = text()
			}
			out = append(out, m)
		default:
			var calls []interface{}
			var ids []string
			for k := 0; k <= r.Intn(3); k++ {
				id := fmt.Sprintf("call_%d_%d", seed, call)
				call++
				args, _ := json.Marshal(map[string]interface{}{"q": text(), "n": r.Intn(1000)})
				calls = append(calls, map[string]interface{}{"id": id, "type": "function",
					"function": map[string]interface{}{"name": fmt.Sprintf("tool_%d", r.Intn(4)), "arguments": string(args)}})
				ids = append(ids, id)
			}
			var content interface{}
			if t := text(); r.Intn(2) == 0 && t != "" {
				content = t
			}
			out = append(out, map[string]interface{}{"role": "assistant", "content": content, "tool_calls": calls})
			if i == n-1 {
				ids = ids[:r.Intn(len(ids)+1)] // the newest group may be pending
			}
			for _, id := range ids {
				out = append(out, map[string]interface{}{"role": "tool", "tool_call_id": id, "content": text()})
			}
		}
	}
	return out
}

func TestOpenAIRoundTripSeeded(t *testing.T) {
	for seed := int64(1); seed <= 300; seed++ {
		conv, _ := json.Marshal(randomConversation(seed))
		ms, err := memoryd.FromOpenAIJSON(conv)
		if err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		sameJSON(t, memoryd.ToOpenAI(stored(ms)), conv)
	}
}

func TestOpenAIThroughTheDaemon(t *testing.T) {
	addr := startDaemon(t)
	c := dial(t, addr)
	ctx := context.Background()

	t.Run("stores an OpenAI conversation and reads it back as the same history", func(t *testing.T) {
		ref := memoryd.KeyRef("default", "go-openai")
		conv := conversation(t)
		ms, err := memoryd.FromOpenAIJSON(conv)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Append(ctx, ref, ms); err != nil {
			t.Fatal(err)
		}
		for _, view := range []memoryd.View{memoryd.ViewRaw, memoryd.ViewContext} {
			got, err := c.ReadAll(ctx, ref, memoryd.ReadOptions{View: view})
			if err != nil {
				t.Fatal(err)
			}
			sameJSON(t, memoryd.ToOpenAI(got), conv)
		}
	})

	t.Run("a bad message fails the batch before sending", func(t *testing.T) {
		ref := memoryd.KeyRef("default", "go-bad-message")
		_, err := c.Append(ctx, ref, []*pb.Message{memoryd.User("fine"), memoryd.Tool("no call id")})
		if !errors.Is(err, memoryd.ErrInvalidArgument) {
			t.Fatalf("got %v", err)
		}
		if s, err := c.Stats(ctx, ref); err != nil || s.GetMessageCount() != 0 {
			t.Fatalf("stats %v %v", s, err)
		}
	})

	t.Run("the daemon refuses a result whose call is not in the instance", func(t *testing.T) {
		_, err := c.Append(ctx, memoryd.KeyRef("default", "go-no-call"), []*pb.Message{memoryd.ToolResult("call_nowhere", "r")})
		var e *memoryd.Error
		if !errors.As(err, &e) || !errors.Is(err, memoryd.ErrInvalidArgument) || !regexp.MustCompile(`tool_call_id`).MatchString(e.Details) ||
			regexp.MustCompile(`refused by the client`).MatchString(e.Details) {
			t.Fatalf("got %v", err)
		}
	})
}
