// MemoryClient: the Node client of one memoryd daemon (same operations as the Python client).
import { randomUUID } from "node:crypto";
import {
  type CallOptions,
  type ChannelCredentials,
  type ClientReadableStream,
  credentials as grpcCredentials,
  Metadata,
  type ServiceError,
  status,
} from "@grpc/grpc-js";
import {
  type AppendResponse,
  type AppendRequest,
  type ApplyFlushResponse,
  type DeleteMessagesRequest,
  type DeleteMessagesResponse,
  type FlushResponse,
  type GetHealthResponse,
  type InstanceStats,
  type ListResourcesResponse,
  type MemoryRef,
  MemoryServiceClient,
  type Message,
  type PlanFlushResponse,
  ReadView,
  type ResolveAgentResponse,
  type WatchResponse,
} from "./gen/memoryd/v1/memory";
import { checkText, checkUint32, checkUint64 } from "./check";
import { fromServiceError, isServiceError, MemorydError } from "./errors";
import { type MessageInput, makeMessage } from "./messages";

export { checkUint32, checkUint64 } from "./check";

export const DEFAULT_TIMEOUT_MS = 5_000;
export const DEFAULT_READ_TIMEOUT_MS = 60_000;
export const MAX_MESSAGE_BYTES = 64 * 1024 * 1024;

/** Address an instance through an agent's configured reference (its mode is enforced by the daemon). */
export interface Agent {
  agentId: string;
  context?: Record<string, unknown>;
}

/** Exactly one of `key` (a direct instance key) and `agent`. */
export type Target = { key: string; agent?: undefined } | { agent: Agent; key?: undefined };

/** Retries of UNAVAILABLE: only reads (before the first item), appends with an idempotency key,
 * and calls that are safe to repeat (stats, health, clear, dry-run flush, resolve, list, end). */
export interface RetryPolicy {
  attempts: number;
  initialBackoffMs: number;
  maxBackoffMs: number;
  multiplier: number;
}
export const DEFAULT_RETRY: RetryPolicy = { attempts: 4, initialBackoffMs: 50, maxBackoffMs: 1000, multiplier: 2 };

export interface MemoryClientOptions {
  /** Deadline of unary calls, per attempt (default 5 s). */
  timeoutMs?: number;
  /** Deadline of a whole Read stream, per attempt (default 60 s). */
  readTimeoutMs?: number;
  retry?: Partial<RetryPolicy>;
  /** Give every append a fresh idempotency key so that retries never store twice (default true). */
  autoIdempotency?: boolean;
  /** Bearer token sent as `authorization` metadata. */
  token?: string;
  /** TLS credentials; default insecure (the daemon is pod-local). */
  credentials?: ChannelCredentials;
}

/** "context" (what fits the budget), "raw" (every live message) or "history" (every kept
 * message, folded or live, each with `folded` set). */
export type View = "context" | "raw" | "history";
const VIEWS: Record<View, ReadView> = {
  context: ReadView.READ_VIEW_CONTEXT,
  raw: ReadView.READ_VIEW_RAW,
  history: ReadView.READ_VIEW_HISTORY,
};

/** Options every call takes. */
export interface RequestOptions {
  /** Aborting cancels the call (and any retry backoff); the call then rejects with `signal.reason`
   * (an `AbortError` DOMException unless `abort(reason)` gave one). A Watch ends quietly instead. */
  signal?: AbortSignal;
  /** Extra request metadata for this call, e.g. `{ "x-request-id": id, traceparent }`. */
  metadata?: Record<string, string> | Metadata;
}

export interface AppendOptions extends RequestOptions {
  idempotencyKey?: string;
  timeoutMs?: number;
}

export interface ReadOptions extends RequestOptions {
  view?: View;
  afterSeq?: number | bigint;
  limit?: number;
  maxTokens?: number;
  chunkSize?: number;
  timeoutMs?: number;
}

export interface WatchOptions extends RequestOptions {
  afterSeq?: number | bigint;
}

