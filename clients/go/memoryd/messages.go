package memoryd

// Tool calls, content parts, name and extra: builders, the client-side checks Append runs,
// FromOpenAI (an OpenAI Chat Completions message as decoded JSON) and ToOpenAI (messages read
// back as an OpenAI Chat history). The conversion rules are shared with the Python client's
// to_openai and the Node client's toOpenAI.

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"unicode/utf8"

	pb "github.com/memoryd/memoryd/clients/go/memorydv1"
	"google.golang.org/grpc/codes"
)

// Developer builds a developer message (OpenAI's successor to system; treated as system).
func Developer(content string) *pb.Message {
	return &pb.Message{Role: pb.Role_ROLE_DEVELOPER, Content: content}
}

// Call is one tool call: its id, the tool's name and the arguments as the model wrote them.
func Call(id, name, arguments string) *pb.ToolCall {
	return &pb.ToolCall{Id: id, Name: name, Arguments: arguments}
}

// AssistantCalls builds an assistant turn that calls tools ("" content: no text).
func AssistantCalls(content string, calls ...*pb.ToolCall) *pb.Message {
	return &pb.Message{Role: pb.Role_ROLE_ASSISTANT, Content: content, ToolCalls: calls}
}

// ToolResult builds the tool message that answers the call callID.
func ToolResult(callID, content string) *pb.Message {
	return &pb.Message{Role: pb.Role_ROLE_TOOL, ToolCallId: callID, Content: content}
}

// TextPart, ImagePart and FilePart build content parts (set Message.Parts, leave Content empty).
func TextPart(text string) *pb.ContentPart {
	return &pb.ContentPart{Part: &pb.ContentPart_Text{Text: text}}
}
func ImagePart(ref *pb.MediaRef) *pb.ContentPart {
	return &pb.ContentPart{Part: &pb.ContentPart_Image{Image: ref}}
}
func FilePart(ref *pb.MediaRef) *pb.ContentPart {
	return &pb.ContentPart{Part: &pb.ContentPart_File{File: ref}}
}

func invalid(field, format string, args ...interface{}) *Error {
	return &Error{Code: codes.InvalidArgument,
		Details: field + ": " + fmt.Sprintf(format, args...) + " (refused by the client, not sent)"}
}

// modelled are the keys of an OpenAI message that memoryd produces itself; extra must not carry them.
var modelled = map[string]bool{"role": true, "content": true, "name": true, "tool_calls": true, "tool_call_id": true}

var details = map[string]bool{"": true, "auto": true, "low": true, "high": true}

func checkUTF8(field, s string) error {
	if !utf8.ValidString(s) {
		return invalid(field, "is not valid UTF-8")
	}
	return nil
}

func checkMedia(field string, r *pb.MediaRef) error {
	if r == nil || (r.GetUrl() == "" && r.GetFileId() == "" && len(r.GetData()) == 0) {
		return invalid(field, "needs a url, a file_id or data")
	}
	if !details[r.GetDetail()] {
		return invalid(field+".detail", "must be \"auto\", \"low\" or \"high\", got %q", r.GetDetail())
	}
	for name, s := range map[string]string{"url": r.GetUrl(), "file_id": r.GetFileId(), "mime_type": r.GetMimeType(),
		"filename": r.GetFilename()} {
		if err := checkUTF8(field+"."+name, s); err != nil {
			return err
		}
	}
	return nil
}

