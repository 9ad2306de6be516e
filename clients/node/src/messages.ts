// Messages in and out: the input an agent appends (memoryd's own fields or an OpenAI Chat
// Completions message object as the OpenAI SDK produces it), checked field by field before
// anything is sent, and `toOpenAI`, which turns messages read back into an OpenAI Chat history.
// The conversion rules are shared with the Python (`to_openai`) and Go (`ToOpenAI`) clients.
import {
  type ContentPart, type MediaRef, type Message, MessageKind, Role, type ToolCall,
} from "./gen/memoryd/v1/memory";
import { INT32_MAX, checkText, checkUint32, checkUint64, invalid, isPlainObject } from "./check";

export type RoleName = "system" | "user" | "assistant" | "tool" | "developer";
export const ROLES: Record<RoleName, Role> = {
  system: Role.ROLE_SYSTEM,
  user: Role.ROLE_USER,
  assistant: Role.ROLE_ASSISTANT,
  tool: Role.ROLE_TOOL,
  developer: Role.ROLE_DEVELOPER,
};
const ROLE_NAMES = new Map<Role, RoleName>(Object.entries(ROLES).map(([k, v]) => [v, k as RoleName]));

/** A tool call in memoryd's own shape (as read back in `Message.toolCalls`). */
export interface ToolCallInput {
  id: string;
  name: string;
  /** The arguments as the model wrote them (JSON text), stored byte for byte. */
  arguments: string;
}

/** A tool call as OpenAI Chat Completions writes it. */
export interface OpenAIToolCall {
  id: string;
  type: "function";
  function: { name: string; arguments: string };
}

/** An image or a file: by URL (http(s) or data:), by a provider file id, or small inline bytes. */
export interface MediaRefInput {
  url?: string;
  fileId?: string;
  data?: Uint8Array;
  mimeType?: string;
  sizeBytes?: number | bigint;
  /** OpenAI image detail: "auto", "low" or "high" ("" or unset: auto). */
  detail?: string;
  width?: number;
  height?: number;
  filename?: string;
}

export interface OpenAITextPart { type: "text"; text: string }
export interface OpenAIImagePart { type: "image_url"; image_url: { url: string; detail?: "auto" | "low" | "high" } }
export interface OpenAIFilePart { type: "file"; file: { file_id?: string; file_data?: string; filename?: string } }
export type OpenAIContentPart = OpenAITextPart | OpenAIImagePart | OpenAIFilePart;

/** A content part in memoryd's own shape (as read back in `Message.parts`): exactly one of the three. */
export interface ContentPartInput {
  text?: string;
  image?: MediaRefInput;
  file?: MediaRefInput;
}

/** A content part: memoryd's own shape or an OpenAI one; any other kind is refused. */
export type PartInput = ContentPartInput | OpenAIContentPart;

/**
 * A message to append: `{ role: "user", content: "hi" }` plus optional fields, or an OpenAI
 * Chat Completions message object as it is (`tool_calls`, `tool_call_id`, `content` as a
 * string, null or a list of parts; `refusal`, `audio`, `annotations` and `function_call`,
 * unless null, are kept in `extra` and come back from `toOpenAI`; a file part's `file_data`
 * is decoded into the part's bytes and MIME type).
 */
export interface MessageInput {
  role: RoleName | Role;
  /** Text, or (OpenAI style) null or a list of parts, which are stored as `parts`. */
  content?: string | null | readonly PartInput[];
  contentType?: string;
  priority?: number | null;
  metadata?: Record<string, string>;
  persist?: boolean | null;
  /** Assistant messages: the tools this turn calls (`tool_calls` is the OpenAI spelling). */
  toolCalls?: readonly (ToolCallInput | OpenAIToolCall)[] | null;
  tool_calls?: readonly (ToolCallInput | OpenAIToolCall)[] | null;
  /** Tool messages: the id of the call answered (`tool_call_id` is the OpenAI spelling). */
  toolCallId?: string | null;
  tool_call_id?: string | null;
  /** Participant name (user/assistant) or tool name (tool messages). */
  name?: string | null;
  parts?: readonly PartInput[] | null;
  /** Provider fields memoryd does not model: a JSON object text (stored byte for byte) or a plain object. */
  extra?: string | Record<string, unknown> | null;
  refusal?: string | null;
  audio?: unknown;
  annotations?: unknown;
  function_call?: unknown;
}