export function makeRef(memoryId: string, target: Target): MemoryRef {
  const hasKey = target.key !== undefined;
  const hasAgent = target.agent !== undefined;
  if (hasKey === hasAgent) throw new TypeError("pass exactly one of key and agent");
  checkText("ref.memoryId", memoryId);
  if (hasKey) return { memoryId, key: checkText("ref.key", target.key) };
  const agent = target.agent as Agent;
  return { memoryId, agent: { agentId: agent.agentId, context: agent.context ?? {} } };
}

export function newIdempotencyKey(): string {
  return randomUUID().replaceAll("-", "");
}

function* backoffs(p: RetryPolicy): Generator<number> {
  let delay = p.initialBackoffMs;
  for (let i = 0; i < p.attempts - 1; i++) {
    yield delay;
    delay = Math.min(delay * p.multiplier, p.maxBackoffMs);
  }
}

/** Wait ms, or reject with the signal's reason as soon as it aborts. */
function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

type Unary<Req, Res> = (
  req: Req, md: Metadata, opts: Partial<CallOptions>, cb: (err: ServiceError | null, res: Res) => void,
) => { cancel(): void };

/**
 * Client of one memoryd daemon. `target` is a gRPC target: `127.0.0.1:50051` or
 * `unix:/path/memoryd.sock`. Call `close()` when done.
 */
export class MemoryClient {
  private readonly stub: MemoryServiceClient;
  private readonly timeoutMs: number;
  private readonly readTimeoutMs: number;
  private readonly retry: RetryPolicy;
  private readonly autoIdempotency: boolean;
  private readonly token?: string;

  constructor(target = "127.0.0.1:50051", opts: MemoryClientOptions = {}) {
    this.stub = new MemoryServiceClient(target, opts.credentials ?? grpcCredentials.createInsecure(), {
      "grpc.max_receive_message_length": MAX_MESSAGE_BYTES,
      "grpc.max_send_message_length": MAX_MESSAGE_BYTES,
    });
    this.timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.readTimeoutMs = opts.readTimeoutMs ?? DEFAULT_READ_TIMEOUT_MS;
    this.retry = { ...DEFAULT_RETRY, ...(opts.retry ?? {}) };
    this.autoIdempotency = opts.autoIdempotency ?? true;
    this.token = opts.token;
  }

  close(): void {
    this.stub.close();
  }

  /** The call's metadata: the client's token, then the caller's per-call entries. */
  private metadata(extra?: Record<string, string> | Metadata): Metadata {
    const md = new Metadata();
    if (this.token) md.set("authorization", `Bearer ${this.token}`);
    if (extra instanceof Metadata) md.merge(extra);
    else if (extra) for (const [k, v] of Object.entries(extra)) md.set(k, v);
    return md;
  }

  private unaryOnce<Req, Res>(fn: Unary<Req, Res>, req: Req, timeoutMs: number, o: RequestOptions): Promise<Res> {
    return new Promise((resolve, reject) => {
      const signal = o.signal;
      if (signal?.aborted) return reject(signal.reason);
      const onAbort = () => {
        reject(signal?.reason); // first: the CANCELLED callback that follows is then ignored
        call.cancel();
      };
      const call = fn.call(this.stub, req, this.metadata(o.metadata), { deadline: Date.now() + timeoutMs },
        (err, res) => {
          signal?.removeEventListener("abort", onAbort);
          if (err) reject(err);
          else resolve(res);
        });
      signal?.addEventListener("abort", onAbort, { once: true });
    });
  }

  private async unary<Req, Res>(
    fn: Unary<Req, Res>, req: Req, retry: boolean, o: RequestOptions = {}, timeoutMs?: number,
  ): Promise<Res> {
    const delays = retry ? backoffs(this.retry) : backoffs({ ...this.retry, attempts: 1 });
    for (;;) {
      try {
        return await this.unaryOnce(fn, req, timeoutMs ?? this.timeoutMs, o);
      } catch (err) {
        if (!isServiceError(err)) throw err;
        if (err.code === status.UNAVAILABLE) {
          const next = delays.next();
          if (!next.done) {
            await sleep(next.value, o.signal);
            continue;
          }
        }
        throw fromServiceError(err);
      }
    }
  }

