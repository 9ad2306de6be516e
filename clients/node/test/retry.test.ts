// Retry, deadline and metadata behaviour against an in-process grpc-js server that injects
// failures (a real gRPC server; the daemon cannot be made to fail on cue).
import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { type sendUnaryData, Server, ServerCredentials, type ServerUnaryCall, status } from "@grpc/grpc-js";
import {
  DeadlineExceededError, MemoryClient, type MemoryClientOptions, UnavailableError,
} from "../src";
import {
  AppendResponse, ClearResponse, FlushResponse, GetStatsResponse, MemoryServiceService, ReadResponse,
} from "../src/gen/memoryd/v1/memory";

interface Flaky { failures: number; calls: number; auth?: string; midRead?: boolean }

const unavailable = { code: status.UNAVAILABLE, details: "store down" };

function unary(f: Flaky, ok: object) {
  return (call: ServerUnaryCall<unknown, unknown>, cb: sendUnaryData<unknown>) => {
    f.calls++;
    f.auth = call.metadata.get("authorization")[0]?.toString();
    if (f.calls <= f.failures) cb(unavailable, null);
    else cb(null, ok);
  };
}

async function serveFlaky(f: Flaky, bind = "127.0.0.1:0"): Promise<{ target: string; server: Server }> {
  const server = new Server();
  const unimplemented = (_: unknown, cb: sendUnaryData<unknown>) => cb({ code: status.UNIMPLEMENTED }, null);
  server.addService(MemoryServiceService, {
    append: unary(f, AppendResponse.fromPartial({ results: [{ seq: 1n }] })),
    getStats: unary(f, GetStatsResponse.fromPartial({ stats: { messageCount: 7n } })),
    flush: unary(f, FlushResponse.fromPartial({})),
    clear: unary(f, ClearResponse.fromPartial({ removedCount: 0n })),
    getHealth: () => { /* never answers: the client's deadline must end the call */ },
    read: (call: any) => {
      f.calls++;
      if (f.midRead) {
        call.write(ReadResponse.fromPartial({ messages: [{ seq: 1n }] }));
        call.emit("error", unavailable);
        return;
      }
      if (f.calls <= f.failures) {
        call.emit("error", unavailable);
        return;
      }
      call.write(ReadResponse.fromPartial({ messages: [{ seq: 1n }, { seq: 2n }] }));
      call.end();
    },
    resolveAgent: unimplemented, listResources: unimplemented, endWorkflow: unimplemented, watch: unimplemented,
  } as any);
  const port = await new Promise<number>((ok, fail) =>
    server.bindAsync(bind, ServerCredentials.createInsecure(), (err, p) => (err ? fail(err) : ok(p))));
  return { target: bind.startsWith("unix:") ? bind : `127.0.0.1:${port}`, server };
}

const fast = { attempts: 4, initialBackoffMs: 1, maxBackoffMs: 4, multiplier: 2 };

async function withFlaky(f: Flaky, opts: MemoryClientOptions, body: (c: MemoryClient) => Promise<void>, bind?: string) {
  const { target, server } = await serveFlaky(f, bind);
  const c = new MemoryClient(target, { retry: fast, ...opts });
  try {
    await body(c);
  } finally {
    c.close();
    server.forceShutdown();
  }
}

describe("retries of UNAVAILABLE", () => {
  const ref = { key: "k" };
  const msg = [{ role: "user" as const, content: "x" }];

  it("retries an append carrying the automatic idempotency key", async () => {
    const f = { failures: 2, calls: 0 };
    await withFlaky(f, {}, async (c) => { await c.append("m", msg, ref); });
    assert.equal(f.calls, 3);
  });

  it("never retries an append without an idempotency key", async () => {
    const f = { failures: 2, calls: 0 };
    await withFlaky(f, { autoIdempotency: false }, async (c) => {
      await assert.rejects(c.append("m", msg, ref), UnavailableError);
    });
    assert.equal(f.calls, 1);
  });

  it("retries an append with an explicit key even without automatic keys", async () => {
    const f = { failures: 1, calls: 0 };
    await withFlaky(f, { autoIdempotency: false }, async (c) => {
      await c.append("m", msg, ref, { idempotencyKey: "k1" });
    });
    assert.equal(f.calls, 2);
  });

  it("gives up on stats after the policy's attempts, with a typed error", async () => {
    const f = { failures: 100, calls: 0 };
    await withFlaky(f, {}, async (c) => {
      await assert.rejects(c.stats("m", ref), (e: unknown) => e instanceof UnavailableError && e.details === "store down");
    });
    assert.equal(f.calls, 4);
  });

  it("does not retry a flush, but retries a dry run and a clear", async () => {
    const f = { failures: 1, calls: 0 };
    await withFlaky(f, {}, async (c) => {
      await assert.rejects(c.flush("m", { ...ref }), UnavailableError);
      f.calls = 0;
      f.failures = 1;
      await c.flush("m", { ...ref, dryRun: true });
      assert.equal(f.calls, 2);
      f.calls = 0;
      await c.clear("m", ref);
      assert.equal(f.calls, 2);
    });
  });

  it("retries a read before its first item, never after", async () => {
    const f: Flaky = { failures: 3, calls: 0 };
    await withFlaky(f, {}, async (c) => {
      assert.deepEqual((await c.readAll("m", ref)).map((m) => m.seq), [1n, 2n]);
    });
    assert.equal(f.calls, 4);
    const mid: Flaky = { failures: 0, calls: 0, midRead: true };
    await withFlaky(mid, {}, async (c) => {
      const seen: bigint[] = [];
      await assert.rejects((async () => { for await (const m of c.read("m", ref)) seen.push(m.seq); })(), UnavailableError);
      assert.deepEqual(seen, [1n]);
    });
    assert.equal(mid.calls, 1);
  });
});

describe("deadlines, metadata, targets", () => {
  it("ends a call at the client's default deadline and sends the bearer token", async () => {
    const f: Flaky = { failures: 0, calls: 0 };
    await withFlaky(f, { timeoutMs: 100, token: "s3cret" }, async (c) => {
      await assert.rejects(c.health(), DeadlineExceededError);
      assert.equal((await c.stats("m", { key: "k" })).messageCount, 7n);
      assert.equal(f.auth, "Bearer s3cret");
    });
  });

  it("dials a unix socket", async () => {
    const sock = join(mkdtempSync(join(tmpdir(), "memoryd-node-")), "m.sock");
    await withFlaky({ failures: 0, calls: 0 }, {}, async (c) => {
      assert.equal((await c.stats("m", { key: "k" })).messageCount, 7n);
    }, `unix:${sock}`);
  });
});
