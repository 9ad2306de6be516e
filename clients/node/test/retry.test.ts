// Retry, deadline and metadata behaviour against an in-process grpc-js server that injects
// failures (a real gRPC server; the daemon cannot be made to fail on cue).
import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { Metadata, type sendUnaryData, Server, ServerCredentials, type ServerUnaryCall, status } from "@grpc/grpc-js";
import {
  DeadlineExceededError, MemoryClient, type MemoryClientOptions, UnavailableError,
} from "../src";
import {
  AppendResponse, ClearResponse, FlushResponse, GetStatsResponse, MemoryServiceService, ReadResponse, WatchResponse,
} from "../src/gen/memoryd/v1/memory";

interface Flaky {
  failures: number; calls: number; auth?: string; midRead?: boolean;
  /** Metadata of each call, by method. */
  seen?: Record<string, Record<string, string>>;
  /** Called when a call reaches the server (GetHealth, which never answers, and a held Read). */
  arrived?: () => void;
  holdRead?: boolean;
}

function record(f: Flaky, method: string, md: Metadata) {
  f.seen ??= {};
  f.seen[method] = Object.fromEntries(Object.entries(md.getMap()).map(([k, v]) => [k, v.toString()]));
}

const unavailable = { code: status.UNAVAILABLE, details: "store down" };

function unary(f: Flaky, ok: object, method: string) {
  return (call: ServerUnaryCall<unknown, unknown>, cb: sendUnaryData<unknown>) => {
    f.calls++;
    record(f, method, call.metadata);
    f.auth = call.metadata.get("authorization")[0]?.toString();
    if (f.calls <= f.failures) cb(unavailable, null);
    else cb(null, ok);
  };
}

async function serveFlaky(f: Flaky, bind = "127.0.0.1:0"): Promise<{ target: string; server: Server }> {
  const server = new Server();
  const unimplemented = (_: unknown, cb: sendUnaryData<unknown>) => cb({ code: status.UNIMPLEMENTED }, null);
  server.addService(MemoryServiceService, {
    append: unary(f, AppendResponse.fromPartial({ results: [{ seq: 1n }] }), "append"),
    getStats: unary(f, GetStatsResponse.fromPartial({ stats: { messageCount: 7n } }), "getStats"),
    flush: unary(f, FlushResponse.fromPartial({}), "flush"),
    clear: unary(f, ClearResponse.fromPartial({ removedCount: 0n }), "clear"),
    getHealth: (call: ServerUnaryCall<unknown, unknown>) => {
      record(f, "getHealth", call.metadata);
      f.arrived?.(); // never answers: the client's deadline (or abort) must end the call
    },
    read: (call: any) => {
      f.calls++;
      record(f, "read", call.metadata);
      if (f.holdRead) {
        call.write(ReadResponse.fromPartial({ messages: [{ seq: 1n }] }));
        return; // then holds the stream open until the client goes
      }
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
    resolveAgent: unimplemented, listResources: unimplemented, endWorkflow: unimplemented,
    watch: (call: any) => {
      record(f, "watch", call.metadata);
      call.write(WatchResponse.fromPartial({ cleared: {} }));
    },
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

describe("per-call metadata and AbortSignal", () => {
  const ref = { key: "k" };
  const md = { "x-request-id": "req-42", traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01" };

  it("sends the caller's metadata on every call, next to the bearer token", async () => {
    const f: Flaky = { failures: 0, calls: 0 };
    await withFlaky(f, { token: "s3cret", timeoutMs: 2_000 }, async (c) => {
      await c.append("m", [{ role: "user", content: "x" }], ref, { metadata: md });
      await c.stats("m", ref, { metadata: md });
      await c.flush("m", { ...ref, metadata: md });
      await c.clear("m", ref, { metadata: md });
      await c.readAll("m", { ...ref, metadata: md });
      for await (const ev of c.watch("m", { ...ref, metadata: md })) {
        assert.ok(ev.cleared);
        break;
      }
      const asMetadata = new Metadata();
      asMetadata.set("x-request-id", "req-43");
      await c.stats("m", ref, { metadata: asMetadata });
      assert.equal(f.seen?.getStats["x-request-id"], "req-43");
    });
    for (const method of ["append", "flush", "clear", "read", "watch"]) {
      assert.equal(f.seen?.[method]["x-request-id"], "req-42", method);
      assert.equal(f.seen?.[method].traceparent, md.traceparent, method);
      assert.equal(f.seen?.[method].authorization, "Bearer s3cret", method);
    }
  });

  it("rejects with the signal's reason when aborted during a call, and does not retry", async () => {
    const ac = new AbortController();
    const f: Flaky = { failures: 0, calls: 0, arrived: () => ac.abort() };
    await withFlaky(f, { timeoutMs: 60_000 }, async (c) => {
      await assert.rejects(c.health(undefined, undefined, { signal: ac.signal }), (e: unknown) =>
        e instanceof Error && e.name === "AbortError" && e === ac.signal.reason);
    });
  });

  it("rejects at once when already aborted, without calling", async () => {
    const f: Flaky = { failures: 0, calls: 0 };
    await withFlaky(f, {}, async (c) => {
      const reason = new Error("user went away");
      await assert.rejects(c.stats("m", ref, { signal: AbortSignal.abort(reason) }), (e) => e === reason);
      await assert.rejects(c.readAll("m", { ...ref, signal: AbortSignal.abort(reason) }), (e) => e === reason);
    });
    assert.equal(f.calls, 0);
  });

  it("stops a retry backoff when aborted", async () => {
    const ac = new AbortController();
    const f: Flaky = { failures: 100, calls: 0 };
    const slow = { attempts: 4, initialBackoffMs: 600_000, maxBackoffMs: 600_000, multiplier: 1 };
    // The client listens on the signal once per attempt, then once in the backoff: abort then.
    const listen = ac.signal.addEventListener.bind(ac.signal);
    let listeners = 0;
    ac.signal.addEventListener = ((...args: Parameters<typeof listen>) => {
      listen(...args);
      if (++listeners === 2) ac.abort();
    }) as typeof listen;
    await withFlaky(f, { retry: slow }, async (c) => {
      await assert.rejects(c.stats("m", ref, { signal: ac.signal }), { name: "AbortError" });
    });
    assert.equal(f.calls, 1);
  });

  it("aborting a read mid-stream rejects the iteration with the signal's reason", async () => {
    const ac = new AbortController();
    const f: Flaky = { failures: 0, calls: 0, holdRead: true };
    await withFlaky(f, {}, async (c) => {
      const seen: bigint[] = [];
      await assert.rejects((async () => {
        for await (const m of c.read("m", { ...ref, signal: ac.signal })) {
          seen.push(m.seq);
          ac.abort(); // the server holds the stream open: only the abort can end it
        }
      })(), { name: "AbortError" });
      assert.deepEqual(seen, [1n]);
    });
  });

  it("aborting a watch ends it quietly", async () => {
    const ac = new AbortController();
    const f: Flaky = { failures: 0, calls: 0 };
    await withFlaky(f, {}, async (c) => {
      const events = [];
      for await (const ev of c.watch("m", { ...ref, signal: ac.signal })) {
        events.push(ev);
        ac.abort();
      }
      assert.equal(events.length, 1);
    });
  });
});