const MESSAGE_FIELDS = new Set([
  "role", "content", "contentType", "priority", "metadata", "persist", "toolCalls", "toolCallId", "name", "parts",
  "extra", "tool_calls", "tool_call_id", "refusal", "audio", "annotations", "function_call",
]);
/** OpenAI message fields memoryd does not model: kept in `extra` unless null (as the Python client does). */
const OPENAI_EXTRA_FIELDS = ["refusal", "audio", "annotations", "function_call"] as const;
/** Keys of an OpenAI message that memoryd produces itself; `extra` must not carry them. */
const MODELLED = new Set(["role", "content", "name", "tool_calls", "tool_call_id"]);
const DETAILS = new Set(["", "auto", "low", "high"]);
const MEDIA_FIELDS = new Set(["url", "fileId", "data", "mimeType", "sizeBytes", "detail", "width", "height", "filename"]);

const given = (v: unknown): boolean => v !== undefined && v !== null;

function onlyKeys(field: string, o: Record<string, unknown>, allowed: readonly string[]): void {
  const unknown = Object.keys(o).filter((k) => !allowed.includes(k) && o[k] !== undefined);
  if (unknown.length) throw invalid(field, `unknown fields ${unknown.sort().join(", ")}`);
}

function optText(field: string, v: unknown): string {
  return given(v) ? checkText(field, v) : "";
}

function makeMedia(field: string, r: unknown): MediaRef {
  if (!isPlainObject(r)) throw invalid(field, "must be an object {url | fileId | data, mimeType, ...}");
  const unknown = Object.keys(r).filter((k) => !MEDIA_FIELDS.has(k) && r[k] !== undefined);
  if (unknown.length) throw invalid(field, `unknown fields ${unknown.sort().join(", ")}`);
  let data = Buffer.alloc(0);
  if (given(r.data)) {
    if (!(r.data instanceof Uint8Array)) throw invalid(`${field}.data`, "must be a Uint8Array or Buffer");
    data = Buffer.from(r.data);
  }
  const detail = optText(`${field}.detail`, r.detail);
  if (!DETAILS.has(detail)) throw invalid(`${field}.detail`, `must be "auto", "low" or "high", got ${JSON.stringify(detail)}`);
  const out: MediaRef = {
    url: optText(`${field}.url`, r.url),
    fileId: optText(`${field}.fileId`, r.fileId),
    data,
    mimeType: optText(`${field}.mimeType`, r.mimeType),
    sizeBytes: given(r.sizeBytes) ? checkUint64(`${field}.sizeBytes`, r.sizeBytes) : 0n,
    detail,
    width: given(r.width) ? checkUint32(`${field}.width`, r.width) : 0,
    height: given(r.height) ? checkUint32(`${field}.height`, r.height) : 0,
    filename: optText(`${field}.filename`, r.filename),
  };
  if (!out.url && !out.fileId && !out.data.length) throw invalid(field, "needs a url, a fileId or data");
  return out;
}

const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/** OpenAI's `file_data`: base64, or a `data:<mime>;base64,...` URL -> bytes and MIME type (as Python). */
function decodeFileData(field: string, text: string): [Buffer, string] {
  let mime = "";
  let b64 = text;
  if (text.startsWith("data:")) {
    const comma = text.indexOf(",");
    const header = comma < 0 ? text : text.slice(0, comma);
    b64 = comma < 0 ? "" : text.slice(comma + 1);
    mime = header.slice(5).split(";")[0];
  }
  if (!BASE64.test(b64)) throw invalid(field, "is not base64 (nor a data: URL holding base64)");
  return [Buffer.from(b64, "base64"), mime];
}

