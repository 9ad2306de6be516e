"""The container image's install, replayed without a container engine.

No engine runs in CI, so this reads the Dockerfile and performs its steps on the
host: each build stage's COPYs from the build context (through .dockerignore) and
its `pip wheel` (the hash-locked requirements.lock in `deps`, the daemon and its
client in `builder`), then the final stage's `pip install`s from those wheels only
and its `pip check`, into a clean virtualenv. The image's ENTRYPOINT + CMD is then started from that
virtualenv with the image's ENV and with every proxy pointing at a closed port
(no egress: token encodings must come from the wheels), and must report SERVING
on grpc.health.v1 and exit 0 on SIGTERM.
"""

from __future__ import annotations

import json
import re
import shlex
import signal
import subprocess
import tomllib
import venv
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.deploy.conftest import CLEAN_ENV, REPO
from tests.deploy.dockerfile import Stage, copy_from_context, parse, pip_commands
from tests.support import free_port, wait_serving

DOCKERFILE = (REPO / "Dockerfile").read_text()
STAGES = parse(DOCKERFILE)
DEPS = next(s for s in STAGES if s.name == "deps")
BUILDER = next(s for s in STAGES if s.name == "builder")
FINAL = STAGES[-1]
GRACE_S = 2.0
LOCK = REPO / "requirements.lock"
NO_EGRESS = "http://127.0.0.1:9"  # the discard port: nothing listens, every proxied request fails


def _replay_pip(stage: Stage, python: Path, roots: dict[str | None, Path]) -> int:
    """Run the stage's pip commands in its own filesystem `roots[stage.name]`: in the build
    stages every absolute path is in that filesystem; bind mounts map to the source stage's."""
    root = roots[stage.name]
    count = 0
    for ins in stage.all("RUN"):
        mounts = {}
        for m in ins.mounts:
            assert m["type"] == "bind" and m["from"] in roots, m
            mounts[m["target"]] = roots[m["from"]] / m["source"].lstrip("/")
        for args in pip_commands(ins):
            mapped = []
            for arg in args:
                for target, source in mounts.items():
                    arg = re.sub(rf"(^|=){re.escape(target)}(?=/|$)", rf"\g<1>{source}", arg)
                if stage is not FINAL:
                    arg = re.sub(r"(^|=)/(?!tmp/)", rf"\g<1>{root}/", arg)
                mapped.append(arg)
            cwd = root / str(stage.workdir()).lstrip("/")
            cwd.mkdir(parents=True, exist_ok=True)
            subprocess.run([str(python), "-m", "pip", *mapped, "--disable-pip-version-check",
                            *(["--quiet"] if mapped[0] != "check" else [])],
                           cwd=cwd, env=CLEAN_ENV, check=True, timeout=600)
            count += 1
    return count


def read_lock() -> dict[str, tuple[str, str, list[str]]]:
    """requirements.lock as {normalized name: (version, marker, hashes)}."""
    out = {}
    for entry in re.sub(r"\\\n\s*", " ", LOCK.read_text()).splitlines():
        if not entry.strip() or entry.lstrip().startswith("#"):
            continue
        spec, *hashes = entry.split(" --hash=")
        req = Requirement(spec.strip())
        (pin,) = req.specifier
        assert pin.operator == "==", entry
        out[canonicalize_name(req.name)] = (pin.version, str(req.marker or ""), [h.strip() for h in hashes])
    return out


@pytest.fixture(scope="module")
def image_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A clean virtualenv holding exactly what the image's final stage installs."""
    tmp = tmp_path_factory.mktemp("image")
    roots: dict[str | None, Path] = {s.name: tmp / (s.name or "final") for s in STAGES}
    for stage in STAGES:
        for ins in stage.all("COPY"):
            copy_from_context(REPO, roots[stage.name], stage, ins)
    target = tmp / "venv"
    venv.EnvBuilder(with_pip=True, clear=True).create(target)
    python = target / "bin" / "python"
    assert _replay_pip(DEPS, python, roots) == 1, "`deps` runs one `pip wheel` of the lock"
    assert _replay_pip(BUILDER, python, roots) == 1, "the builder runs one `pip wheel`"
    assert any((roots["builder"] / "wheels").glob("memoryd-*.whl"))
    assert _replay_pip(FINAL, python, roots) == 3, "the final stage: the locked wheels, the local ones, pip check"
    return target


