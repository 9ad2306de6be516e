// Interop driver used by tests/interop (pytest): reads JSON commands, one per line, on stdin and
// answers each with one JSON line on stdout; `watch` streams one line per event instead.
// Usage: node dist/tools/interop.js ADDRESS   (build with `npm run build`)
// The same protocol is implemented by the Go and Python drivers (tests/interop/driver_py.py, docs/clients.md).
import { createInterface } from "node:readline";
import { MemorydError, MemoryClient, type Message, type Target, type WatchResponse } from "../src";

type Json = Record<string, any>;

const dec = (v: bigint | number) => BigInt(v).toString();

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
      const msgs = cmd.messages.map((m: Json) => ({
        role: m.role,
        content: Buffer.from(m.content_hex, "hex").toString("utf8"),
        ...(m.content_type !== undefined ? { contentType: m.content_type } : {}),
        ...(m.priority !== undefined ? { priority: m.priority } : {}),
        ...(m.metadata !== undefined ? { metadata: m.metadata } : {}),
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