/** One content part, memoryd's shape or OpenAI's; any other kind is refused, never stored as text. */
function makePart(field: string, p: unknown): ContentPart {
  if (!isPlainObject(p)) throw invalid(field, `must be a content part object, got ${p === null ? "null" : typeof p}`);
  if (p.type !== undefined) {
    switch (p.type) {
      case "text":
        onlyKeys(field, p, ["type", "text"]);
        return { text: checkText(`${field}.text`, p.text) };
      case "image_url": {
        onlyKeys(field, p, ["type", "image_url"]);
        const iu = p.image_url;
        if (!isPlainObject(iu)) throw invalid(`${field}.image_url`, "must be an object {url, detail?}");
        onlyKeys(`${field}.image_url`, iu, ["url", "detail"]);
        const url = checkText(`${field}.image_url.url`, iu.url);
        if (!url) throw invalid(`${field}.image_url.url`, "must not be empty");
        return { image: makeMedia(`${field}.image_url`, { url, detail: iu.detail }) };
      }
      case "file": {
        onlyKeys(field, p, ["type", "file"]);
        const f = p.file;
        if (!isPlainObject(f)) throw invalid(`${field}.file`, "must be an object {file_id | file_data, filename?}");
        onlyKeys(`${field}.file`, f, ["file_id", "file_data", "filename"]);
        const fileId = optText(`${field}.file.file_id`, f.file_id);
        const fileData = optText(`${field}.file.file_data`, f.file_data);
        if (!fileId && !fileData) throw invalid(`${field}.file`, "needs file_id or file_data");
        const [data, mimeType] = fileData ? decodeFileData(`${field}.file.file_data`, fileData) : [undefined, undefined];
        return { file: makeMedia(`${field}.file`, { fileId, data, mimeType, filename: f.filename }) };
      }
      default:
        throw invalid(`${field}.type`,
          `unknown content part type ${JSON.stringify(p.type)} (memoryd stores "text", "image_url" and "file" parts)`);
    }
  }
  const kinds = ["text", "image", "file"].filter((k) => p[k] !== undefined);
  onlyKeys(field, p, ["text", "image", "file"]);
  if (kinds.length !== 1) {
    throw invalid(field, "must have exactly one of text, image and file (or be an OpenAI part with a type)");
  }
  if (kinds[0] === "text") return { text: checkText(`${field}.text`, p.text) };
  if (kinds[0] === "image") return { image: makeMedia(`${field}.image`, p.image) };
  return { file: makeMedia(`${field}.file`, p.file) };
}

function makeToolCall(field: string, c: unknown): ToolCall {
  if (!isPlainObject(c)) throw invalid(field, "must be a tool call object");
  let name: unknown;
  let args: unknown;
  if (c.type !== undefined || c.function !== undefined) {
    if (c.type !== undefined && c.type !== "function") {
      throw invalid(`${field}.type`, `must be "function" (memoryd stores function calls), got ${JSON.stringify(c.type)}`);
    }
    onlyKeys(field, c, ["id", "type", "function"]);
    if (!isPlainObject(c.function)) throw invalid(`${field}.function`, "must be an object {name, arguments}");
    onlyKeys(`${field}.function`, c.function, ["name", "arguments"]);
    name = c.function.name;
    args = c.function.arguments;
    field = `${field}.function`;
  } else {
    onlyKeys(field, c, ["id", "name", "arguments"]);
    name = c.name;
    args = c.arguments;
  }
  const id = checkText(`${field.replace(/\.function$/, "")}.id`, c.id);
  if (!id) throw invalid(`${field.replace(/\.function$/, "")}.id`, "must not be empty");
  const n = checkText(`${field}.name`, name);
  if (!n) throw invalid(`${field}.name`, "must not be empty");
  return { id, name: n, arguments: checkText(`${field}.arguments`, args) };
}

/** The one spelling given of a field with a camelCase and an OpenAI (snake_case) name. */
function either(m: Record<string, unknown>, at: string, camel: string, snake: string): [string, unknown] {
  if (given(m[camel]) && given(m[snake])) throw invalid(`${at}.${camel}`, `pass ${camel} or ${snake}, not both`);
  return given(m[snake]) ? [`${at}.${snake}`, m[snake]] : [`${at}.${camel}`, m[camel]];
}

