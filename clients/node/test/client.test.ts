// The Node client against a real `memoryd serve` on the built-in default project.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import {
  AbortedError, InvalidArgumentError, MemoryClient, MemorydError, MessageKind, NotFoundError, Role, newIdempotencyKey,
} from "../src";
import { type Daemon, startDaemon } from "./daemon";

describe("MemoryClient on the default project", () => {
  let daemon: Daemon;
  let c: MemoryClient;
  before(async () => {
    daemon = await startDaemon();
    c = new MemoryClient(daemon.address);
  });
  after(async () => {
    c?.close();
    await daemon?.stop();
  });

  it("appends a batch and reads it back byte for byte, in order, with server-set fields", async () => {
    const contents = ["héllo wörld", "emoji 🧠🚀 and CJK 記憶", "plain"];
    const res = await c.append("default", [
      { role: "system", content: contents[0], priority: 0 },
      { role: "user", content: contents[1], metadata: { lang: "mixed" } },
      { role: Role.ROLE_ASSISTANT, content: contents[2], contentType: "text" },
    ], { key: "node-roundtrip" });
    assert.deepEqual(res.results.map((r) => r.seq), [1n, 2n, 3n]);
    assert.ok(res.results.every((r) => r.persisted && r.id !== ""));
    assert.equal(res.replayed, false);
    assert.equal(res.stats?.messageCount, 3n);

    const got = await c.readAll("default", { key: "node-roundtrip", view: "raw" });
    assert.deepEqual(got.map((m) => Buffer.from(m.content, "utf8")), contents.map((s) => Buffer.from(s, "utf8")));
    assert.deepEqual(got.map((m) => m.seq), [1n, 2n, 3n]);
    assert.deepEqual(got.map((m) => m.id), res.results.map((r) => r.id));
    assert.deepEqual(got.map((m) => m.role), [Role.ROLE_SYSTEM, Role.ROLE_USER, Role.ROLE_ASSISTANT]);
    assert.equal(got[1].metadata.lang, "mixed");
    assert.ok(got.every((m) => m.kind === MessageKind.MESSAGE_KIND_MESSAGE && m.tokenCount > 0));
    assert.ok(got[0].createdAt && got[0].createdAt.seconds > 0n);
  });

  it("replays an append retried with the same idempotency key and stores nothing new", async () => {
    const key = newIdempotencyKey();
    const batch = [{ role: "user" as const, content: "only once ✅" }];
    const first = await c.append("default", batch, { key: "node-idem" }, { idempotencyKey: key });
    const again = await c.append("default", batch, { key: "node-idem" }, { idempotencyKey: key });
    assert.equal(again.replayed, true);
    assert.deepEqual(again.results, first.results);
    const got = await c.readAll("default", { key: "node-idem", view: "raw" });
    assert.deepEqual(got.map((m) => m.content), ["only once ✅"]);
  });

  it("gives each append its own idempotency key by default, so equal batches are both stored", async () => {
    await c.append("default", [{ role: "user", content: "same" }], { key: "node-auto" });
    const second = await c.append("default", [{ role: "user", content: "same" }], { key: "node-auto" });
    assert.equal(second.replayed, false);
    assert.equal((await c.stats("default", { key: "node-auto" })).messageCount, 2n);
  });

  it("reads after a seq, with a limit, across many stream items", async () => {
    const batch = Array.from({ length: 25 }, (_, i) => ({ role: "user" as const, content: `m${i + 1}` }));
    await c.append("default", batch, { key: "node-paging" });
    const tail = await c.readAll("default", { key: "node-paging", view: "raw", afterSeq: 20 });
    assert.deepEqual(tail.map((m) => m.content), ["m21", "m22", "m23", "m24", "m25"]);
    const page = await c.readAll("default", { key: "node-paging", view: "raw", afterSeq: 5n, limit: 3 });
    assert.deepEqual(page.map((m) => m.seq), [6n, 7n, 8n]);
    const chunked = await c.readAll("default", { key: "node-paging", view: "raw", chunkSize: 4 });
    assert.deepEqual(chunked.map((m) => m.seq), batch.map((_, i) => BigInt(i + 1)));
    // Breaking out early cancels the stream mid-way; the client (and the daemon) stay usable.
    await c.append("default", Array.from({ length: 500 }, (_, i) => ({ role: "user" as const, content: `x${i}` })),
      { key: "node-paging" });
    for await (const m of c.read("default", { key: "node-paging", view: "raw", chunkSize: 1 })) {
      assert.equal(m.seq, 1n);
      break;
    }
    assert.equal((await c.stats("default", { key: "node-paging" })).lastSeq, 525n);
  });

  it("folds under a summary it wrote itself (planFlush/applyFlush); a stale plan is AbortedError", async () => {
    const target = { key: "node-external" };
    await c.append("default", Array.from({ length: 10 }, (_, i) => ({ role: "user" as const, content: `e${i}` })),
      target);
    const plan = await c.planFlush("default", target);
    assert.deepEqual(plan.seqs, [1n, 2n, 3n]);
    assert.deepEqual(plan.messages.map((m) => m.content), ["e0", "e1", "e2"]);
    assert.equal(plan.currentSummary, "");
    assert.ok(plan.summaryMaxTokens > 0);
    await c.append("default", [{ role: "user", content: "while the model wrote" }], target);
    const done = await c.applyFlush("default", plan.planToken, "e0 to e2, summed up", target);
    assert.deepEqual(done.removedSeqs, [1n, 2n, 3n]);
    assert.equal(done.summary?.content, "e0 to e2, summed up");
    assert.equal(done.stats?.messageCount, 8n);
    await assert.rejects(c.applyFlush("default", plan.planToken, "again", target), AbortedError);
    await assert.rejects(c.applyFlush("default", "pt1.garbled.token", "s", target), InvalidArgumentError);
  });

  it("reports stats and health", async () => {
    await c.append("default", [{ role: "user", content: "count me" }], { key: "node-stats" });
    const s = await c.stats("default", { key: "node-stats" });
    assert.equal(s.messageCount, 1n);
    assert.ok(s.tokenCount > 0n && s.instanceId !== "" && s.encoding !== "");
    const h = await c.health();
    assert.equal(h.healthy, true);
    assert.equal(h.store, "embedded");
    const hi = await c.health("default", { key: "node-stats" });
    assert.equal(hi.instance?.stats?.messageCount, 1n);
  });

  it("clears an instance and says how many messages it removed", async () => {
    await c.append("default", [{ role: "user", content: "a" }, { role: "user", content: "b" }], { key: "node-clear" });
    assert.equal(await c.clear("default", { key: "node-clear" }), 2n);
    assert.deepEqual(await c.readAll("default", { key: "node-clear", view: "raw" }), []);
    assert.equal(await c.clear("default", { key: "node-clear" }), 0n);
  });

  it("raises typed errors carrying the status code and the server's message", async () => {
    await assert.rejects(c.append("default", [{ role: "user", content: "x" }], { key: "" }), (err: unknown) => {
      assert.ok(err instanceof InvalidArgumentError && err instanceof MemorydError);
      assert.equal(err.code, 3);
      assert.equal(err.codeName, "INVALID_ARGUMENT");
      assert.match(err.details, /key/);
      return true;
    });
    await assert.rejects(c.stats("no-such-memory", { key: "k" }), NotFoundError);
    const stream = c.read("no-such-memory", { key: "k", view: "raw" });
    await assert.rejects(stream.next(), NotFoundError);
  });

  it("refuses content that would be mangled or fail in the encoder, before sending anything", async () => {
    const key = "node-invalid";
    const bad: [unknown, RegExp][] = [
      [{ role: "user", content: "half an emoji \uD83E" }, /messages\[0\]\.content: is not valid Unicode/],
      [{ role: "user", content: "\uDC00 alone" }, /messages\[0\]\.content: is not valid Unicode/],
      [{ role: "user", content: 42 }, /messages\[0\]\.content: must be a string/],
      [{ role: "user", content: "x", metadata: { k: "\uD800" } }, /metadata\["k"\]: is not valid Unicode/],
      [{ role: "user", content: "x", metadata: { k: 1 } }, /metadata\["k"\]: must be a string/],
      [{ role: "user", content: "x", priority: -1 }, /messages\[0\]\.priority: must be an integer/],
      [{ role: "user", content: "x", priority: 1.5 }, /messages\[0\]\.priority: must be an integer/],
      [{ role: "user", content: "x", priority: 2 ** 31 }, /messages\[0\]\.priority: must be an integer/],
      [{ role: "user", content: "x", persist: "yes" }, /messages\[0\]\.persist: must be a boolean/],
    ];
    for (const [msg, why] of bad) {
      await assert.rejects(c.append("default", [msg as never], { key }), (err: unknown) => {
        assert.ok(err instanceof InvalidArgumentError, String(err));
        assert.match(err.details, why);
        return true;
      });
    }
    await assert.rejects(c.append("default", [{ role: "user", content: "x" }], { key: "k\uD800" }), InvalidArgumentError);
    assert.equal((await c.stats("default", { key })).messageCount, 0n);
    // A well-formed pair is fine, and arrives byte for byte.
    await c.append("default", [{ role: "user", content: "\uD83E\uDDE0" }], { key });
    assert.deepEqual((await c.readAll("default", { key, view: "raw" })).map((m) => m.content), ["🧠"]);
  });

  it("answers an invalid limit, maxTokens, chunkSize or afterSeq with a client-side InvalidArgumentError", async () => {
    const key = "node-limits";
    const cases: [object, RegExp][] = [
      [{ limit: -1 }, /^limit: must be an integer in 0\.\.4294967295/],
      [{ limit: 2 ** 32 }, /^limit: /],
      [{ limit: 2.5 }, /^limit: /],
      [{ limit: Number.NaN }, /^limit: /],
      [{ maxTokens: -5 }, /^maxTokens: /],
      [{ chunkSize: 1e12 }, /^chunkSize: /],
      [{ afterSeq: -1 }, /^afterSeq: /],
      [{ afterSeq: 2n ** 64n }, /^afterSeq: /],
      [{ afterSeq: 0.5 }, /^afterSeq: /],
    ];
    for (const [opts, why] of cases) {
      await assert.rejects(c.readAll("default", { key, ...opts }), (err: unknown) => {
        assert.ok(err instanceof InvalidArgumentError && err.codeName === "INVALID_ARGUMENT", String(err));
        assert.match(err.details, why);
        return true;
      });
    }
    await assert.rejects(c.watch("default", { key, afterSeq: -1 }).next(), InvalidArgumentError);
    assert.deepEqual(await c.readAll("default", { key, limit: 2 ** 32 - 1, afterSeq: 2n ** 64n - 1n }), []);
  });

  it("reads the history view and deletes single messages, with ifLastSeq", async () => {
    const key = "node-history";
    await c.append("default", ["a", "b", "c", "d", "e"].map((content) => ({ role: "user" as const, content })), { key });
    const folded = await c.flush("default", { key });
    assert.ok(folded.applied && folded.removedSeqs.length > 0);
    const history = await c.readAll("default", { key, view: "history" });
    assert.deepEqual(history.map((m) => m.seq), [1n, 2n, 3n, 4n, 5n]);
    assert.deepEqual(history.map((m) => m.folded), history.map((m) => folded.removedSeqs.includes(m.seq)));
    const stats = await c.stats("default", { key });
    assert.equal(stats.historyMessages, BigInt(folded.removedSeqs.length));
    assert.ok(stats.summaryThroughSeq > 0n);

    const res = await c.deleteMessages("default", [1, 5n, 99], { key });
    assert.deepEqual(res.deletedSeqs, [1n, 5n]);
    await assert.rejects(c.deleteMessages("default", [4], { key, ifLastSeq: 4 }), AbortedError);
    const popped = await c.deleteMessages("default", [4], { key, ifLastSeq: 5 });
    assert.deepEqual(popped.deletedSeqs, [4n]);
    assert.deepEqual((await c.readAll("default", { key, view: "history" })).map((m) => m.seq), [2n, 3n]);
    await assert.rejects(c.deleteMessages("default", [-1], { key }), InvalidArgumentError);
  });

  it("refuses ambiguous addressing and unknown message fields before calling", async () => {
    await assert.rejects(c.stats("default", {} as never), TypeError);
    await assert.rejects(c.stats("default", { key: "k", agent: { agentId: "a" } } as never), TypeError);
    await assert.rejects(
      c.append("default", [{ role: "user", content: "x", colour: "red" } as never], { key: "k" }), /unknown message fields/);
  });
});
