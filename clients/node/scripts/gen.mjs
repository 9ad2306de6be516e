// Regenerate src/gen/ from ../../proto with ts-proto (the one documented command: `npm run gen`).
// `npm run gen:check` exits 1 when the committed code drifted from proto/.
//
// protoc comes from grpcio-tools in the repository's Python virtualenv (the same protoc that
// generates the Python client); override the interpreter with MEMORYD_PYTHON=/path/to/python.
import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, mkdirSync, cpSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const pkg = resolve(here, "..");
const repo = resolve(pkg, "..", "..");
const out = join(pkg, "src", "gen");
const plugin = join(pkg, "node_modules", ".bin", "protoc-gen-ts_proto");
const python = process.env.MEMORYD_PYTHON
  ?? [join(repo, ".venv", "bin", "python"), "python3"].find((p) => p === "python3" || existsSync(p));

// Every option is a decision recorded in docs/clients.md: uint64 stays exact (bigint),
// Timestamps stay {seconds, nanos} (a Date would drop microseconds), services use grpc-js.
const OPTIONS = [
  "outputServices=grpc-js",
  "env=node",
  "esModuleInterop=true",
  "forceLong=bigint",
  "useDate=false",
  "oneof=properties",
  "exportCommonSymbols=false",
].join(",");

function generate(dest) {
  execFileSync(python, [
    "-m", "grpc_tools.protoc",
    `--plugin=protoc-gen-ts_proto=${plugin}`,
    `--ts_proto_out=${dest}`,
    `--ts_proto_opt=${OPTIONS}`,
    `-I${join(repo, "proto")}`,
    "memoryd/v1/memory.proto",
  ], { cwd: repo, stdio: ["ignore", "inherit", "inherit"] });
}

function files(dir) {
  const acc = new Map();
  const walk = (d) => {
    for (const name of readdirSync(d).sort()) {
      const p = join(d, name);
      if (statSync(p).isDirectory()) walk(p);
      else acc.set(relative(dir, p), readFileSync(p, "utf8"));
    }
  };
  if (existsSync(dir)) walk(dir);
  return acc;
}

const tmp = mkdtempSync(join(tmpdir(), "memoryd-ts-gen-"));
try {
  generate(tmp);
  if (process.argv.includes("--check")) {
    const want = files(tmp);
    const have = files(out);
    const drift = [...new Set([...want.keys(), ...have.keys()])].filter((k) => want.get(k) !== have.get(k));
    if (drift.length) {
      console.error(`generated code drifted from proto/: ${drift.join(", ")}; run npm run gen`);
      process.exit(1);
    }
  } else {
    rmSync(out, { recursive: true, force: true });
    mkdirSync(out, { recursive: true });
    cpSync(tmp, out, { recursive: true });
  }
} finally {
  rmSync(tmp, { recursive: true, force: true });
}
