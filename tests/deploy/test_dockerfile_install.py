"""The container image's install, replayed without a container engine.

No engine runs in CI, so this reads the Dockerfile and performs its steps on the
host: the builder stage's COPYs from the build context (through .dockerignore)
and its `pip wheel`, then the final stage's `pip install` from those wheels only,
into a clean virtualenv. The image's ENTRYPOINT + CMD is then started from that
virtualenv with the image's ENV and with every proxy pointing at a closed port
(no egress: token encodings must come from the wheels), and must report SERVING
on grpc.health.v1 and exit 0 on SIGTERM.
"""

from __future__ import annotations

import re
import signal
import subprocess
import venv
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.deploy.conftest import CLEAN_ENV, REPO
from tests.deploy.dockerfile import Stage, copy_from_context, parse, pip_commands
from tests.support import free_port, wait_serving

DOCKERFILE = (REPO / "Dockerfile").read_text()
STAGES = parse(DOCKERFILE)
BUILDER = next(s for s in STAGES if s.name == "builder")
FINAL = STAGES[-1]
GRACE_S = 2.0
NO_EGRESS = "http://127.0.0.1:9"  # the discard port: nothing listens, every proxied request fails


def _replay_pip(stage: Stage, python: Path, root: Path, builder_root: Path) -> int:
    """Run the stage's pip commands in `root`, its own filesystem, with absolute paths
    and bind mounts from the builder mapped into `builder_root`."""
    mounts = {}
    count = 0
    for ins in stage.all("RUN"):
        if "mount" in ins.flags:
            opts = dict(kv.split("=", 1) for kv in ins.flags["mount"].split(","))
            assert opts["type"] == "bind" and opts["from"] == BUILDER.name
            mounts[opts["target"]] = builder_root / opts["source"].lstrip("/")
        for args in pip_commands(ins):
            mapped = []
            for arg in args:
                if stage is BUILDER:  # every absolute path is in the builder's filesystem
                    arg = re.sub(r"(^|=)/", rf"\g<1>{root}/", arg)
                for target, source in mounts.items():  # bind mounts from the builder
                    arg = re.sub(rf"(^|=){re.escape(target)}(?=/|$)", rf"\g<1>{source}", arg)
                mapped.append(arg)
            cwd = root / str(stage.workdir()).lstrip("/")
            cwd.mkdir(parents=True, exist_ok=True)
            subprocess.run([str(python), "-m", "pip", *mapped, "--quiet", "--disable-pip-version-check"],
                           cwd=cwd, env=CLEAN_ENV, check=True, timeout=600)
            count += 1
    return count


@pytest.fixture(scope="module")
def image_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A clean virtualenv holding exactly what the image's final stage installs."""
    tmp = tmp_path_factory.mktemp("image")
    builder_fs = tmp / "builder"
    for ins in BUILDER.all("COPY"):
        copy_from_context(REPO, builder_fs, BUILDER, ins)
    target = tmp / "venv"
    venv.EnvBuilder(with_pip=True, clear=True).create(target)
    python = target / "bin" / "python"
    assert _replay_pip(BUILDER, python, builder_fs, builder_fs) == 1, "the builder runs one `pip wheel`"
    assert any((builder_fs / "wheels").glob("memoryd-*.whl"))
    assert _replay_pip(FINAL, python, tmp / "final", builder_fs) == 1, "the final stage runs one `pip install`"
    return target


def test_final_stage_installs_only_wheels_and_runs_unprivileged() -> None:
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim", DOCKERFILE, re.M)
    assert all(s.base == "${PYTHON_IMAGE}" for s in STAGES)
    assert FINAL.all("COPY") == [] and FINAL.all("ADD") == [], "no sources or build files in the image"
    (install,) = [c for ins in FINAL.all("RUN") for c in pip_commands(ins)]
    assert install[0] == "install" and "--no-index" in install
    uid, _, gid = FINAL.last("USER").value.partition(":")
    assert uid.isdigit() and int(uid) != 0 and gid.isdigit() and int(gid) != 0
    assert FINAL.last("ENTRYPOINT").exec_form() == ["memoryd"]
    assert FINAL.last("CMD").exec_form() == ["serve"]
    assert FINAL.last("STOPSIGNAL").value == "SIGTERM"
    assert {"50051", "8081", "9090"} <= set(FINAL.last("EXPOSE").value.split())
    labels = " ".join(i.value for i in FINAL.all("LABEL"))
    for key in ("title", "description", "version", "revision", "licenses"):
        assert f"org.opencontainers.image.{key}=" in labels


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
