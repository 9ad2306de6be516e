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
  type FlushResponse,
  type GetHealthResponse,
  type InstanceStats,
  type ListResourcesResponse,
  type MemoryRef,
  MemoryServiceClient,
  type Message,
  ReadView,
  type ResolveAgentResponse,
  Role,
  type WatchResponse,
} from "./gen/memoryd/v1/memory";
import { fromServiceError, isServiceError, MemorydError } from "./errors";

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

export type RoleName = "system" | "user" | "assistant" | "tool";
export const ROLES: Record<RoleName, Role> = {
  system: Role.ROLE_SYSTEM,
  user: Role.ROLE_USER,
  assistant: Role.ROLE_ASSISTANT,
  tool: Role.ROLE_TOOL,
};

/** A message to append: `{ role: "user", content: "hi" }` plus optional fields. */
export interface MessageInput {
  role: RoleName | Role;
  content?: string;
  contentType?: string;
  priority?: number;
  metadata?: Record<string, string>;
  persist?: boolean;
}

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

export type View = "context" | "raw";

export interface AppendOptions {
  idempotencyKey?: string;
  timeoutMs?: number;
}

export interface ReadOptions {
  view?: View;
  afterSeq?: number | bigint;
  limit?: number;
  maxTokens?: number;
  chunkSize?: number;
  timeoutMs?: number;
}

export interface WatchOptions {
  afterSeq?: number | bigint;
  /** Aborting ends the iteration quietly. */
  signal?: AbortSignal;
}

const MESSAGE_FIELDS = new Set(["role", "content", "contentType", "priority", "metadata", "persist"]);

export function makeRef(memoryId: string, target: Target): MemoryRef {
  const hasKey = target.key !== undefined;
  const hasAgent = target.agent !== undefined;
  if (hasKey === hasAgent) throw new TypeError("pass exactly one of key and agent");
  if (hasKey) return { memoryId, key: target.key };
  const agent = target.agent as Agent;
  return { memoryId, agent: { agentId: agent.agentId, context: agent.context ?? {} } };
}

