// Interop driver used by tests/interop (pytest): reads JSON commands, one per line, on stdin and
// answers each with one JSON line on stdout; `watch` streams one line per event instead.
// Usage: node dist/tools/interop.js ADDRESS   (build with `npm run build`)
// The same protocol is implemented by the Go and Python drivers (tests/interop/driver_py.py, docs/clients.md).
import { createInterface } from "node:readline";
import {
  type ContentPart, type MediaRef, type MediaRefInput, MemorydError, MemoryClient, type Message, type MessageInput,
  type PartInput, type Target, type WatchResponse, toOpenAI,
} from "../src";

type Json = Record<string, any>;

const dec = (v: bigint | number) => BigInt(v).toString();
const hex = (s: string) => Buffer.from(s, "utf8").toString("hex");
const unhex = (h: string) => Buffer.from(h, "hex").toString("utf8");

function media(r: MediaRef): Json {
  return { url: r.url, file_id: r.fileId, mime_type: r.mimeType, detail: r.detail, filename: r.filename,
    data_hex: Buffer.from(r.data).toString("hex"), size_bytes: dec(r.sizeBytes), width: r.width, height: r.height };
}

function part(p: ContentPart): Json {
  if (p.text !== undefined) return { text_hex: hex(p.text) };
  return p.image !== undefined ? { image: media(p.image) } : { file: media(p.file as MediaRef) };
}

function mediaInput(j: Json): MediaRefInput {
  return { url: j.url, fileId: j.file_id, mimeType: j.mime_type, detail: j.detail, filename: j.filename,
    data: j.data_hex !== undefined ? Buffer.from(j.data_hex, "hex") : undefined,
    sizeBytes: j.size_bytes !== undefined ? BigInt(j.size_bytes) : undefined, width: j.width, height: j.height };
}

function partInput(j: Json): PartInput {
  if (j.text_hex !== undefined) return { text: unhex(j.text_hex) };
  return j.image !== undefined ? { image: mediaInput(j.image) } : { file: mediaInput(j.file) };
}

function message(m: Message): Json {
  const ts = m.createdAt;
  return {
    seq: dec(m.seq),
    id: m.id,
    role: m.role,
    content_hex: Buffer.from(m.content, "utf8").toString("hex"),
    content_type: m.contentType,
    metadata: Object.fromEntries(Object.entries(m.metadata).sort(([a], [b]) => (a < b ? -1 : 1))),
    priority: m.priority ?? null,
    token_count: m.tokenCount,
    kind: m.kind,
    effective_priority: m.effectivePriority,
    created_at: ts ? `${ts.seconds}.${String(ts.nanos).padStart(9, "0")}` : null,
    tool_calls: m.toolCalls.map((t) => ({ id: t.id, name: t.name, arguments_hex: hex(t.arguments) })),
    tool_call_id: m.toolCallId,
    name: m.name,
    parts: m.parts.map(part),
    extra_hex: hex(m.extra),
  };
}

function target(ref: Json): Target {
  if (ref.agent) return { agent: { agentId: ref.agent.id, context: ref.agent.context ?? {} } };
  return { key: ref.key };
}

function event(ev: WatchResponse): Json {
  if (ev.appended) return { event: "appended", messages: ev.appended.messages.map(message) };
  if (ev.flushed) return { event: "flushed", removed_seqs: ev.flushed.removedSeqs.map(dec) };
  return { event: "cleared" };
}

async function handle(c: MemoryClient, cmd: Json, out: (j: Json) => void): Promise<void> {
  switch (cmd.op) {
    case "append": {
      const msgs = cmd.messages.map((m: Json): MessageInput => ({
        role: m.role,
        content: unhex(m.content_hex),
        ...(m.content_type !== undefined ? { contentType: m.content_type } : {}),
        ...(m.priority !== undefined ? { priority: m.priority } : {}),
        ...(m.metadata !== undefined ? { metadata: m.metadata } : {}),
        ...(m.tool_calls !== undefined ? { toolCalls: m.tool_calls.map((t: Json) => ({
          id: t.id, name: t.name, arguments: unhex(t.arguments_hex) })) } : {}),
        ...(m.tool_call_id !== undefined ? { toolCallId: m.tool_call_id } : {}),
        ...(m.name !== undefined ? { name: m.name } : {}),
        ...(m.parts !== undefined ? { parts: m.parts.map(partInput) } : {}),
        ...(m.extra_hex !== undefined ? { extra: unhex(m.extra_hex) } : {}),
      }));
      const opts = cmd.idempotency_key ? { idempotencyKey: cmd.idempotency_key } : {};
      const r = await c.append(cmd.memory, msgs, target(cmd.ref), opts);
      return out({ ok: {
        results: r.results.map((x) => ({ seq: dec(x.seq), id: x.id, token_count: x.tokenCount, persisted: x.persisted,
          effective_priority: x.effectivePriority })),
        replayed: r.replayed,
      } });
    }
    case "read": {
      const ms = await c.readAll(cmd.memory, {
        ...target(cmd.ref), view: cmd.view ?? "raw", afterSeq: BigInt(cmd.after_seq ?? 0), limit: cmd.limit ?? 0,
        maxTokens: cmd.max_tokens ?? 0, chunkSize: cmd.chunk_size ?? 0,
      });
      return out({ ok: { messages: ms.map(message) } });
    }
    case "append_openai": {
      const r = await c.append(cmd.memory, JSON.parse(cmd.messages_json) as MessageInput[], target(cmd.ref));
      return out({ ok: {
        results: r.results.map((x) => ({ seq: dec(x.seq), id: x.id, token_count: x.tokenCount })), replayed: r.replayed,
      } });
    }
    case "read_openai": {
      const ms = await c.readAll(cmd.memory, { ...target(cmd.ref), view: cmd.view ?? "context", maxTokens: cmd.max_tokens ?? 0 });
      return out({ ok: { messages_json: JSON.stringify(toOpenAI(ms)) } });
    }
    case "stats": {
      const s = await c.stats(cmd.memory, target(cmd.ref));
      return out({ ok: { instance_id: s.instanceId, message_count: dec(s.messageCount), token_count: dec(s.tokenCount),
        last_seq: dec(s.lastSeq) } });
    }
    case "clear":
      return out({ ok: { removed: dec(await c.clear(cmd.memory, target(cmd.ref))) } });
    case "resolve": {
      const r = await c.resolveAgent({ agentId: cmd.agent.id, context: cmd.agent.context ?? {} });
      return out({ ok: { level: r.level, references: r.references.map((x) => ({
        memory_id: x.memoryId, mode: x.mode, key_template: x.keyTemplate, key: x.key, instance_id: x.instanceId })) } });
    }
    case "watch": {
      let seen = 0;
      for await (const ev of c.watch(cmd.memory, { ...target(cmd.ref), afterSeq: BigInt(cmd.after_seq ?? 0) })) {
        out(event(ev));
        seen += ev.appended?.messages.length ?? 0;
        if (seen >= cmd.count) break;
      }
      return out({ done: true });
    }
    default:
      throw new Error(`unknown op ${String(cmd.op)}`);
  }
}

async function main(): Promise<void> {
  const c = new MemoryClient(process.argv[2]);
  const write = (j: Json) => process.stdout.write(`${JSON.stringify(j)}\n`);
  for await (const line of createInterface({ input: process.stdin })) {
    if (!line.trim()) continue;
    try {
      await handle(c, JSON.parse(line), write);
    } catch (err) {
      if (!(err instanceof MemorydError)) throw err;
      write({ error: { code: err.code, name: err.codeName, details: err.details, kind: err.constructor.name } });
    }
  }
  c.close();
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
