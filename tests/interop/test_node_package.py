"""`npm pack` of a clean copy of clients/node gives a package that a fresh project installs and
uses from ESM and from CommonJS (with types), against a real daemon."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import REPO, daemon_process, free_port, wait_serving

pytestmark = pytest.mark.timeout(900)  # the first test may install the toolchains

NODE = REPO / "clients" / "node"

ESM = """
import { createRequire } from "node:module";
import { MemoryClient, NotFoundError, Role } from "@memoryd/client";

const c = new MemoryClient(process.env.MEMORYD_ADDR);
const res = await c.append("default", [{ role: "user", content: "from ESM 🧩" }], { key: "pkg" },
  { metadata: { "x-request-id": "esm-1" } });
const got = await c.readAll("default", { key: "pkg", view: "raw", signal: new AbortController().signal });
let notFound = false;
try { await c.stats("no-such-memory", { key: "k" }); } catch (e) { notFound = e instanceof NotFoundError; }
// One copy of the code whichever way it is loaded: the CommonJS class is the same object.
const same = createRequire(import.meta.url)("@memoryd/client").NotFoundError === NotFoundError;
const last = got.at(-1);
console.log(JSON.stringify({ seq: String(res.results[0].seq), last: last.content, role: last.role === Role.ROLE_USER,
  notFound, same }));
c.close();
"""

CJS = """
const { MemoryClient, InvalidArgumentError } = require("@memoryd/client");

(async () => {
  const c = new MemoryClient(process.env.MEMORYD_ADDR);
  const res = await c.append("default", [{ role: "user", content: "from CJS 📦" }], { key: "pkg" });
  let invalid = false;
  try {
    await c.readAll("default", { key: "pkg", limit: -1 });
  } catch (e) {
    invalid = e instanceof InvalidArgumentError;
  }
  const got = await c.readAll("default", { key: "pkg", view: "raw" });
  console.log(JSON.stringify({ seq: String(res.results[0].seq), last: got.at(-1).content, invalid }));
  c.close();
})();
"""

# Type-checked with the package's own types, as a TypeScript consumer would (node16 resolution
# picks index.d.mts for import and index.d.ts for require).
TYPES_MTS = """
import { MemoryClient, type Message, NotFoundError, type RequestOptions } from "@memoryd/client";
const opts: RequestOptions = { signal: new AbortController().signal, metadata: { traceparent: "00-1-2-01" } };
export async function last(c: MemoryClient): Promise<Message | undefined> {
  const all = await c.readAll("default", { key: "k", limit: 3, ...opts });
  const e: NotFoundError | undefined = undefined;
  return e ?? all.at(-1);
}
"""
TYPES_CTS = """
import client = require("@memoryd/client");
export const c: client.MemoryClient = new client.MemoryClient("127.0.0.1:1");
export const n: Promise<bigint> = c.clear("default", { key: "k" }, { metadata: { "x-request-id": "r" } });
"""


def run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 300) -> str:
    r = subprocess.run(cmd, cwd=cwd, env={**os.environ, **(env or {})}, capture_output=True, text=True,
                       timeout=timeout, check=False)
    assert r.returncode == 0, f"{cmd} exited {r.returncode}:\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}"
    return r.stdout


@pytest.fixture(scope="module")
def tarball(client_toolchains: None, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`npm pack` in a clean copy of clients/node: the files git tracks (or would), no dist/."""
    clone = tmp_path_factory.mktemp("clone") / "node"
    files = run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z", "."], NODE).split("\0")
    for rel in filter(None, files):
        if (NODE / rel).is_file():
            (clone / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(NODE / rel, clone / rel)
    assert not (clone / "dist").exists()
    # The dev dependencies (tsc) that `npm ci` installed; the build itself runs from scratch.
    (clone / "node_modules").symlink_to(NODE / "node_modules")
    out = tmp_path_factory.mktemp("pack")
    name = json.loads(run(["npm", "pack", "--json", "--pack-destination", str(out)], clone))[0]["filename"]
    return out / name


def test_tarball_holds_the_built_package(tarball: Path) -> None:
    with tarfile.open(tarball) as tar:
        names = set(tar.getnames())
    for f in ("package.json", "README.md", "LICENSE", "dist/src/index.js", "dist/src/index.d.ts",
              "dist/src/client.js", "dist/src/gen/memoryd/v1/memory.js", "dist/esm/index.mjs",
              "dist/esm/index.d.mts"):
        assert f"package/{f}" in names, f
    assert not [n for n in names if n.startswith(("package/dist/test", "package/dist/tools", "package/src"))]


@pytest.fixture(scope="module")
def app(tarball: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh project that installs the tarball (its dependencies come from the npm cache or registry)."""
    app = tmp_path_factory.mktemp("app")
    (app / "package.json").write_text(json.dumps({"name": "app", "version": "1.0.0", "private": True}))
    run(["npm", "install", "--prefer-offline", "--no-audit", "--no-fund", "--loglevel=error", str(tarball)], app)
    return app


@pytest.fixture(scope="module")
def daemon() -> Iterator[str]:
    address = f"127.0.0.1:{free_port()}"
    with daemon_process("--listen", address, "--shutdown-grace", "1"):
        wait_serving(address, "memoryd.v1.MemoryService")
        yield address


def test_fresh_project_imports_it_from_esm_and_cjs(app: Path, daemon: str) -> None:
    (app / "main.mjs").write_text(ESM)
    (app / "main.cjs").write_text(CJS)
    esm = json.loads(run(["node", "main.mjs"], app, {"MEMORYD_ADDR": daemon}))
    assert esm == {"seq": "1", "last": "from ESM 🧩", "role": True, "notFound": True, "same": True}
    cjs = json.loads(run(["node", "main.cjs"], app, {"MEMORYD_ADDR": daemon}))
    assert cjs == {"seq": "2", "last": "from CJS 📦", "invalid": True}


def test_fresh_typescript_project_type_checks_against_its_types(app: Path) -> None:
    (app / "use.mts").write_text(TYPES_MTS)
    (app / "use.cts").write_text(TYPES_CTS)
    tsc = NODE / "node_modules" / ".bin" / "tsc"
    node_types = NODE / "node_modules" / "@types"  # a TypeScript project has @types/node; borrow the client's
    run([str(tsc), "--noEmit", "--strict", "--module", "node16", "--moduleResolution", "node16", "--target", "es2022",
         "--typeRoots", str(node_types), "--types", "node", "use.mts", "use.cts"], app)
