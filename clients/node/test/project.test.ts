// The Node client against a real `memoryd serve` of a project with agents (test/project.yaml):
// agent scopes, read-only references, context reads, flush, resolve, list, end workflow, watch.
import assert from "node:assert/strict";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import {
  AccessMode, ConfigLevel, FailedPreconditionError, FlushStrategy, type Agent, MemoryClient, MessageKind, NotFoundError,
  PermissionDeniedError,
  type WatchResponse,
} from "../src";
import { type Daemon, startDaemon } from "./daemon";

let n = 0;
const agent = (id: string, wf: string): Agent => ({ agentId: id, context: { workflow: { id: wf }, user: { id: `u-${wf}` } } });
const fresh = () => `wf-node-${process.pid}-${++n}`;

describe("MemoryClient on a project with agents", () => {
  let daemon: Daemon;
  let c: MemoryClient;
  before(async () => {
    daemon = await startDaemon("--config", join(__dirname, "project.yaml"));
    c = new MemoryClient(daemon.address);
  });
  after(async () => {
    c?.close();
    await daemon?.stop();
  });

  it("lists resources with their effective settings", async () => {
    const res = await c.listResources();
    assert.equal(res.project, "client-tests");
    const chat = res.resources.find((r) => r.id === "chat");
    assert.equal(chat?.budgetTokens, 300n);
    assert.equal(chat?.strategy, FlushStrategy.FLUSH_STRATEGY_HYBRID_SUMMARY);
    assert.equal(chat?.settings?.flushing_strategy?.summary_tokens, 64);
  });

  it("refuses a fold plan on a fifo resource with FailedPreconditionError", async () => {
    await c.append("log", [{ role: "user", content: "event" }], { key: "node-log" });
    await assert.rejects(c.planFlush("log", { key: "node-log" }), FailedPreconditionError);
  });

  it("resolves an agent's references for a context", async () => {
    const res = await c.resolveAgent(agent("reader", "wf-42"));
    assert.equal(res.level, ConfigLevel.CONFIG_LEVEL_ADVANCED);
    assert.deepEqual(res.references.map((r) => [r.memoryId, r.mode, r.key]), [
      ["chat", AccessMode.ACCESS_MODE_READ_ONLY, "chat-wf-42"],
      ["facts", AccessMode.ACCESS_MODE_READ_ONLY, "facts-u-wf-42"],
    ]);
    await assert.rejects(c.resolveAgent({ agentId: "nobody" }), NotFoundError);
  });

  it("writes through a read-write reference and refuses a read-only one", async () => {
    const wf = fresh();
    await c.append("facts", [{ role: "user", content: "likes tea 🍵" }], { agent: agent("writer", wf) });
    await assert.rejects(
      c.append("facts", [{ role: "user", content: "no" }], { agent: agent("reader", wf) }),
      (e: unknown) => e instanceof PermissionDeniedError && e.code === 7 && /read-only/.test(e.details));
    await assert.rejects(c.clear("facts", { agent: agent("reader", wf) }), PermissionDeniedError);
    await assert.rejects(c.append("facts", [{ role: "user", content: "no" }], { key: `facts-u-${wf}` }),
      PermissionDeniedError); // access.direct: read-only
    const seen = await c.readAll("facts", { agent: agent("reader", wf), view: "raw" });
    assert.deepEqual(seen.map((m) => m.content), ["likes tea 🍵"]);
    const direct = await c.readAll("facts", { key: `facts-u-${wf}`, view: "raw" });
    assert.deepEqual(direct.map((m) => m.id), seen.map((m) => m.id));
  });

  it("reads the context view within the budget, and a smaller max_tokens", async () => {
    const a = agent("writer", fresh());
    await c.append("chat", [{ role: "system", content: "You are terse." }], { agent: a });
    for (let i = 0; i < 6; i++) {
      await c.append("chat", [{ role: "user", content: `question ${i} ${"word ".repeat(20)}` }], { agent: a });
    }
    const ctx = await c.readAll("chat", { agent: a });
    assert.equal(ctx[0].content, "You are terse.");
    assert.ok(ctx.reduce((s, m) => s + m.tokenCount, 0) <= 300);
    const small = await c.readAll("chat", { agent: a, view: "context", maxTokens: 60 });
    assert.ok(small.reduce((s, m) => s + m.tokenCount, 0) <= 60);
    assert.ok(small.length < ctx.length);
  });

  it("plans a flush with dryRun, then applies it and leaves a summary", async () => {
    const a = agent("writer", fresh());
    const batch = Array.from({ length: 8 }, (_, i) => ({ role: "user" as const, content: `note ${i} ${"detail ".repeat(8)}` }));
    await c.append("chat", batch, { agent: a });
    const before = await c.stats("chat", { agent: a });
    const plan = await c.flush("chat", { agent: a, dryRun: true });
    assert.equal(plan.applied, false);
    assert.ok(plan.removedSeqs.length > 0);
    assert.deepEqual(await c.stats("chat", { agent: a }), before);
    const done = await c.flush("chat", { agent: a });
    assert.equal(done.applied, true);
    assert.deepEqual(done.removedSeqs, plan.removedSeqs);
    const after = await c.stats("chat", { agent: a });
    assert.equal(after.flushCount, before.flushCount + 1n);
    const ctx = await c.readAll("chat", { agent: a });
    assert.ok(ctx.some((m) => m.kind === MessageKind.MESSAGE_KIND_SUMMARY));
  });

  it("ends a workflow by deleting its workflow-scoped instances", async () => {
    const wf = fresh();
    await c.append("chat", [{ role: "user", content: "temporary" }], { agent: agent("writer", wf) });
    assert.equal(await c.endWorkflow(wf), 1n);
    assert.deepEqual(await c.readAll("chat", { agent: agent("writer", wf), view: "raw" }), []);
    assert.equal(await c.endWorkflow(wf), 0n);
  });

  it("watches appends, flushes and clears, resuming from afterSeq", async () => {
    const a = agent("writer", fresh());
    await c.append("chat", [{ role: "user", content: "backlog 📜" }], { agent: a });
    const events: WatchResponse[] = [];
    let subscribed!: () => void;
    const backlogSeen = new Promise<void>((r) => { subscribed = r; });
    const watching = (async () => {
      for await (const ev of c.watch("chat", { agent: agent("reader", (a.context as any).workflow.id), afterSeq: 0 })) {
        events.push(ev);
        subscribed();
        if (ev.cleared) break; // breaking out cancels the stream
      }
    })();
    // The backlog arrives once the watch is live; a Clear before that would end the instance unseen.
    await backlogSeen;
    await c.append("chat", [{ role: "user", content: "live ⚡" }], { agent: a });
    await c.clear("chat", { agent: a });
    await watching;
    const appended = events.flatMap((e) => e.appended?.messages ?? []);
    assert.deepEqual(appended.map((m) => [m.seq, m.content]), [[1n, "backlog 📜"], [2n, "live ⚡"]]);
    assert.ok(events.at(-1)?.cleared);
  });

  it("stops a watch when its AbortSignal fires", async () => {
    const a = agent("writer", fresh());
    await c.append("chat", [{ role: "user", content: "one" }], { agent: a });
    const ctl = new AbortController();
    const seen: bigint[] = [];
    for await (const ev of c.watch("chat", { agent: a, signal: ctl.signal })) {
      for (const m of ev.appended?.messages ?? []) seen.push(m.seq);
      ctl.abort();
    }
    assert.deepEqual(seen, [1n]);
  });
});