  /** Append a batch atomically; returns seqs, ids and the instance's new totals. */
  async append(memoryId: string, messages: readonly MessageInput[], target: Target, opts: AppendOptions = {}): Promise<AppendResponse> {
    let idem = opts.idempotencyKey;
    if (idem === undefined && this.autoIdempotency) idem = newIdempotencyKey();
    const req: AppendRequest = {
      ref: makeRef(memoryId, target), messages: messages.map((m, i) => makeMessage(m, i)), idempotencyKey: idem ?? "",
    };
    return this.unary(this.stub.append as Unary<AppendRequest, AppendResponse>, req, Boolean(idem), opts, opts.timeoutMs);
  }

  /** Yield messages oldest first. UNAVAILABLE is retried until the first stream item arrives. */
  async *read(memoryId: string, target: Target & ReadOptions): AsyncGenerator<Message, void, undefined> {
    const req = {
      ref: makeRef(memoryId, target),
      view: VIEWS[target.view ?? "context"] ?? ReadView.READ_VIEW_CONTEXT,
      afterSeq: checkUint64("afterSeq", target.afterSeq ?? 0),
      limit: checkUint32("limit", target.limit ?? 0),
      maxTokens: checkUint32("maxTokens", target.maxTokens ?? 0),
      chunkSize: checkUint32("chunkSize", target.chunkSize ?? 0),
    };
    if (target.view !== undefined && !Object.hasOwn(VIEWS, target.view)) {
      throw new TypeError(`unknown view: ${String(target.view)}`);
    }
    const signal = target.signal;
    const delays = backoffs(this.retry);
    for (;;) {
      if (signal?.aborted) throw signal.reason;
      const call = this.stub.read(req, this.metadata(target.metadata),
        { deadline: Date.now() + (target.timeoutMs ?? this.readTimeoutMs) });
      const onAbort = () => call.cancel();
      signal?.addEventListener("abort", onAbort, { once: true });
      let received = false;
      try {
        for await (const item of call) {
          received = true;
          for (const m of item.messages) yield m;
        }
        return;
      } catch (err) {
        if (signal?.aborted) throw signal.reason;
        if (!isServiceError(err)) throw err;
        if (err.code === status.UNAVAILABLE && !received) {
          const next = delays.next();
          if (!next.done) {
            await sleep(next.value, signal);
            continue;
          }
        }
        throw fromServiceError(err);
      } finally {
        signal?.removeEventListener("abort", onAbort);
        call.cancel(); // no-op after the stream ended; stops it when the caller breaks early
      }
    }
  }

  async readAll(memoryId: string, target: Target & ReadOptions): Promise<Message[]> {
    const out: Message[] = [];
    for await (const m of this.read(memoryId, target)) out.push(m);
    return out;
  }

  async stats(memoryId: string, target: Target, opts: RequestOptions = {}): Promise<InstanceStats> {
    const res = await this.unary(this.stub.getStats as Unary<any, any>, { ref: makeRef(memoryId, target) }, true, opts);
    return res.stats;
  }

  /** The daemon's health; with a memoryId and target, the instance's health too. */
  async health(memoryId?: string, target?: Target, opts: RequestOptions = {}): Promise<GetHealthResponse> {
    const ref = memoryId === undefined ? undefined : makeRef(memoryId, target ?? ({} as Target));
    return this.unary(this.stub.getHealth as Unary<any, GetHealthResponse>, { ref }, true, opts);
  }

  /** Run the flushing strategy now; with dryRun only plan it (and then it is retried like a read). */
  async flush(memoryId: string, target: Target & { dryRun?: boolean } & RequestOptions): Promise<FlushResponse> {
    const dryRun = target.dryRun ?? false;
    const req = { ref: makeRef(memoryId, target), dryRun };
    return this.unary(this.stub.flush as Unary<any, FlushResponse>, req, dryRun, target);
  }