// extraObject parses extra, which must be a JSON object text without keys memoryd models.
func extraObject(field, extra string) (map[string]json.RawMessage, error) {
	if extra == "" {
		return nil, nil
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal([]byte(extra), &obj); err != nil || obj == nil {
		return nil, invalid(field, "must be a JSON object text")
	}
	for k := range obj {
		if modelled[k] {
			return nil, invalid(field+"."+k, "is a field memoryd models itself; set it on the message")
		}
	}
	return obj, nil
}

// CheckMessage checks one message to append the way the other clients do (Append runs it on
// every message, so a batch with a bad message sends nothing): strings are valid UTF-8, a tool
// message names the call it answers, only an assistant message calls tools, call ids are set
// and unique, a part is text, an image or a file, content is empty when parts are set, and extra
// is a JSON object text. i is the message's index in its batch, used in the error.
func CheckMessage(i int, m *pb.Message) error {
	at := fmt.Sprintf("messages[%d]", i)
	if m == nil {
		return invalid(at, "is nil")
	}
	switch m.GetRole() {
	case pb.Role_ROLE_SYSTEM, pb.Role_ROLE_USER, pb.Role_ROLE_ASSISTANT, pb.Role_ROLE_TOOL, pb.Role_ROLE_DEVELOPER:
	default:
		return invalid(at+".role", "unknown role %v", m.GetRole())
	}
	for name, s := range map[string]string{"content": m.GetContent(), "content_type": m.GetContentType(),
		"name": m.GetName(), "tool_call_id": m.GetToolCallId()} {
		if err := checkUTF8(at+"."+name, s); err != nil {
			return err
		}
	}
	seen := map[string]bool{}
	for j, c := range m.GetToolCalls() {
		f := fmt.Sprintf("%s.tool_calls[%d]", at, j)
		switch {
		case c == nil:
			return invalid(f, "is nil")
		case c.GetId() == "":
			return invalid(f+".id", "must not be empty")
		case seen[c.GetId()]:
			return invalid(f+".id", "repeats the call id %q", c.GetId())
		case c.GetName() == "":
			return invalid(f+".name", "must not be empty")
		}
		seen[c.GetId()] = true
		for name, s := range map[string]string{"id": c.GetId(), "name": c.GetName(), "arguments": c.GetArguments()} {
			if err := checkUTF8(f+"."+name, s); err != nil {
				return err
			}
		}
	}
	if len(m.GetToolCalls()) > 0 && m.GetRole() != pb.Role_ROLE_ASSISTANT {
		return invalid(at+".tool_calls", "only assistant messages call tools")
	}
	if m.GetRole() == pb.Role_ROLE_TOOL && m.GetToolCallId() == "" {
		return invalid(at+".tool_call_id", "is required on tool messages (the id of the call this result answers)")
	}
	if m.GetRole() != pb.Role_ROLE_TOOL && m.GetToolCallId() != "" {
		return invalid(at+".tool_call_id", "only tool messages answer a call")
	}
	if len(m.GetParts()) > 0 && m.GetContent() != "" {
		return invalid(at+".content", "must be empty when parts is set")
	}
	for j, p := range m.GetParts() {
		f := fmt.Sprintf("%s.parts[%d]", at, j)
		var err error
		switch part := p.GetPart().(type) {
		case *pb.ContentPart_Text:
			err = checkUTF8(f+".text", part.Text)
		case *pb.ContentPart_Image:
			err = checkMedia(f+".image", part.Image)
		case *pb.ContentPart_File:
			err = checkMedia(f+".file", part.File)
		default:
			err = invalid(f, "must be a text, an image or a file part")
		}
		if err != nil {
			return err
		}
	}
	if err := checkUTF8(at+".extra", m.GetExtra()); err != nil {
		return err
	}
	_, err := extraObject(at+".extra", m.GetExtra())
	return err
}

var openAIRoles = map[string]pb.Role{"system": pb.Role_ROLE_SYSTEM, "developer": pb.Role_ROLE_DEVELOPER,
	"user": pb.Role_ROLE_USER, "assistant": pb.Role_ROLE_ASSISTANT, "tool": pb.Role_ROLE_TOOL}

// openAIExtra are OpenAI message fields memoryd does not model: kept in extra unless null
// (as the Python client does), so ToOpenAI gives them back.
var openAIExtra = []string{"refusal", "audio", "annotations", "function_call"}

func str(field string, v interface{}, required bool) (string, error) {
	if v == nil {
		if required {
			return "", invalid(field, "is required")
		}
		return "", nil
	}
	s, ok := v.(string)
	if !ok {
		return "", invalid(field, "must be a string, got %T", v)
	}
	return s, nil
}

func object(field string, v interface{}) (map[string]interface{}, error) {
	o, ok := v.(map[string]interface{})
	if !ok {
		return nil, invalid(field, "must be an object, got %T", v)
	}
	return o, nil
}

func onlyKeys(field string, o map[string]interface{}, allowed ...string) error {
	var unknown []string
	for k := range o {
		ok := false
		for _, a := range allowed {
			ok = ok || k == a
		}
		if !ok {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return invalid(field, "unknown fields %s", strings.Join(unknown, ", "))
	}
	return nil
}

func openAIPart(field string, v interface{}) (*pb.ContentPart, error) {
	p, err := object(field, v)
	if err != nil {
		return nil, err
	}
	switch p["type"] {
	case "text":
		if err := onlyKeys(field, p, "type", "text"); err != nil {
			return nil, err
		}
		t, err := str(field+".text", p["text"], true)
		return TextPart(t), err
	case "image_url":
		if err := onlyKeys(field, p, "type", "image_url"); err != nil {
			return nil, err
		}
		iu, err := object(field+".image_url", p["image_url"])
		if err != nil {
			return nil, err
		}
		if err := onlyKeys(field+".image_url", iu, "url", "detail"); err != nil {
			return nil, err
		}
		url, err := str(field+".image_url.url", iu["url"], true)
		if err != nil {
			return nil, err
		}
		if url == "" {
			return nil, invalid(field+".image_url.url", "must not be empty")
		}
		detail, err := str(field+".image_url.detail", iu["detail"], false)
		if err != nil {
			return nil, err
		}
		return ImagePart(&pb.MediaRef{Url: url, Detail: detail}), nil
	case "file":
		if err := onlyKeys(field, p, "type", "file"); err != nil {
			return nil, err
		}
		f, err := object(field+".file", p["file"])
		if err != nil {
			return nil, err
		}
		if err := onlyKeys(field+".file", f, "file_id", "file_data", "filename"); err != nil {
			return nil, err
		}
		ref := &pb.MediaRef{}
		var fileData string
		for key, dst := range map[string]*string{"file_id": &ref.FileId, "file_data": &fileData, "filename": &ref.Filename} {
			if *dst, err = str(field+".file."+key, f[key], false); err != nil {
				return nil, err
			}
		}
		if ref.FileId == "" && fileData == "" {
			return nil, invalid(field+".file", "needs file_id or file_data")
		}
		if fileData != "" {
			if ref.Data, ref.MimeType, err = decodeFileData(field+".file.file_data", fileData); err != nil {
				return nil, err
			}
		}
		return FilePart(ref), nil
	default:
		return nil, invalid(field+".type",
			"unknown content part type %v (memoryd stores \"text\", \"image_url\" and \"file\" parts)", jsonText(p["type"]))
	}
}

// decodeFileData reads OpenAI's file_data: base64, or a data:<mime>;base64,... URL -> bytes and
// MIME type (as the Python and Node clients do).
func decodeFileData(field, text string) ([]byte, string, error) {
	mime, b64 := "", text
	if strings.HasPrefix(text, "data:") {
		header, rest, _ := strings.Cut(text, ",")
		mime, _, _ = strings.Cut(header[len("data:"):], ";")
		b64 = rest
	}
	data, err := base64.StdEncoding.Strict().DecodeString(b64)
	if err != nil || strings.ContainsAny(b64, "\r\n") {
		return nil, "", invalid(field, "is not base64 (nor a data: URL holding base64)")
	}
	return data, mime, nil
}

func jsonText(v interface{}) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func openAIMessage(at string, m map[string]interface{}) (*pb.Message, error) {
	allowed := append([]string{"role", "content", "name", "tool_calls", "tool_call_id"}, openAIExtra...)
	if err := onlyKeys(at, m, allowed...); err != nil {
		return nil, err
	}
	roleName, err := str(at+".role", m["role"], true)
	if err != nil {
		return nil, err
	}
	role, ok := openAIRoles[roleName]
	if !ok {
		return nil, invalid(at+".role", "unknown role %q", roleName)
	}
	out := &pb.Message{Role: role}
	switch c := m["content"].(type) {
	case nil:
	case string:
		out.Content = c
	case []interface{}:
		for j, p := range c {
			part, err := openAIPart(fmt.Sprintf("%s.content[%d]", at, j), p)
			if err != nil {
				return nil, err
			}
			out.Parts = append(out.Parts, part)
		}
	default:
		return nil, invalid(at+".content", "must be a string, null or an array of content parts, got %T", c)
	}
	if out.Name, err = str(at+".name", m["name"], false); err != nil {
		return nil, err
	}
	if out.ToolCallId, err = str(at+".tool_call_id", m["tool_call_id"], false); err != nil {
		return nil, err
	}
	if m["tool_calls"] != nil {
		calls, ok := m["tool_calls"].([]interface{})
		if !ok {
			return nil, invalid(at+".tool_calls", "must be an array of tool calls")
		}
		for j, v := range calls {
			f := fmt.Sprintf("%s.tool_calls[%d]", at, j)
			tc, err := object(f, v)
			if err != nil {
				return nil, err
			}
			if t, given := tc["type"]; given && t != "function" {
				return nil, invalid(f+".type", "must be \"function\" (memoryd stores function calls), got %s", jsonText(tc["type"]))
			}
			if err := onlyKeys(f, tc, "id", "type", "function"); err != nil {
				return nil, err
			}
			fn, err := object(f+".function", tc["function"])
			if err != nil {
				return nil, err
			}
			if err := onlyKeys(f+".function", fn, "name", "arguments"); err != nil {
				return nil, err
			}
			call := &pb.ToolCall{}
			if call.Id, err = str(f+".id", tc["id"], true); err != nil {
				return nil, err
			}
			if call.Name, err = str(f+".function.name", fn["name"], true); err != nil {
				return nil, err
			}
			if call.Arguments, err = str(f+".function.arguments", fn["arguments"], true); err != nil {
				return nil, err
			}
			out.ToolCalls = append(out.ToolCalls, call)
		}
	}
	extra := map[string]interface{}{}
	for _, k := range openAIExtra {
		v := m[k]
		if v == nil {
			continue
		}
		extra[k] = v
	}
	if len(extra) > 0 {
		b, err := json.Marshal(extra)
		if err != nil {
			return nil, invalid(at, "provider fields are not serialisable as JSON: %v", err)
		}
		out.Extra = string(b)
	}
	return out, nil
}

// FromOpenAI converts one OpenAI Chat Completions message, as encoding/json decodes it into a
// map (content a string, null or a list of parts; tool_calls with type "function"), into a
// message to append. refusal, audio, annotations and function_call, unless null, are kept in
// extra; a file part's file_data is decoded into the part's Data and MimeType.
// An unknown field, role or part type is refused with ErrInvalidArgument naming it.
func FromOpenAI(m map[string]interface{}) (*pb.Message, error) {
	msg, err := openAIMessage("message", m)
	if err != nil {
		return nil, err
	}
	return msg, CheckMessage(0, msg)
}

// FromOpenAIJSON converts a JSON array of OpenAI Chat Completions messages (e.g. the marshalled
// history of an OpenAI SDK) into messages to append. Numbers in provider fields keep their text.
func FromOpenAIJSON(data []byte) ([]*pb.Message, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var raw []interface{}
	if err := dec.Decode(&raw); err != nil {
		return nil, invalid("messages", "must be a JSON array of OpenAI messages: %v", err)
	}
	out := make([]*pb.Message, len(raw))
	for i, v := range raw {
		at := fmt.Sprintf("messages[%d]", i)
		o, err := object(at, v)
		if err != nil {
			return nil, err
		}
		if out[i], err = openAIMessage(at, o); err != nil {
			return nil, err
		}
		if err := CheckMessage(i, out[i]); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// OpenAIToolCall is a tool call as OpenAI Chat Completions writes it.
type OpenAIToolCall struct {
	ID       string         `json:"id"`
	Type     string         `json:"type"`
	Function OpenAIFunction `json:"function"`
}

// OpenAIFunction is the called function of an OpenAIToolCall.
type OpenAIFunction struct {
	Name      string `json:"name"`
	Arguments string `json:"arguments"`
}

// OpenAIPart is one OpenAI content part: "text", "image_url" or "file".
type OpenAIPart struct {
	Type     string          `json:"type"`
	Text     *string         `json:"text,omitempty"`
	ImageURL *OpenAIImageURL `json:"image_url,omitempty"`
	File     *OpenAIFile     `json:"file,omitempty"`
}

// OpenAIImageURL is the image of an "image_url" part.
type OpenAIImageURL struct {
	URL    string `json:"url"`
	Detail string `json:"detail,omitempty"`
}

// OpenAIFile is the file of a "file" part: by id or inline data (a data: URL).
type OpenAIFile struct {
	FileID   string `json:"file_id,omitempty"`
	FileData string `json:"file_data,omitempty"`
	Filename string `json:"filename,omitempty"`
}

// OpenAIMessage is one OpenAI Chat Completions message as ToOpenAI returns it; json.Marshal
// gives the exact OpenAI JSON: content is a string, null (Content nil and no Parts) or the
// list of Parts, and the keys of Extra follow memoryd's own.
type OpenAIMessage struct {
	Role       string
	Content    *string
	Parts      []OpenAIPart
	Name       string
	ToolCalls  []OpenAIToolCall
	ToolCallID string
	Extra      map[string]json.RawMessage
}

// MarshalJSON writes role, content, name, tool_calls, tool_call_id (those set), then the keys of
// Extra it has not written, sorted.
func (m OpenAIMessage) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	field := func(key string, v interface{}) error {
		if b.Len() > 0 {
			b.WriteByte(',')
		} else {
			b.WriteByte('{')
		}
		k, _ := json.Marshal(key)
		val, err := json.Marshal(v)
		if err != nil {
			return err
		}
		b.Write(k)
		b.WriteByte(':')
		b.Write(val)
		return nil
	}
	var content interface{} = m.Content
	if m.Parts != nil {
		content = m.Parts
	}
	if err := field("role", m.Role); err != nil {
		return nil, err
	}
	if err := field("content", content); err != nil {
		return nil, err
	}
	if m.Name != "" {
		if err := field("name", m.Name); err != nil {
			return nil, err
		}
	}
	if len(m.ToolCalls) > 0 {
		if err := field("tool_calls", m.ToolCalls); err != nil {
			return nil, err
		}
	}
	if m.ToolCallID != "" {
		if err := field("tool_call_id", m.ToolCallID); err != nil {
			return nil, err
		}
	}
	written := map[string]bool{"role": true, "content": true, "name": m.Name != "", "tool_calls": len(m.ToolCalls) > 0,
		"tool_call_id": m.ToolCallID != ""}
	keys := make([]string, 0, len(m.Extra))
	for k := range m.Extra {
		if !written[k] {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		if err := field(k, m.Extra[k]); err != nil {
			return nil, err
		}
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

func dataURL(r *pb.MediaRef) string {
	mime := r.GetMimeType()
	if mime == "" {
		mime = "application/octet-stream"
	}
	return "data:" + mime + ";base64," + base64.StdEncoding.EncodeToString(r.GetData())
}

func partToOpenAI(p *pb.ContentPart) OpenAIPart {
	switch part := p.GetPart().(type) {
	case *pb.ContentPart_Text:
		t := part.Text
		return OpenAIPart{Type: "text", Text: &t}
	case *pb.ContentPart_Image:
		img := part.Image
		if img.GetUrl() == "" && len(img.GetData()) == 0 && img.GetFileId() != "" {
			return OpenAIPart{Type: "file", File: &OpenAIFile{FileID: img.GetFileId()}}
		}
		url := img.GetUrl()
		if url == "" {
			url = dataURL(img)
		}
		return OpenAIPart{Type: "image_url", ImageURL: &OpenAIImageURL{URL: url, Detail: img.GetDetail()}}
	case *pb.ContentPart_File:
		f := part.File
		out := &OpenAIFile{FileID: f.GetFileId(), Filename: f.GetFilename()}
		if out.FileID == "" {
			out.FileData = f.GetUrl()
			if out.FileData == "" {
				out.FileData = dataURL(f)
			}
		}
		return OpenAIPart{Type: "file", File: out}
	}
	empty := ""
	return OpenAIPart{Type: "text", Text: &empty} // a part with nothing set (never stored by the daemon)
}

func withContent(o *OpenAIMessage, m *pb.Message) {
	if len(m.GetParts()) > 0 {
		o.Parts = make([]OpenAIPart, len(m.GetParts()))
		for i, p := range m.GetParts() {
			o.Parts[i] = partToOpenAI(p)
		}
		return
	}
	c := m.GetContent()
	o.Content = &c
}

func extraOf(m *pb.Message) map[string]json.RawMessage {
	var obj map[string]json.RawMessage
	if m.GetExtra() == "" || json.Unmarshal([]byte(m.GetExtra()), &obj) != nil {
		return nil // not a JSON object: not a provider field, so nothing to send
	}
	for k := range anthropicOnly {
		delete(obj, k)
	}
	return obj
}

// anthropicOnly are extra keys Python's from_anthropic keeps for to_anthropic; never sent to OpenAI.
var anthropicOnly = map[string]bool{"thinking_blocks": true, "is_error": true}

// toolText is a result's content as text (OpenAI tool messages take text): text parts joined, media named.
func toolText(m *pb.Message) *string {
	if len(m.GetParts()) == 0 {
		c := m.GetContent()
		return &c
	}
	texts := make([]string, len(m.GetParts()))
	for i, p := range m.GetParts() {
		switch part := p.GetPart().(type) {
		case *pb.ContentPart_Text:
			texts[i] = part.Text
		default:
			kind, r := "image", p.GetImage()
			if r == nil {
				kind, r = "file", p.GetFile()
			}
			name := r.GetUrl()
			for _, alt := range []string{r.GetFileId(), r.GetFilename(), r.GetMimeType()} {
				if name == "" {
					name = alt
				}
			}
			texts[i] = "[" + kind + ": " + name + "]"
		}
	}
	t := strings.Join(texts, "\n")
	return &t
}

// NoResult is the content of the placeholder answering a call whose result was never stored
// (as the Python client's NO_RESULT and the Node client's NO_RESULT).
const NoResult = "[no result recorded]"

// ToOpenAI returns messages read back (CONTEXT, RAW or HISTORY, oldest first) as an OpenAI Chat
// Completions history. The rules, shared with Python's to_openai and Node's toOpenAI:
//   - the summary becomes {"role": "system", "content": text}; system and developer keep their role;
//   - an assistant message with tool calls gets tool_calls (type "function") and content null
//     when it has no text; its results follow it right away, in call order, even if other
//     messages were appended in between (those follow the group); a result's content is text
//     (text parts joined by newlines, media named);
//   - a call with no result, in a group that is not the last message (an agent that stopped
//     mid-call while the conversation went on), is answered with NoResult; the newest group
//     still waiting for its results is left as it is;
//   - a tool result whose call is not before it among messages (an orphan), and a second
//     result of one call, are left out: OpenAI refuses a tool message that answers no call;
//   - parts become a content list (text, image_url, file); name is kept (not on tool messages);
//     the keys of extra are added where the message does not have the key already.
func ToOpenAI(messages []*pb.Message) []OpenAIMessage {
	owner := map[string]int{}
	for i, m := range messages {
		for _, c := range m.GetToolCalls() {
			owner[c.GetId()] = i
		}
	}
	results := map[string]*pb.Message{}
	var plan []*pb.Message // results go with their call, or nowhere
	for i, m := range messages {
		if m.GetRole() != pb.Role_ROLE_TOOL {
			plan = append(plan, m)
			continue
		}
		if o, ok := owner[m.GetToolCallId()]; ok && o < i && results[m.GetToolCallId()] == nil {
			results[m.GetToolCallId()] = m
		}
	}
	names := map[pb.Role]string{pb.Role_ROLE_SYSTEM: "system", pb.Role_ROLE_DEVELOPER: "developer",
		pb.Role_ROLE_USER: "user", pb.Role_ROLE_ASSISTANT: "assistant"}
	out := []OpenAIMessage{}
	for i, m := range plan {
		if m.GetKind() == pb.MessageKind_MESSAGE_KIND_SUMMARY {
			c := m.GetContent()
			out = append(out, OpenAIMessage{Role: "system", Content: &c})
			continue
		}
		role, ok := names[m.GetRole()]
		if !ok {
			role = "user"
		}
		o := OpenAIMessage{Role: role, Name: m.GetName(), Extra: extraOf(m)}
		calls := m.GetToolCalls()
		if len(calls) == 0 || m.GetContent() != "" || len(m.GetParts()) > 0 {
			withContent(&o, m)
		}
		for _, c := range calls {
			o.ToolCalls = append(o.ToolCalls, OpenAIToolCall{ID: c.GetId(), Type: "function",
				Function: OpenAIFunction{Name: c.GetName(), Arguments: c.GetArguments()}})
		}
		out = append(out, o)
		for _, c := range calls {
			if r := results[c.GetId()]; r != nil {
				out = append(out, OpenAIMessage{Role: "tool", ToolCallID: c.GetId(), Content: toolText(r), Extra: extraOf(r)})
			} else if i != len(plan)-1 {
				noResult := NoResult
				out = append(out, OpenAIMessage{Role: "tool", ToolCallID: c.GetId(), Content: &noResult})
			}
		}
	}
	return out
}