/** `extra` as JSON object text: the caller's text byte for byte, unless OpenAI fields join it. */
function makeExtra(at: string, m: Record<string, unknown>): string {
  let text = "";
  let obj: Record<string, unknown> = {};
  const e = m.extra;
  if (typeof e === "string") {
    checkText(`${at}.extra`, e);
    if (e !== "") {
      let parsed: unknown;
      try {
        parsed = JSON.parse(e);
      } catch {
        throw invalid(`${at}.extra`, "must be a JSON object text (it does not parse as JSON)");
      }
      if (!isPlainObject(parsed)) throw invalid(`${at}.extra`, "must be a JSON object text, not another JSON value");
      text = e;
      obj = parsed;
    }
  } else if (isPlainObject(e)) {
    try {
      text = JSON.stringify(e);
    } catch (err) {
      throw invalid(`${at}.extra`, `is not serialisable as JSON: ${(err as Error).message}`);
    }
    obj = JSON.parse(text) as Record<string, unknown>;
  } else if (given(e)) {
    throw invalid(`${at}.extra`, `must be a JSON object text or a plain object, got ${typeof e}`);
  }
  for (const k of Object.keys(obj)) {
    if (MODELLED.has(k)) throw invalid(`${at}.extra.${k}`, "is a field memoryd models itself; set it on the message");
  }
  const provider = OPENAI_EXTRA_FIELDS.filter((k) => given(m[k]));
  if (!provider.length) return text;
  const merged: Record<string, unknown> = { ...obj };
  for (const k of provider) {
    if (k in merged) throw invalid(`${at}.${k}`, "is also in extra; give it once");
    merged[k] = m[k];
  }
  try {
    return JSON.stringify(merged);
  } catch (err) {
    throw invalid(`${at}.${provider.join("/")}`, `is not serialisable as JSON: ${(err as Error).message}`);
  }
}

/** Build the wire message, checking every field first (the error names the field), so that
 * nothing is mangled, stored as "[object Object]", or fails in the encoder. */
