"""The Apache-2.0 licence that pyproject.toml and the client manifests declare ships as a LICENSE
file at the root and in each client package (npm and setuptools pick LICENSE up by name)."""

from __future__ import annotations

import hashlib
import json
import tomllib

from tests.support import REPO

# sha256 of the canonical text (apache.org/licenses/LICENSE-2.0.txt, as Debian ships it in
# /usr/share/common-licenses/Apache-2.0): an edited copy is no longer the licence.
APACHE_2_SHA256 = "cfc7749b96f63bd31c3c42b5c471bf756814053e847c10f3eb003417bc523d30"
PACKAGES = ["", "clients/python", "clients/node", "clients/go"]


def test_every_package_ships_the_apache_2_licence_verbatim() -> None:
    for pkg in PACKAGES:
        text = (REPO / pkg / "LICENSE").read_bytes()
        assert hashlib.sha256(text).hexdigest() == APACHE_2_SHA256, f"{pkg or 'root'}/LICENSE"


def test_manifests_declare_apache_2() -> None:
    for pyproject in (REPO / "pyproject.toml", REPO / "clients" / "python" / "pyproject.toml"):
        assert tomllib.loads(pyproject.read_text())["project"]["license"] == "Apache-2.0"
    assert json.loads((REPO / "clients" / "node" / "package.json").read_text())["license"] == "Apache-2.0"
