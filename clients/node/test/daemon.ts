// Start a real `memoryd serve` for a test and wait for grpc.health.v1 SERVING.
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { createServer } from "node:net";
import { join, resolve } from "node:path";
import { Client, credentials, Metadata, type ServiceError } from "@grpc/grpc-js";
import { BinaryReader, BinaryWriter } from "@bufbuild/protobuf/wire";

export const REPO = resolve(__dirname, "..", "..", "..");
export const EXAMPLE_PROJECT = join(REPO, "examples", "project", "memoryd.yaml");

function python(): string {
  if (process.env.MEMORYD_PYTHON) return process.env.MEMORYD_PYTHON;
  const venv = join(REPO, ".venv", "bin", "python");
  return existsSync(venv) ? venv : "python3";
}

export function freePort(): Promise<number> {
  return new Promise((ok, fail) => {
    const srv = createServer();
    srv.once("error", fail);
    srv.listen(0, "127.0.0.1", () => {
      const addr = srv.address();
      srv.close(() => (typeof addr === "object" && addr ? ok(addr.port) : fail(new Error("no port"))));
    });
  });
}

/** grpc.health.v1.Health/Check, hand-encoded: the two messages have one field each. */
export function healthCheck(address: string, service = "", timeoutMs = 1000): Promise<number> {
  const client = new Client(address, credentials.createInsecure());
  const encode = (s: string) => {
    const w = new BinaryWriter();
    if (s) w.uint32(10).string(s);
    return Buffer.from(w.finish());
  };
  const decode = (buf: Buffer) => {
    const r = new BinaryReader(buf);
    let st = 0;
    while (r.pos < r.len) {
      const tag = r.uint32();
      if (tag >>> 3 === 1) st = r.int32();
      else r.skip(tag & 7);
    }
    return st;
  };
  return new Promise<number>((ok, fail) => {
    client.makeUnaryRequest("/grpc.health.v1.Health/Check", encode, decode, service, new Metadata(),
      { deadline: Date.now() + timeoutMs }, (err: ServiceError | null, st?: number) => {
        client.close();
        if (err) fail(err);
        else ok(st ?? 0);
      });
  });
}

const SERVING = 1;

export interface Daemon {
  address: string;
  proc: ChildProcess;
  stop(): Promise<void>;
}

/** `python -m memoryd serve --listen 127.0.0.1:<free port> ARGS`; resolves once SERVING. */
export async function startDaemon(...args: string[]): Promise<Daemon> {
  const address = `127.0.0.1:${await freePort()}`;
  const proc = spawn(python(), ["-m", "memoryd", "serve", "--listen", address, "--shutdown-grace", "1", ...args], {
    cwd: REPO, stdio: ["ignore", "ignore", "pipe"],
  });
  let stderr = "";
  proc.stderr?.on("data", (d: Buffer) => { stderr += d.toString(); });
  const exited = new Promise<void>((r) => proc.once("exit", () => r()));
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (proc.exitCode !== null) throw new Error(`memoryd exited with ${proc.exitCode}:\n${stderr}`);
    try {
      if ((await healthCheck(address)) === SERVING) break;
    } catch { /* not listening yet */ }
    if (Date.now() > deadline) {
      proc.kill("SIGKILL");
      throw new Error(`memoryd at ${address} not SERVING after 30 s:\n${stderr}`);
    }
    await new Promise((r) => setTimeout(r, 50)); // polling interval of a readiness wait
  }
  return {
    address,
    proc,
    async stop() {
      if (proc.exitCode === null) proc.kill("SIGTERM");
      await exited;
    },
  };
}