export function makeMessage(input: MessageInput, i = 0): Message {
  if (!isPlainObject(input)) throw new TypeError(`messages[${i}] must be an object`);
  const m = input as unknown as Record<string, unknown>;
  const unknown = Object.keys(m).filter((k) => !MESSAGE_FIELDS.has(k));
  if (unknown.length) throw new TypeError(`unknown message fields: ${unknown.sort().join(", ")}`);
  const role = typeof input.role === "string" ? ROLES[input.role as RoleName] : input.role;
  if (role === undefined || !ROLE_NAMES.has(role)) throw new TypeError(`unknown role: ${String(input.role)}`);
  const at = `messages[${i}]`;

  let content = "";
  let parts: ContentPart[] = [];
  const c = m.content;
  if (Array.isArray(c)) parts = c.map((p, j) => makePart(`${at}.content[${j}]`, p));
  else if (typeof c === "string") content = checkText(`${at}.content`, c);
  else if (given(c)) {
    throw invalid(`${at}.content`, `must be a string, null or an array of content parts, got ${typeof c}`);
  }
  if (given(m.parts)) {
    if (!Array.isArray(m.parts)) throw invalid(`${at}.parts`, "must be an array of content parts");
    if (Array.isArray(c)) throw invalid(`${at}.parts`, "pass parts or a list content, not both");
    if (content !== "") throw invalid(`${at}.content`, "must be empty when parts is set");
    parts = m.parts.map((p, j) => makePart(`${at}.parts[${j}]`, p));
  }

  const [callsField, rawCalls] = either(m, at, "toolCalls", "tool_calls");
  let toolCalls: ToolCall[] = [];
  if (given(rawCalls)) {
    if (!Array.isArray(rawCalls)) throw invalid(callsField, "must be an array of tool calls");
    toolCalls = rawCalls.map((tc, j) => makeToolCall(`${callsField}[${j}]`, tc));
    const seen = new Set<string>();
    toolCalls.forEach((tc, j) => {
      if (seen.has(tc.id)) throw invalid(`${callsField}[${j}].id`, `repeats the call id ${JSON.stringify(tc.id)}`);
      seen.add(tc.id);
    });
    if (toolCalls.length && role !== Role.ROLE_ASSISTANT) throw invalid(callsField, "only assistant messages call tools");
  }
  const [idField, rawId] = either(m, at, "toolCallId", "tool_call_id");
  const toolCallId = optText(idField, rawId);
  if (role === Role.ROLE_TOOL && !toolCallId) {
    throw invalid(idField, "is required on tool messages (the id of the call this result answers)");
  }
  if (role !== Role.ROLE_TOOL && toolCallId) throw invalid(idField, "only tool messages answer a call");

  const contentType = optText(`${at}.contentType`, m.contentType);
  if (given(m.priority)
      && (typeof m.priority !== "number" || !Number.isInteger(m.priority) || m.priority < 0 || m.priority > INT32_MAX)) {
    throw invalid(`${at}.priority`, `must be an integer in 0..${INT32_MAX}, got ${String(m.priority)}`);
  }
  const metadata: Record<string, string> = {};
  if (given(m.metadata) && !isPlainObject(m.metadata)) throw invalid(`${at}.metadata`, "must be an object of strings");
  for (const [k, v] of Object.entries((m.metadata ?? {}) as Record<string, unknown>)) {
    metadata[checkText(`${at}.metadata key`, k)] = checkText(`${at}.metadata[${JSON.stringify(k)}]`, v);
  }
  if (given(m.persist) && typeof m.persist !== "boolean") {
    throw invalid(`${at}.persist`, `must be a boolean, got ${typeof m.persist}`);
  }
  return {
    role,
    content,
    contentType,
    priority: (m.priority as number | null | undefined) ?? undefined,
    metadata,
    persist: (m.persist as boolean | null | undefined) ?? undefined,
    seq: 0n,
    id: "",
    createdAt: undefined,
    tokenCount: 0,
    kind: 0,
    effectivePriority: 0,
    toolCalls,
    toolCallId,
    name: optText(`${at}.name`, m.name),
    parts,
    extra: makeExtra(at, m),
    folded: false,
  };
}

/** An OpenAI Chat Completions message, as `toOpenAI` returns it (plus any keys from `extra`). */
export interface OpenAIMessage {
  role: "system" | "developer" | "user" | "assistant" | "tool";
  content: string | null | OpenAIContentPart[];
  name?: string;
  tool_calls?: OpenAIToolCall[];
  tool_call_id?: string;
  [key: string]: unknown;
}

function dataUrl(r: MediaRef): string {
  return `data:${r.mimeType || "application/octet-stream"};base64,${Buffer.from(r.data).toString("base64")}`;
}

function partToOpenAI(p: ContentPart): OpenAIContentPart {
  if (p.text !== undefined) return { type: "text", text: p.text };
  if (p.image !== undefined) {
    const img = p.image;
    if (!img.url && !img.data.length && img.fileId) return { type: "file", file: { file_id: img.fileId } };
    const iu: OpenAIImagePart["image_url"] = { url: img.url || dataUrl(img) };
    if (img.detail) iu.detail = img.detail as "auto" | "low" | "high";
    return { type: "image_url", image_url: iu };
  }
  if (p.file !== undefined) {
    const f = p.file;
    const file: OpenAIFilePart["file"] = f.fileId ? { file_id: f.fileId } : { file_data: f.url || dataUrl(f) };
    if (f.filename) file.filename = f.filename;
    return { type: "file", file };
  }
  throw new TypeError("a content part with no text, image or file");
}

function contentOf(m: Message): string | OpenAIContentPart[] {
  return m.parts.length ? m.parts.map(partToOpenAI) : m.content;
}