def test_final_stage_installs_only_wheels_and_runs_unprivileged() -> None:
    tag = re.search(r"^ARG PYTHON_TAG=(python:3\.11-slim\S*)$", DOCKERFILE, re.M)
    digest = re.search(r"^ARG PYTHON_DIGEST=(sha256:[0-9a-f]{64})$", DOCKERFILE, re.M)
    assert tag and digest, "the base image is pinned by digest, with its tag alongside"
    assert re.search(r"^ARG PYTHON_IMAGE=\$\{PYTHON_TAG\}@\$\{PYTHON_DIGEST\}$", DOCKERFILE, re.M)
    assert all(s.base == "${PYTHON_IMAGE}" for s in STAGES)
    assert FINAL.all("COPY") == [] and FINAL.all("ADD") == [], "no sources or build files in the image"
    installs = [c for ins in FINAL.all("RUN") for c in pip_commands(ins) if c[0] == "install"]
    assert len(installs) == 2 and all("--no-index" in c for c in installs)
    assert "--require-hashes" in installs[0] and "--no-deps" in installs[1]
    uid, _, gid = FINAL.last("USER").value.partition(":")
    assert uid.isdigit() and int(uid) != 0 and gid.isdigit() and int(gid) != 0
    assert FINAL.last("ENTRYPOINT").exec_form() == ["memoryd"]
    assert FINAL.last("CMD").exec_form() == ["serve"]
    assert FINAL.last("STOPSIGNAL").value == "SIGTERM"
    assert {"50051", "8081", "9090"} <= set(FINAL.last("EXPOSE").value.split())
    labels = " ".join(i.value for i in FINAL.all("LABEL"))
    for key in ("title", "description", "version", "revision", "licenses", "source", "base.name", "base.digest"):
        assert f"org.opencontainers.image.{key}=" in labels
    # Build args used in the final stage are declared in it (a global ARG is not visible there).
    declared = {i.value.split("=")[0] for i in FINAL.all("ARG")}
    assert set(re.findall(r"\$\{(\w+)\}", labels)) <= declared


def test_dependency_layers_do_not_depend_on_the_code() -> None:
    """Only requirements.lock reaches `deps`, and the final stage installs the locked wheels in a
    RUN before (and apart from) the one that installs the daemon: a code change leaves them cached."""
    (copy,) = DEPS.all("COPY")
    assert shlex.split(copy.value)[:-1] == ["requirements.lock"]
    runs = FINAL.all("RUN")
    assert {m["from"] for m in runs[0].mounts} == {"deps"}
    assert "builder" in {m["from"] for r in runs[1:] for m in r.mounts}


def test_lock_pins_every_declared_dependency_with_hashes() -> None:
    """requirements.lock (scripts/lock_requirements.sh) covers both pyproject.toml files: each
    dependency, with its extras, pinned to a version its specifier allows, every pin hashed."""
    lock = read_lock()
    assert "scripts/lock_requirements.sh" in LOCK.read_text().splitlines()[1]
    assert [ln for ln in (REPO / "requirements.in").read_text().splitlines() if not ln.startswith("#")] == [
        "./clients/python", ".[otel]"]  # the image can trace (the otel extra), off by default
    daemon = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = [*daemon["dependencies"], *daemon["optional-dependencies"]["otel"],
                *tomllib.loads((REPO / "clients" / "python" / "pyproject.toml").read_text())["project"]["dependencies"]]
    for dep in map(Requirement, declared):
        name = canonicalize_name(dep.name)
        if name == "memoryd-client":
            continue  # built from clients/python
        assert name in lock, f"{dep} is not locked"
        assert dep.specifier.contains(lock[name][0], prereleases=True), f"{dep}: locked {lock[name][0]}"
        if name == "redis":
            assert "hiredis" in lock  # the [hiredis] extra
    for name, (_, _, hashes) in lock.items():
        assert hashes and all(re.fullmatch(r"sha256:[0-9a-f]{64}", h) for h in hashes), name


def test_image_holds_exactly_the_locked_versions(image_venv: Path) -> None:
    listed = subprocess.run([str(image_venv / "bin" / "python"), "-m", "pip", "list", "--format", "json"],
                            env=CLEAN_ENV, capture_output=True, text=True, check=True, timeout=60)
    installed = {canonicalize_name(p["name"]): p["version"] for p in json.loads(listed.stdout)}
    for tool in ("pip", "setuptools", "wheel"):  # the image uninstalls them
        installed.pop(tool, None)
    assert installed.pop("memoryd") == installed.pop("memoryd-client") == "0.1.0"
    expected = {n: v for n, (v, marker, _) in read_lock().items() if not marker or Marker(marker).evaluate()}
    assert installed == expected


@pytest.mark.timeout(600)  # includes building and installing every wheel (network on a cold cache)
def test_installed_image_serves_health_and_stops_cleanly_on_sigterm(image_venv: Path, tmp_path: Path) -> None:
    env = {
        "PATH": f"{image_venv / 'bin'}:/usr/local/bin:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "LANG": "C.UTF-8",
        **FINAL.env(),
        **dict.fromkeys(("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY"), NO_EGRESS),
    }
    where = subprocess.run([str(image_venv / "bin" / "python"), "-c", "import memoryd; print(memoryd.__file__)"],
                           env=env, cwd=tmp_path, capture_output=True, text=True, check=True, timeout=60)
    assert where.stdout.startswith(str(image_venv)), "the daemon must come from the installed wheels"

    entrypoint = FINAL.last("ENTRYPOINT").exec_form()
    command = [str(image_venv / "bin" / entrypoint[0]), *entrypoint[1:], *FINAL.last("CMD").exec_form()]
    api, probe = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    log = tmp_path / "memoryd.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([*command, "--listen", api, "--health-listen", probe,
                                 "--shutdown-grace", str(GRACE_S)],
                                env=env, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_serving(probe, timeout_s=60)
            with grpc.insecure_channel(probe) as channel:
                stub = health_pb2_grpc.HealthStub(channel)
                for service in ("", "liveness", "memoryd.v1.MemoryService"):
                    status = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status
                    assert status == health_pb2.HealthCheckResponse.SERVING, service
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=GRACE_S + 10) == 0, log.read_text()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert b'"event": "stopped"' in log.read_bytes()
