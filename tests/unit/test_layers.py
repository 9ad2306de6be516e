"""The layers point one way: the domain (manager, engine, stores) never loads the wire.

Each module is imported in a fresh interpreter, and no ``grpc``, ``google.protobuf`` or
``memoryd_client`` module may be loaded by it (the wire lives in the servicer, the server,
auth, handlers, status and convert/validation).
"""

from __future__ import annotations

import subprocess
import sys

import pytest

DOMAIN = ["memoryd.manager", "memoryd.engine", "memoryd.store.embedded", "memoryd.store.redis.store",
          "memoryd.store.url", "memoryd.config.loader", "memoryd.models", "memoryd.errors"]
WIRE = ("grpc", "google.protobuf", "memoryd_client")

PROBE = """
import sys, importlib
importlib.import_module(sys.argv[1])
print("\\n".join(m for m in sys.modules if m.split(".")[0] in {"grpc", "memoryd_client"}
                 or m.startswith("google.protobuf")))
"""


@pytest.mark.parametrize("module", DOMAIN)
def test_domain_modules_load_no_wire_module(module: str) -> None:
    out = subprocess.run([sys.executable, "-c", PROBE, module], capture_output=True, text=True, check=True).stdout
    loaded = sorted(line for line in out.splitlines() if line.startswith(WIRE))
    assert loaded == [], f"importing {module} loads {loaded[:5]}"
