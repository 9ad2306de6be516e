"""The plain manifests in examples/kubernetes/: valid for current Kubernetes, and
self-consistent, so `kubectl apply -f` gives a pod that starts.

Schemas: strict kubernetes-validate (offline) for 1.29 (the first release with
native sidecars on by default), 1.33 (native sidecars GA) and 1.37 (newest bundled).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.conftest import REPO, ChartCheck
from tests.deploy.pods import (
    agent_containers,
    assert_daemon_accepts,
    assert_hardened,
    assert_probes_on_health_listener,
    env_values,
    flag,
    memoryd_container,
    mount_for,
    volume,
)

# The first test also creates the tool virtualenv (.tool-venv) on a fresh machine.
pytestmark = pytest.mark.timeout(600)

EXAMPLES = REPO / "examples" / "kubernetes"
FILES = sorted(EXAMPLES.rglob("*.yaml"))
VERSIONS = ["1.29", "1.33", "1.37"]
PATH_FLAGS = ("--config", "--redis-password-file", "--auth-token-file", "--tls-cert", "--tls-key", "--tls-client-ca")


def docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def by_kind(path: Path, kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs(path) if d["kind"] == kind}


def pods(path: Path) -> list[dict[str, Any]]:
    return [d["spec"]["template"] for d in by_kind(path, "Deployment").values()]


@pytest.fixture(scope="module")
def validation(chart_check: ChartCheck) -> dict[str, Any]:
    out = chart_check({"manifests": {str(p.relative_to(EXAMPLES)): p.read_text() for p in FILES},
                       "validate_versions": VERSIONS})
    return dict(out["results"])


def test_examples_exist() -> None:
    names = [p.name for p in FILES]
    assert "memoryd-sidecar.yaml" in names and "redis-cluster.yaml" in names


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_every_object_validates_strictly(validation: dict[str, Any], path: Path) -> None:
    report = validation[str(path.relative_to(EXAMPLES))]["validation"]
    assert len(report) == len(docs(path)) * len(VERSIONS)
    assert [r for r in report if r["status"] != "valid"] == []


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_pod_is_a_hardened_native_sidecar_with_working_probes(path: Path) -> None:
    for template in pods(path):
        spec = template["spec"]
        sidecar = memoryd_container(spec)
        assert sidecar in spec["initContainers"] and sidecar["restartPolicy"] == "Always"
        assert_probes_on_health_listener(sidecar)
        for container in [sidecar, *agent_containers(spec)]:
            assert_hardened(container)
        assert "emptyDir" in volume(spec, mount_for(sidecar, "/tmp/x")["name"])
        grace = float(flag(sidecar, "--shutdown-grace") or 10)
        assert spec["terminationGracePeriodSeconds"] > grace, "the agent stops first, then memoryd drains"


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_daemon_accepts_the_command_line(path: Path) -> None:
    secrets = by_kind(path, "Secret")
    for template in pods(path):
        sidecar = memoryd_container(template["spec"])
        refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in sidecar.get("env", []) if "valueFrom" in e}
        env = {name: secrets[ref["name"]]["stringData"][ref["key"]] for name, ref in refs.items()}
        assert_daemon_accepts(sidecar, env)


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_api_is_pod_local_and_agents_can_reach_it(path: Path) -> None:
    for template in pods(path):
        spec = template["spec"]
        sidecar = memoryd_container(spec)
        listen = str(flag(sidecar, "--listen"))
        assert listen.startswith(("127.0.0.1:", "unix:"))
        for agent in agent_containers(spec):
            assert env_values(agent)["MEMORYD_ADDR"] == listen
            if listen.startswith("unix:"):
                socket = listen.removeprefix("unix:")
                assert mount_for(agent, socket) == mount_for(sidecar, socket)
                # The socket is mode 0660 and group 10001: a different user gets in through fsGroup.
                assert spec["securityContext"]["fsGroup"] == sidecar["securityContext"]["runAsGroup"]


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_every_file_memoryd_reads_and_every_reference_exists(path: Path) -> None:
    secrets, config_maps = by_kind(path, "Secret"), by_kind(path, "ConfigMap")
    for template in pods(path):
        spec = template["spec"]
        sidecar = memoryd_container(spec)
        for name in PATH_FLAGS:
            if (file := flag(sidecar, name)) is not None:
                mount_for(sidecar, file)
        for vol in spec["volumes"]:
            if "secret" in vol:
                data = secrets[vol["secret"]["secretName"]]["stringData"]
                assert {i["key"] for i in vol["secret"]["items"]} <= data.keys()
            if "configMap" in vol:
                data = config_maps[vol["configMap"]["name"]]["data"]
                assert {i["key"] for i in vol["configMap"]["items"]} <= data.keys()
        for container in spec["containers"] + spec["initContainers"]:
            for env in container.get("env", []):
                if ref := env.get("valueFrom", {}).get("secretKeyRef"):
                    assert ref["key"] in secrets[ref["name"]]["stringData"]
            names = {m["name"] for m in container.get("volumeMounts", [])}
            assert names <= {v["name"] for v in spec["volumes"]}


def test_redis_password_stays_with_memoryd() -> None:
    for path in FILES:
        for template in pods(path):
            spec = template["spec"]
            sidecar = memoryd_container(spec)
            if (password := flag(sidecar, "--redis-password-file")) is None:
                continue
            secret_mount = mount_for(sidecar, password)["name"]
            for agent in agent_containers(spec):
                assert secret_mount not in {m["name"] for m in agent.get("volumeMounts", [])}
                assert "MEMORYD_REDIS_URL" not in env_values(agent)


def test_metrics_service_selects_the_pods() -> None:
    path = EXAMPLES / "memoryd-sidecar.yaml"
    (service,) = by_kind(path, "Service").values()
    (template,) = pods(path)
    assert service["spec"]["selector"].items() <= template["metadata"]["labels"].items()
    metrics = int(str(flag(memoryd_container(template["spec"]), "--metrics-listen")).rsplit(":", 1)[1])
    assert service["spec"]["ports"][0]["targetPort"] == metrics
    assert template["metadata"]["annotations"]["prometheus.io/port"] == str(metrics)


def test_config_map_is_a_valid_project(tmp_path: Path) -> None:
    (config_map,) = by_kind(EXAMPLES / "memoryd-sidecar.yaml", "ConfigMap").values()
    (tmp_path / "memoryd.yaml").write_text(config_map["data"]["memoryd.yaml"])
    proc = subprocess.run([sys.executable, "-m", "memoryd", "validate", str(tmp_path / "memoryd.yaml")],
                          capture_output=True, text=True, timeout=60, cwd=REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_redis_cluster_example_uses_a_cluster_url_with_several_seeds() -> None:
    from memoryd.store.url import parse_url

    (secret,) = by_kind(EXAMPLES / "redis-cluster.yaml", "Secret").values()
    settings = parse_url(secret["stringData"]["redis-url"])
    assert settings.mode == "cluster" and len(settings.hosts) >= 2
    (template,) = pods(EXAMPLES / "redis-cluster.yaml")
    sidecar = memoryd_container(template["spec"])
    ref = next(e for e in sidecar["env"] if e["name"] == "MEMORYD_REDIS_URL")["valueFrom"]["secretKeyRef"]
    assert ref["name"] == secret["metadata"]["name"]