/** A result's content as text (OpenAI tool messages take text): text parts joined, media named. */
function toolText(m: Message): string {
  if (!m.parts.length) return m.content;
  return m.parts.map((p) => {
    if (p.text !== undefined) return p.text;
    const [kind, r] = p.image !== undefined ? ["image", p.image] : ["file", p.file as MediaRef];
    return `[${kind}: ${r.url || r.fileId || r.filename || r.mimeType}]`;
  }).join("\n");
}

/** Add the keys of `extra` (a JSON object text) that the message does not have already. */
function withExtra(out: OpenAIMessage, extra: string): OpenAIMessage {
  if (!extra) return out;
  let obj: unknown;
  try {
    obj = JSON.parse(extra);
  } catch {
    return out; // not JSON: not a provider field, so nothing to send
  }
  if (!isPlainObject(obj)) return out;
  for (const [k, v] of Object.entries(obj)) if (!(k in out) && !ANTHROPIC_ONLY.has(k)) out[k] = v;
  return out;
}

/** `extra` keys Python's `from_anthropic` keeps for `to_anthropic`; never sent to OpenAI (as Python). */
const ANTHROPIC_ONLY = new Set(["thinking_blocks", "is_error"]);

/** Content of the placeholder answering a call whose result was never stored (as Python's NO_RESULT). */
export const NO_RESULT = "[no result recorded]";

/**
 * OpenAI Chat Completions messages from messages read back (CONTEXT, RAW or HISTORY, oldest first).
 * The rules, shared with Python's `to_openai` and Go's `ToOpenAI`:
 * - the summary becomes `{role: "system", content}`; system and developer keep their role;
 * - an assistant message with tool calls gets `tool_calls` (`type: "function"`) and
 *   `content: null` when it has no text; its results follow it right away, in call order,
 *   even if other messages were appended in between (those follow the group); a result's
 *   content is text (text parts joined by newlines, media named);
 * - a call with no result, in a group that is not the last message (an agent that stopped
 *   mid-call while the conversation went on), is answered with `NO_RESULT`; the newest group
 *   still waiting for its results is left as it is;
 * - a tool result whose call is not before it among `messages` (an orphan), and a second
 *   result of one call, are left out: OpenAI refuses a `tool` message that answers no call;
 * - parts become a content list (`text`, `image_url`, `file`); `name` is kept (not on tool
 *   messages); the keys of `extra` are added where the message does not have the key already.
 */
export function toOpenAI(messages: readonly Message[]): OpenAIMessage[] {
  const owner = new Map<string, number>();
  messages.forEach((m, i) => m.toolCalls.forEach((c) => owner.set(c.id, i)));
  const results = new Map<string, Message>();
  messages.forEach((m, i) => {
    if (m.role === Role.ROLE_TOOL && (owner.get(m.toolCallId) ?? messages.length) < i && !results.has(m.toolCallId)) {
      results.set(m.toolCallId, m);
    }
  });
  const plan = messages.filter((m) => m.role !== Role.ROLE_TOOL); // results go with their call, or nowhere
  const out: OpenAIMessage[] = [];
  plan.forEach((m, i) => {
    if (m.kind === MessageKind.MESSAGE_KIND_SUMMARY) {
      out.push({ role: "system", content: m.content });
      return;
    }
    const role = (ROLE_NAMES.get(m.role) ?? "user") as OpenAIMessage["role"];
    const content = contentOf(m);
    const o: OpenAIMessage = { role, content: m.toolCalls.length && !content.length ? null : content };
    if (m.toolCalls.length) {
      o.tool_calls = m.toolCalls.map((c) => ({ id: c.id, type: "function", function: { name: c.name, arguments: c.arguments } }));
    }
    if (m.name) o.name = m.name;
    out.push(withExtra(o, m.extra));
    for (const c of m.toolCalls) {
      const r = results.get(c.id);
      if (r !== undefined) out.push(withExtra({ role: "tool", tool_call_id: c.id, content: toolText(r) }, r.extra));
      else if (i !== plan.length - 1) out.push({ role: "tool", tool_call_id: c.id, content: NO_RESULT });
    }
  });
  return out;
}