  /** What a fold would take out now (`seqs`, `messages`), the summary it replaces (`currentSummary`) and its
   * cap (`summaryMaxTokens`), for a summary your own model writes; give `planToken` to applyFlush. Changes nothing. */
  async planFlush(memoryId: string, target: Target, opts: RequestOptions = {}): Promise<PlanFlushResponse> {
    const req = { ref: makeRef(memoryId, target) };
    return this.unary(this.stub.planFlush as Unary<any, PlanFlushResponse>, req, true, opts);
  }

  /** Fold the plan's messages under `summary`. AbortedError: another fold (or a Clear) happened since the plan,
   * plan again; ResourceExhaustedError: the summary is over summaryMaxTokens. Not retried (a repeat is refused). */
  async applyFlush(
    memoryId: string, planToken: string, summary: string, target: Target, opts: RequestOptions = {},
  ): Promise<ApplyFlushResponse> {
    const req = { ref: makeRef(memoryId, target), planToken, summary };
    return this.unary(this.stub.applyFlush as Unary<any, ApplyFlushResponse>, req, false, opts);
  }

  /** Delete an instance; returns the number of messages removed. Clearing twice equals once, so it is retried. */
  async clear(memoryId: string, target: Target, opts: RequestOptions = {}): Promise<bigint> {
    const res = await this.unary(this.stub.clear as Unary<any, any>, { ref: makeRef(memoryId, target) }, true, opts);
    return res.removedCount as bigint;
  }

  /** Delete single messages, live or in history; seqs not stored are ignored (the response lists
   * those deleted). With `ifLastSeq`, only if the instance's newest seq is still that value, else
   * AbortedError and nothing is deleted. The summary is not rewritten. Retried (deleting twice
   * equals once). */
  async deleteMessages(
    memoryId: string, seqs: Array<number | bigint>, target: Target & { ifLastSeq?: number | bigint } & RequestOptions,
  ): Promise<DeleteMessagesResponse> {
    const req: DeleteMessagesRequest = {
      ref: makeRef(memoryId, target),
      seqs: seqs.map((s, i) => checkUint64(`seqs[${i}]`, s)),
      ifLastSeq: target.ifLastSeq === undefined ? undefined : checkUint64("ifLastSeq", target.ifLastSeq),
    };
    return this.unary(this.stub.deleteMessages as Unary<DeleteMessagesRequest, DeleteMessagesResponse>, req, true, target);
  }

  async resolveAgent(agent: Agent, opts: RequestOptions = {}): Promise<ResolveAgentResponse> {
    const req = { agentId: agent.agentId, context: agent.context ?? {} };
    return this.unary(this.stub.resolveAgent as Unary<any, ResolveAgentResponse>, req, true, opts);
  }

  async listResources(opts: RequestOptions = {}): Promise<ListResourcesResponse> {
    return this.unary(this.stub.listResources as Unary<any, ListResourcesResponse>, {}, true, opts);
  }

  /** Delete every workflow-scoped instance of a workflow; returns how many. */
  async endWorkflow(workflowId: string, opts: RequestOptions = {}): Promise<bigint> {
    const res = await this.unary(this.stub.endWorkflow as Unary<any, any>, { workflowId }, true, opts);
    return res.deletedInstances as bigint;
  }

  /** Yield changes as they happen (no deadline). Break out of the loop, or abort `signal`, to stop. */
  async *watch(memoryId: string, target: Target & WatchOptions): AsyncGenerator<WatchResponse, void, undefined> {
    const req = { ref: makeRef(memoryId, target), afterSeq: checkUint64("afterSeq", target.afterSeq ?? 0) };
    if (target.signal?.aborted) return;
    const call: ClientReadableStream<WatchResponse> = this.stub.watch(req, this.metadata(target.metadata), {});
    const onAbort = () => call.cancel();
    target.signal?.addEventListener("abort", onAbort, { once: true });
    try {
      for await (const event of call) yield event;
    } catch (err) {
      if (isServiceError(err)) {
        if (err.code === status.CANCELLED && target.signal?.aborted) return;
        throw fromServiceError(err);
      }
      throw err;
    } finally {
      target.signal?.removeEventListener("abort", onAbort);
      call.cancel();
    }
  }
}

export { MemorydError };
