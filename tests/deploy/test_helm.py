"""The Helm chart, checked with Helm's own library and the Kubernetes schemas.

Every values set below goes through real `helm lint` (helm-sdkpy), a real Helm
render, and strict `kubernetes-validate` for the oldest Kubernetes the native
sidecar form supports, the release where it is GA, and the newest schemas bundled.
The rendered objects are then read the way the kubelet and Prometheus would: probes
must reach the health listener, the API must stay pod-local, secrets must reach the
right container and no other, and the grace period must cover the shutdown order.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from memoryd.store.url import open_store
from tests.deploy.conftest import REPO, ChartCheck
from tests.deploy.pods import (
    agent_containers,
    assert_daemon_accepts,
    assert_hardened,
    assert_probes_on_health_listener,
    flag,
    memoryd_container,
    mount_for,
    volume,
)
from tests.redis_servers import RedisProcess
from tests.service.test_metrics_scrape import scrape
from tests.support import running_server

# The first test also creates the tool virtualenv (.tool-venv) on a fresh machine.
pytestmark = pytest.mark.timeout(600)

CHART = REPO / "helm" / "memoryd"
APP_CHART = REPO / "examples" / "helm" / "agent-app"
VALIDATE_VERSIONS = ["1.29", "1.33", "1.37"]
DEFAULTS: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())
CI_VALUES = {
    p.name.removesuffix("-values.yaml"): yaml.safe_load(p.read_text())
    for p in sorted((CHART / "ci").glob("*-values.yaml"))
}

# Values sets that must lint, render and validate cleanly: the defaults and every
# documented switch (helm/memoryd/ci/*-values.yaml, as chart-testing would run them).
GOOD: dict[str, dict[str, Any]] = {
    "default": {"values": {}},
    **{name: {"values": values} for name, values in CI_VALUES.items()},
    "config-changed": {"values": {"config": "project: other\nmemories: []\nagents: []\n"}},
    "no-config": {"values": {"config": ""}},
    "kube-1.28-classic": {"values": {"sidecar": {"native": False}}, "kube_version": "1.28.0",
                          "validate_versions": ["1.28"]},
}
# Values sets the chart must refuse, with the reason it must give.
BAD: dict[str, dict[str, Any]] = {
    "kube-1.28-native": {"values": {}, "kube_version": "1.28.0"},
    "schema-native-not-bool": {"values": {"sidecar": {"native": "yes"}}},
    "schema-listen-no-port": {"values": {"listen": "localhost"}},
    "schema-unknown-value": {"values": {"replicas": 3}},
    "auth-without-token": {"values": {"auth": {"enabled": True}}},
    "redis-without-url": {"values": {"redis": {"enabled": True}}},
    "exposed-api": {"values": {"listen": "0.0.0.0:50051"}},
    # A typo the values schema lets through (securityContext is free-form) must be
    # caught by the strict Kubernetes schemas: proves validation really runs.
    "k8s-typo": {"values": {"securityContext": {"runAsNonRot": True}}},
    "pdb-both-bounds": {"values": {"podDisruptionBudget": {"enabled": True, "minAvailable": 1, "maxUnavailable": 1}}},
    "shared-api-without-peers": {"values": {**CI_VALUES["shared"], "networkPolicy": {"enabled": True}}},
}
# Custom resources with a mistake the prometheus-operator CRD schemas reject (validation only).
BAD_CUSTOM = {
    "rule-typo": {"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule", "metadata": {"name": "r"},
                  "spec": {"groups": [{"name": "g", "rules": [{"alert": "A", "expr": "up == 0", "fore": "1m"}]}]}},
    "monitor-bad-interval": {"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor",
                             "metadata": {"name": "m"},
                             "spec": {"selector": {}, "endpoints": [{"port": "metrics", "interval": "30 seconds"}]}},
}


@pytest.fixture(scope="module")
def app_chart(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """examples/helm/agent-app with helm/memoryd in charts/ (what `helm dependency build` does)."""
    root = tmp_path_factory.mktemp("app") / "agent-app"
    shutil.copytree(APP_CHART, root)
    shutil.copytree(CHART, root / "charts" / "memoryd")
    return root


@pytest.fixture(scope="module")
def results(chart_check: ChartCheck, app_chart: Path) -> dict[str, Any]:
    scenarios = [{"name": name, **spec} for name, spec in {**GOOD, **BAD}.items()]
    scenarios.append({"name": "app-chart", "chart": str(app_chart), "values": {}})
    scenarios.append({"name": "app-chart-classic", "chart": str(app_chart),
                      "values": {"memoryd": {"sidecar": {"native": False}}}})
    out = chart_check({"chart": str(CHART), "kube_version": "1.33.0", "validate_versions": VALIDATE_VERSIONS,
                       "scenarios": scenarios,
                       "manifests": {name: yaml.safe_dump(doc) for name, doc in BAD_CUSTOM.items()}})
    return dict(out["results"])


def objects(result: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    assert result["render_error"] is None, result["render_error"]
    docs = [d for d in yaml.safe_load_all(result["manifest"]) if d]
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


def pod(result: dict[str, Any]) -> dict[str, Any]:
    deployments = [o for (kind, _), o in objects(result).items() if kind == "Deployment"]
    assert len(deployments) == 1
    template: dict[str, Any] = deployments[0]["spec"]["template"]
    return template


def agent_container(spec: dict[str, Any]) -> dict[str, Any]:
    (agent,) = agent_containers(spec)
    return agent


@pytest.mark.parametrize("name", [*GOOD, "app-chart", "app-chart-classic"])
def test_lints_renders_and_validates(results: dict[str, Any], name: str) -> None:
    result = results[name]
    problems = [m for m in result["lint"]["messages"] if m["severity"] in ("warning", "error")]
    assert problems == [], f"helm lint: {problems}"
    assert result["render_error"] is None, result["render_error"]
    invalid = [v for v in result["validation"] if v["status"].startswith("invalid")]
    assert invalid == []
    assert all(v["status"] == "valid" for v in result["validation"])  # custom resources too: none skipped
    assert result["validation"], "nothing was rendered"
    assert [e for e in result["promql"] if e["error"]] == []


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("kube-1.28-native", "native sidecars need Kubernetes >= 1.29"),
        ("auth-without-token", "auth.enabled needs auth.token or existingSecret.name"),
        ("redis-without-url", "redis.enabled needs redis.url or existingSecret.name"),
        ("exposed-api", "is not pod-local"),
        ("schema-native-not-bool", "/sidecar/native"),
        ("schema-listen-no-port", "/listen"),
        ("schema-unknown-value", "replicas"),
        ("pdb-both-bounds", "exactly one of minAvailable and maxUnavailable"),
        ("shared-api-without-peers", "networkPolicy.apiFrom is empty"),
    ],
)
def test_refuses_values_that_cannot_work(results: dict[str, Any], name: str, reason: str) -> None:
    result = results[name]
    assert result["render_error"] is not None and reason in result["render_error"]
    if name.startswith("schema-"):  # lint checks the schema; it skips `fail` by design (lint mode)
        assert any(m["severity"] == "error" for m in result["lint"]["messages"])


@pytest.mark.parametrize("name", [n for n in [*GOOD, "app-chart", "app-chart-classic"] if n != "library-only"])
def test_daemon_accepts_the_rendered_command_line(results: dict[str, Any], name: str) -> None:
    sidecar = memoryd_container(pod(results[name])["spec"])
    from_secret = [e["name"] for e in sidecar.get("env", []) if "valueFrom" in e]
    assert_daemon_accepts(sidecar, dict.fromkeys(from_secret, "redis://redis:6379/0"))


def test_strict_kubernetes_validation_catches_a_misspelt_field(results: dict[str, Any]) -> None:
    invalid = [v for v in results["k8s-typo"]["validation"] if v["status"].startswith("invalid")]
    assert invalid and all("runAsNonRot" in v["status"] for v in invalid)


def test_custom_resources_are_checked_against_the_operator_schemas(results: dict[str, Any]) -> None:
    (typo,) = results["rule-typo"]["validation"]
    assert typo["status"].startswith("invalid") and "fore" in typo["status"]
    (interval,) = results["monitor-bad-interval"]["validation"]
    assert interval["status"].startswith("invalid") and "interval" in interval["status"]


def test_default_is_a_native_sidecar_with_a_pod_local_api(results: dict[str, Any]) -> None:
    spec = pod(results["default"])["spec"]
    (sidecar,) = spec["initContainers"]
    assert sidecar["name"] == "memoryd" and sidecar["restartPolicy"] == "Always"
    assert [c["name"] for c in spec["containers"]] == ["agent"]
    assert sidecar["image"] == f"memoryd:{yaml.safe_load((CHART / 'Chart.yaml').read_text())['appVersion']}"
    assert sidecar["args"][0] == "serve"
    assert flag(sidecar, "--listen") == "127.0.0.1:50051"
    env = {e["name"]: e.get("value") for e in agent_container(spec)["env"]}
    assert env["MEMORYD_ADDR"] == "127.0.0.1:50051"


@pytest.mark.parametrize("name", ["default", "classic-sidecar", "app-chart", "app-chart-classic"])
def test_probes_use_grpc_health_on_the_pod_ip_listener(results: dict[str, Any], name: str) -> None:
    sidecar = memoryd_container(pod(results[name])["spec"])
    assert_probes_on_health_listener(sidecar)
    port = int(str(flag(sidecar, "--health-listen")).rsplit(":", 1)[1])
    assert {"containerPort": port, "name": "memoryd-health", "protocol": "TCP"} in sidecar["ports"]


def test_classic_form_is_a_second_container_that_outlives_the_agent(results: dict[str, Any]) -> None:
    spec = pod(results["classic-sidecar"])["spec"]
    assert "initContainers" not in spec
    assert [c["name"] for c in spec["containers"]] == ["agent", "memoryd"]
    sidecar = memoryd_container(spec)
    assert "restartPolicy" not in sidecar
    pre_stop = str(DEFAULTS["sidecar"]["classicPreStopSeconds"])
    assert sidecar["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", pre_stop]


def test_grace_period_covers_agent_then_memoryd_shutdown(results: dict[str, Any]) -> None:
    grace = DEFAULTS["shutdownGrace"]
    agent = DEFAULTS["example"]["agent"]["shutdownSeconds"]
    margin = DEFAULTS["terminationGraceMarginSeconds"]
    pre_stop = DEFAULTS["sidecar"]["classicPreStopSeconds"]
    native = pod(results["default"])["spec"]
    assert flag(memoryd_container(native), "--shutdown-grace") == str(grace)
    # Native sidecars get SIGTERM only after the agent has exited: the times add up.
    assert native["terminationGracePeriodSeconds"] == agent + grace + margin
    # Classic containers are signalled together; memoryd after its preStop sleep.
    classic = pod(results["classic-sidecar"])["spec"]
    assert classic["terminationGracePeriodSeconds"] == max(agent, pre_stop + grace) + margin
    app = pod(results["app-chart"])["spec"]
    assert app["terminationGracePeriodSeconds"] == 20 + grace + margin


@pytest.mark.parametrize("name", ["default", "unix-socket", "app-chart"])
def test_containers_are_hardened(results: dict[str, Any], name: str) -> None:
    spec = pod(results[name])["spec"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    for container in [memoryd_container(spec), agent_container(spec)]:
        assert_hardened(container)
    sidecar = memoryd_container(spec)
    assert sidecar["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert "emptyDir" in volume(spec, mount_for(sidecar, "/tmp/x")["name"])
    assert sidecar["resources"]["requests"]["memory"] and sidecar["resources"]["limits"]["memory"]


def test_config_map_is_mounted_where_config_points(results: dict[str, Any]) -> None:
    objs = objects(results["memory-files"])
    spec = pod(results["memory-files"])["spec"]
    sidecar = memoryd_container(spec)
    config = flag(sidecar, "--config")
    assert config is not None
    mount = mount_for(sidecar, config)
    source = volume(spec, mount["name"])["configMap"]
    data = objs[("ConfigMap", source["name"])]["data"]
    files = {item["path"]: data[item["key"]] for item in source["items"]}
    relative = config.removeprefix(mount["mountPath"].rstrip("/") + "/")
    assert files[relative] == DEFAULTS["config"]
    extra = CI_VALUES["memory-files"]["memoryFiles"]
    assert {p: files[f"memories/{p}"] for p in extra} == extra


def test_rendered_config_is_a_valid_project(results: dict[str, Any], tmp_path: Path) -> None:
    """What the ConfigMap holds, laid out as the mount lays it out, passes `memoryd validate`."""
    for name in ("memory-files", "app-chart"):
        objs = objects(results[name])
        spec = pod(results[name])["spec"]
        source = volume(spec, "memoryd-config")["configMap"]
        data = objs[("ConfigMap", source["name"])]["data"]
        root = tmp_path / name
        for item in source["items"]:
            (root / item["path"]).parent.mkdir(parents=True, exist_ok=True)
            (root / item["path"]).write_text(data[item["key"]])
        proc = subprocess.run([sys.executable, "-m", "memoryd", "validate", str(root / "memoryd.yaml")],
                              capture_output=True, text=True, timeout=60, cwd=REPO)
        assert proc.returncode == 0, proc.stdout + proc.stderr


def test_no_config_uses_the_built_in_project(results: dict[str, Any]) -> None:
    spec = pod(results["no-config"])["spec"]
    assert flag(memoryd_container(spec), "--config") is None
    assert "memoryd-config" not in [v["name"] for v in spec["volumes"]]
    assert not [k for k, _ in objects(results["no-config"]) if k == "ConfigMap"]


def test_config_change_rolls_the_pods(results: dict[str, Any]) -> None:
    before = pod(results["default"])["metadata"]["annotations"]
    after = pod(results["config-changed"])["metadata"]["annotations"]
    assert before["checksum/memoryd-config"] != after["checksum/memoryd-config"]
    assert before["checksum/memoryd-secret"] == after["checksum/memoryd-secret"]


def test_metrics_port_annotations_and_service_agree(results: dict[str, Any]) -> None:
    template = pod(results["default"])
    sidecar = memoryd_container(template["spec"])
    port = int(str(flag(sidecar, "--metrics-listen")).rsplit(":", 1)[1])
    assert {"containerPort": port, "name": "memoryd-metrics", "protocol": "TCP"} in sidecar["ports"]
    annotations = template["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true" and annotations["prometheus.io/port"] == str(port)
    services = [o for (kind, _), o in objects(results["default"]).items() if kind == "Service"]
    (service,) = services
    assert service["spec"]["selector"].items() <= template["metadata"]["labels"].items()
    assert service["spec"]["ports"][0]["targetPort"] == port


def test_metrics_off_removes_listener_port_annotations_and_service(results: dict[str, Any]) -> None:
    template = pod(results["metrics-off"])
    sidecar = memoryd_container(template["spec"])
    assert flag(sidecar, "--metrics-listen") is None
    assert [p["name"] for p in sidecar["ports"]] == ["memoryd-health"]
    assert not [a for a in template["metadata"]["annotations"] if a.startswith("prometheus.io/")]
    assert not [k for k, _ in objects(results["metrics-off"]) if k == "Service"]


def test_service_monitor_selects_the_metrics_service(results: dict[str, Any]) -> None:
    objs = objects(results["servicemonitor"])
    (monitor,) = [o for (kind, _), o in objs.items() if kind == "ServiceMonitor"]
    (service,) = [o for (kind, _), o in objs.items() if kind == "Service"]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"]["matchNames"] == ["agents"]
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == [p["name"] for p in service["spec"]["ports"]]
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert not [k for k, _ in objects(results["default"]) if k == "ServiceMonitor"]


def test_redis_url_and_password_reach_only_memoryd(results: dict[str, Any]) -> None:
    objs = objects(results["redis"])
    spec = pod(results["redis"])["spec"]
    sidecar, agent = memoryd_container(spec), agent_container(spec)
    ref = next(e for e in sidecar["env"] if e["name"] == "MEMORYD_REDIS_URL")["valueFrom"]["secretKeyRef"]
    secret = objs[("Secret", ref["name"])]
    assert secret["stringData"][ref["key"]] == CI_VALUES["redis"]["redis"]["url"]
    password_file = flag(sidecar, "--redis-password-file")
    assert password_file is not None
    mount = mount_for(sidecar, password_file)
    items = volume(spec, mount["name"])["secret"]["items"]
    (item,) = [i for i in items if password_file.endswith("/" + i["path"])]
    assert secret["stringData"][item["key"]] == CI_VALUES["redis"]["redis"]["password"]
    assert mount["name"] not in [m["name"] for m in agent.get("volumeMounts", [])]
    assert "MEMORYD_REDIS_URL" not in [e["name"] for e in agent["env"]]
    assert flag(sidecar, "--redis-url") is None, "the URL may hold credentials: never in args"


def test_auth_token_is_shared_with_the_agent(results: dict[str, Any]) -> None:
    objs = objects(results["auth"])
    spec = pod(results["auth"])["spec"]
    sidecar, agent = memoryd_container(spec), agent_container(spec)
    token_file = flag(sidecar, "--auth-token-file")
    assert token_file is not None
    env = {e["name"]: e.get("value") for e in agent["env"]}
    assert env["MEMORYD_TOKEN_FILE"] == token_file
    assert mount_for(agent, token_file) == mount_for(sidecar, token_file)
    secret_volume = volume(spec, mount_for(sidecar, token_file)["name"])["secret"]
    (item,) = secret_volume["items"]
    token = objs[("Secret", secret_volume["secretName"])]["stringData"][item["key"]]
    assert token == CI_VALUES["auth"]["auth"]["token"]


def test_existing_secret_is_referenced_not_created(results: dict[str, Any]) -> None:
    objs = objects(results["existing-secret"])
    assert not [k for k, _ in objs if k == "Secret"]
    existing = CI_VALUES["existing-secret"]["existingSecret"]
    spec = pod(results["existing-secret"])["spec"]
    sidecar = memoryd_container(spec)
    ref = next(e for e in sidecar["env"] if e["name"] == "MEMORYD_REDIS_URL")["valueFrom"]["secretKeyRef"]
    assert ref == {"name": existing["name"], "key": existing["redisUrlKey"]}
    secrets = {v["name"]: v["secret"] for v in spec["volumes"] if "secret" in v}
    assert {s["secretName"] for s in secrets.values()} == {existing["name"]}
    keys = {i["key"] for s in secrets.values() for i in s["items"]}
    assert keys == {existing["redisPasswordKey"], existing["authTokenKey"]}


def test_unix_socket_is_shared_through_an_empty_dir(results: dict[str, Any]) -> None:
    spec = pod(results["unix-socket"])["spec"]
    sidecar, agent = memoryd_container(spec), agent_container(spec)
    listen = flag(sidecar, "--listen")
    assert listen == "unix:/var/run/memoryd/memoryd.sock"
    socket_path = listen.removeprefix("unix:")
    assert mount_for(sidecar, socket_path) == mount_for(agent, socket_path)
    assert "emptyDir" in volume(spec, mount_for(agent, socket_path)["name"])
    env = {e["name"]: e.get("value") for e in agent["env"]}
    assert env["MEMORYD_ADDR"] == listen
    # The socket is mode 0660, group 10001: the agent reaches it through fsGroup.
    assert spec["securityContext"]["fsGroup"] == DEFAULTS["securityContext"]["runAsGroup"]


def test_tls_secret_is_mounted_for_server_and_client(results: dict[str, Any]) -> None:
    spec = pod(results["tls"])["spec"]
    sidecar, agent = memoryd_container(spec), agent_container(spec)
    paths = [flag(sidecar, f) for f in ("--tls-cert", "--tls-key", "--tls-client-ca")]
    assert all(paths)
    mounts = {mount_for(sidecar, str(p))["name"] for p in paths}
    assert len(mounts) == 1
    assert volume(spec, mounts.pop())["secret"]["secretName"] == CI_VALUES["tls"]["tls"]["secretName"]
    # The agent verifies the server with the same CA.
    ca = {e["name"]: e.get("value") for e in agent["env"]}["MEMORYD_TLS_CA_FILE"]
    assert ca == flag(sidecar, "--tls-client-ca") and mount_for(agent, ca) == mount_for(sidecar, ca)


def test_library_only_renders_the_shared_objects(results: dict[str, Any]) -> None:
    kinds = sorted(kind for kind, _ in objects(results["library-only"]))
    assert kinds == ["ConfigMap", "Secret", "Service"]


def test_app_chart_gets_the_same_sidecar_as_the_example(results: dict[str, Any]) -> None:
    objs = objects(results["app-chart"])
    spec = pod(results["app-chart"])["spec"]
    sidecar = memoryd_container(spec)
    assert sidecar["restartPolicy"] == "Always" and sidecar["image"].startswith("memoryd:")
    # The subchart rendered the ConfigMap the parent's pod mounts, under the same name.
    assert ("ConfigMap", volume(spec, "memoryd-config")["configMap"]["name"]) in objs
    service = next(o for (kind, _), o in objs.items() if kind == "Service")
    assert service["spec"]["selector"].items() <= pod(results["app-chart"])["metadata"]["labels"].items()
    classic = pod(results["app-chart-classic"])["spec"]
    assert [c["name"] for c in classic["containers"]] == ["agent", "memoryd"]


# Kubernetes objects passed through whole: documented as one value.
PASSTHROUGH = {"resources", "securityContext", "podSecurityContext", "labels"}


def _leaf_paths(values: Any, prefix: str = "") -> list[str]:
    if isinstance(values, dict) and values and prefix.rsplit(".", 1)[-1] not in PASSTHROUGH:
        return [p for k, v in values.items() for p in _leaf_paths(v, f"{prefix}.{k}" if prefix else k)]
    return [prefix]


def test_readme_documents_every_value() -> None:
    readme = (CHART / "README.md").read_text()
    missing = [p for p in _leaf_paths(DEFAULTS) if f"`{p}`" not in readme]
    assert missing == []


@pytest.mark.parametrize("name", [n for n, v in CI_VALUES.items() if v.get("redis", {}).get("url")])
def test_documented_redis_urls_are_accepted_by_the_daemon(name: str) -> None:
    from memoryd.store.url import parse_url

    url = CI_VALUES[name]["redis"]["url"]
    assert parse_url(url).mode == ("cluster" if url.startswith("redis+cluster://") else "standalone")


ALERTS = {"MemorydCircuitBreakerOpen", "MemorydNotReady", "MemorydUnavailableErrors", "MemorydFlushFailures",
          "MemorydLockContention", "MemorydAppendLatencySLO", "MemorydRestarted"}


def test_monitoring_objects_are_off_by_default(results: dict[str, Any]) -> None:
    kinds = {kind for kind, _ in objects(results["default"])}
    assert not kinds & {"ServiceMonitor", "PrometheusRule", "PodDisruptionBudget", "NetworkPolicy"}
    assert [name for kind, name in objects(results["default"]) if kind == "ConfigMap"] == ["demo-memoryd"]
    assert results["default"]["promql"] == []


def test_prometheus_rule_carries_the_documented_alerts(results: dict[str, Any]) -> None:
    objs = objects(results["observability"])
    (rule,) = [o for (kind, _), o in objs.items() if kind == "PrometheusRule"]
    assert rule["metadata"]["labels"]["release"] == "prometheus"
    rules = [r for group in rule["spec"]["groups"] for r in group["rules"]]
    assert {r["alert"] for r in rules} == ALERTS
    for r in rules:
        assert r["labels"]["team"] == "agents" and r["labels"]["severity"] in ("critical", "warning", "info")
        assert r["annotations"]["summary"] and r["annotations"]["description"]
    by_name = {r["alert"]: r for r in rules}
    thresholds = DEFAULTS["metrics"]["prometheusRule"]
    assert by_name["MemorydCircuitBreakerOpen"]["for"] == "1m"  # docs/operations.md: open for > 1 min
    assert by_name["MemorydAppendLatencySLO"]["expr"].endswith(f"> {thresholds['appendLatencyP99Seconds']}")
    assert by_name["MemorydUnavailableErrors"]["expr"].endswith(f"> {thresholds['unavailableRatio']}")
    # Prometheus' own template variables reach Prometheus untouched by Helm.
    assert "{{ $labels.pod }}" in by_name["MemorydCircuitBreakerOpen"]["annotations"]["description"]


def test_dashboard_config_map_is_discoverable_and_holds_the_dashboard(results: dict[str, Any]) -> None:
    objs = objects(results["observability"])
    (config_map,) = [o for (kind, name), o in objs.items() if kind == "ConfigMap" and name.endswith("-dashboard")]
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["metadata"]["annotations"] == {"grafana_folder": "Agents"}
    dashboard = json.loads(config_map["data"]["memoryd.json"])
    assert dashboard == json.loads((CHART / "dashboards" / "memoryd.json").read_text())
    assert dashboard["uid"] and len(dashboard["panels"]) > 10


def test_shared_mode_gets_a_disruption_budget_and_a_network_policy(results: dict[str, Any]) -> None:
    objs = objects(results["shared"])
    labels = pod(results["shared"])["metadata"]["labels"]
    (pdb,) = [o for (kind, _), o in objs.items() if kind == "PodDisruptionBudget"]
    assert pdb["spec"]["minAvailable"] == 1 and "maxUnavailable" not in pdb["spec"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    (policy,) = [o for (kind, _), o in objs.items() if kind == "NetworkPolicy"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    rules = {rule["ports"][0]["port"]: rule.get("from") for rule in policy["spec"]["ingress"]}
    values = CI_VALUES["shared"]["networkPolicy"]
    assert rules == {
        DEFAULTS["health"]["port"]: None,  # open: the kubelet's probes
        DEFAULTS["metrics"]["port"]: DEFAULTS["networkPolicy"]["metricsFrom"],
        50051: values["apiFrom"],  # the memory API: only the agents
        8080: None,  # the agent's own port (extraIngress)
    }
    # The daemon really listens where the policy opens the API, with the token it needs there.
    sidecar = memoryd_container(pod(results["shared"])["spec"])
    assert flag(sidecar, "--listen") == "0.0.0.0:50051" and flag(sidecar, "--auth-token-file")


def test_sidecar_policy_keeps_the_api_pod_local(results: dict[str, Any]) -> None:
    """With the default loopback API the policy opens only health and metrics."""
    policy = next(o for (kind, _), o in objects(results["network-policy"]).items() if kind == "NetworkPolicy")
    ports = [rule["ports"][0]["port"] for rule in policy["spec"]["ingress"]]
    assert ports == [DEFAULTS["health"]["port"], DEFAULTS["metrics"]["port"]]


def _exported_names(text: str) -> set[str]:
    """Every series name /metrics can carry, from the families it declares (a family with no
    sample yet still has its HELP and TYPE lines)."""
    suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_count", "_sum", "_created"),
                "summary": ("", "_count", "_sum", "_created"), "info": ("_info",)}
    return {family.name + suffix for family in text_string_to_metric_families(text)
            for suffix in suffixes.get(family.type, ("",))}


async def test_rules_and_dashboard_select_only_metrics_the_daemon_exports(
    results: dict[str, Any], redis_standalone: RedisProcess
) -> None:
    """Every PromQL expression shipped with the chart parses, and every metric it selects is
    in a real scrape of a daemon on Redis after real traffic (plus a flush under a lock)."""
    async with running_server(store=open_store(redis_standalone.url), metrics_listen="127.0.0.1:0") as srv, \
            srv.client() as c:
        words = " ".join(f"fact{i}" for i in range(400))
        for i in range(3):
            await c.append("default", [{"role": "user", "content": f"{i} {words}"}], key="dash")
        await c.read_all("default", key="dash")
        async for _ in c.watch("default", key="dash"):
            break
        await c.flush("default", key="dash")
        text, _ = await scrape(srv.server.ports["metrics"])
    exported = _exported_names(text)
    shipped = results["observability"]["promql"]
    assert len({e["object"] for e in shipped}) == 2 and len(shipped) > 20  # the rule and the dashboard
    assert [e for e in shipped if e["error"]] == []
    unknown = {(e["rule"], m) for e in shipped for m in e["metrics"] if m not in exported}
    assert unknown == set()
    # Not vacuous: the Redis, process and stream metrics are among those checked.
    selected = {m for e in shipped for m in e["metrics"]}
    assert {"memoryd_redis_command_duration_seconds_bucket", "process_start_time_seconds",
            "memoryd_open_streams", "memoryd_ready"} <= selected