export function makeMessage(m: MessageInput): Message {
  const unknown = Object.keys(m).filter((k) => !MESSAGE_FIELDS.has(k));
  if (unknown.length) throw new TypeError(`unknown message fields: ${unknown.sort().join(", ")}`);
  const role = typeof m.role === "string" ? ROLES[m.role] : m.role;
  if (role === undefined) throw new TypeError(`unknown role: ${String(m.role)}`);
  return {
    role,
    content: m.content ?? "",
    contentType: m.contentType ?? "",
    priority: m.priority ?? undefined,
    metadata: { ...(m.metadata ?? {}) },
    persist: m.persist ?? undefined,
    seq: 0n,
    id: "",
    createdAt: undefined,
    tokenCount: 0,
    kind: 0,
    effectivePriority: 0,
  };
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

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

type Unary<Req, Res> = (
  req: Req, md: Metadata, opts: Partial<CallOptions>, cb: (err: ServiceError | null, res: Res) => void,
) => unknown;

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

  private metadata(): Metadata {
    const md = new Metadata();
    if (this.token) md.set("authorization", `Bearer ${this.token}`);
    return md;
  }

  private unaryOnce<Req, Res>(fn: Unary<Req, Res>, req: Req, timeoutMs: number): Promise<Res> {
    return new Promise((resolve, reject) => {
      fn.call(this.stub, req, this.metadata(), { deadline: Date.now() + timeoutMs }, (err, res) => {
        if (err) reject(err);
        else resolve(res);
      });
    });
  }

  private async unary<Req, Res>(fn: Unary<Req, Res>, req: Req, retry: boolean, timeoutMs?: number): Promise<Res> {
    const delays = retry ? backoffs(this.retry) : backoffs({ ...this.retry, attempts: 1 });
    for (;;) {
      try {
        return await this.unaryOnce(fn, req, timeoutMs ?? this.timeoutMs);
      } catch (err) {
        if (!isServiceError(err)) throw err;
        if (err.code === status.UNAVAILABLE) {
          const next = delays.next();
          if (!next.done) {
            await sleep(next.value);
            continue;
          }
        }
        throw fromServiceError(err);
      }
    }
  }

  /** Append a batch atomically; returns seqs, ids and the instance's new totals. */
  async append(memoryId: string, messages: MessageInput[], target: Target, opts: AppendOptions = {}): Promise<AppendResponse> {
    let idem = opts.idempotencyKey;
    if (idem === undefined && this.autoIdempotency) idem = newIdempotencyKey();
    const req: AppendRequest = { ref: makeRef(memoryId, target), messages: messages.map(makeMessage), idempotencyKey: idem ?? "" };
    return this.unary(this.stub.append as Unary<AppendRequest, AppendResponse>, req, Boolean(idem), opts.timeoutMs);
  }

  /** Yield messages oldest first. UNAVAILABLE is retried until the first stream item arrives. */
  async *read(memoryId: string, target: Target & ReadOptions): AsyncGenerator<Message, void, undefined> {
    const req = {
      ref: makeRef(memoryId, target),
      view: target.view === "raw" ? ReadView.READ_VIEW_RAW : ReadView.READ_VIEW_CONTEXT,
      afterSeq: BigInt(target.afterSeq ?? 0),
      limit: target.limit ?? 0,
      maxTokens: target.maxTokens ?? 0,
      chunkSize: target.chunkSize ?? 0,
    };
    if (target.view !== undefined && target.view !== "raw" && target.view !== "context") {
      throw new TypeError(`unknown view: ${String(target.view)}`);
    }
    const delays = backoffs(this.retry);
    for (;;) {
      const call = this.stub.read(req, this.metadata(), { deadline: Date.now() + (target.timeoutMs ?? this.readTimeoutMs) });
      let received = false;
      try {
        for await (const item of call) {
          received = true;
          for (const m of item.messages) yield m;
        }
        return;
      } catch (err) {
        if (!isServiceError(err)) throw err;
        if (err.code === status.UNAVAILABLE && !received) {
          const next = delays.next();
          if (!next.done) {
            await sleep(next.value);
            continue;
          }
        }
        throw fromServiceError(err);
      } finally {
        call.cancel(); // no-op after the stream ended; stops it when the caller breaks early
      }
    }
  }

  async readAll(memoryId: string, target: Target & ReadOptions): Promise<Message[]> {
    const out: Message[] = [];
    for await (const m of this.read(memoryId, target)) out.push(m);
    return out;
  }

  async stats(memoryId: string, target: Target): Promise<InstanceStats> {
    const res = await this.unary(this.stub.getStats as Unary<any, any>, { ref: makeRef(memoryId, target) }, true);
    return res.stats;
  }

  /** The daemon's health; with a memoryId and target, the instance's health too. */
  async health(memoryId?: string, target?: Target): Promise<GetHealthResponse> {
    const ref = memoryId === undefined ? undefined : makeRef(memoryId, target ?? ({} as Target));
    return this.unary(this.stub.getHealth as Unary<any, GetHealthResponse>, { ref }, true);
  }

  /** Run the flushing strategy now; with dryRun only plan it (and then it is retried like a read). */
  async flush(memoryId: string, target: Target & { dryRun?: boolean }): Promise<FlushResponse> {
    const dryRun = target.dryRun ?? false;
    return this.unary(this.stub.flush as Unary<any, FlushResponse>, { ref: makeRef(memoryId, target), dryRun }, dryRun);
  }

  /** Delete an instance; returns the number of messages removed. Clearing twice equals once, so it is retried. */
  async clear(memoryId: string, target: Target): Promise<bigint> {
    const res = await this.unary(this.stub.clear as Unary<any, any>, { ref: makeRef(memoryId, target) }, true);
    return res.removedCount as bigint;
  }

  async resolveAgent(agent: Agent): Promise<ResolveAgentResponse> {
    const req = { agentId: agent.agentId, context: agent.context ?? {} };
    return this.unary(this.stub.resolveAgent as Unary<any, ResolveAgentResponse>, req, true);
  }

  async listResources(): Promise<ListResourcesResponse> {
    return this.unary(this.stub.listResources as Unary<any, ListResourcesResponse>, {}, true);
  }

  /** Delete every workflow-scoped instance of a workflow; returns how many. */
  async endWorkflow(workflowId: string): Promise<bigint> {
    const res = await this.unary(this.stub.endWorkflow as Unary<any, any>, { workflowId }, true);
    return res.deletedInstances as bigint;
  }

  /** Yield changes as they happen (no deadline). Break out of the loop, or abort `signal`, to stop. */
  async *watch(memoryId: string, target: Target & WatchOptions): AsyncGenerator<WatchResponse, void, undefined> {
    const req = { ref: makeRef(memoryId, target), afterSeq: BigInt(target.afterSeq ?? 0) };
    const call: ClientReadableStream<WatchResponse> = this.stub.watch(req, this.metadata(), {});
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
