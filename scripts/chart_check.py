"""Lint and render a Helm chart with Helm's own Go library, then validate the output.

No helm binary and no cluster are needed. Runs in the tool virtualenv (`.tool-venv`,
created by tests/deploy/conftest.py from tests/deploy/tool-requirements.txt), which
holds `helm-sdkpy` (Helm 4 as a shared library) and `kubernetes-validate`:

    .tool-venv/bin/python scripts/chart_check.py helm/memoryd -f my-values.yaml

Three steps per values set:

1. lint    -- helm-sdkpy's `Lint` (what `helm lint` runs: Chart.yaml, values against
   values.schema.json, every template rendered and parsed). Lint takes no values
   overrides, so the chart is copied and the overrides merged into its values.yaml.
2. render  -- helm-sdkpy exposes no `template`/dry-run, so the chart is installed
   against a minimal in-process stand-in for the Kubernetes API (discovery, then it
   records the objects Helm creates) with HELM_DRIVER=memory. Helm renders exactly as
   `helm install` would and returns the manifest; template errors come back as text.
3. validate -- every rendered object is checked by `kubernetes-validate` (strict:
   unknown fields are errors) for each requested Kubernetes version. The
   prometheus-operator custom resources (ServiceMonitor, PrometheusRule) are checked
   against the models that `cloudcoil-models-prometheus-operator` generates from the
   operator's CRD schemas (types, required fields, patterns), strictly: a field the
   model does not know is an error, as with kubernetes-validate.
4. promql -- every PromQL expression the chart ships (PrometheusRule rules, the Grafana
   dashboard's queries and variables, Grafana's `$variables` replaced by plain values) is
   parsed with `promql-parser` (a port of Prometheus' parser); the result lists the
   metric names each one selects, so a test can compare them with a real scrape.

`--batch` reads {"chart", "kube_version", "validate_versions", "scenarios": [{"name",
"values", and any of the former to override}], "manifests": {name: YAML text}} as
JSON on stdin and writes {"helm": version, "results": {name: result}} as JSON: what
tests/deploy uses (manifests are only validated).
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import os
import re
import shutil
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

# Helm's Go runtime reads its environment once, at process start: keep releases in
# memory (no Secrets written to the stand-in API) by re-executing when needed.
if os.environ.get("HELM_DRIVER") != "memory":
    os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, "HELM_DRIVER": "memory"})

import helm_sdkpy
import kubernetes_validate
import promql_parser
import pydantic
import yaml
from cloudcoil.models.prometheus_operator import v1 as prometheus_operator_v1

SEVERITY = {0: "unknown", 1: "info", 2: "warning", 3: "error"}
CRD_GROUPS = ("monitoring.coreos.com",)
# group, version -> (plural, kind, namespaced) the stand-in API advertises.
RESOURCES: dict[tuple[str, str], list[tuple[str, str, bool]]] = {
    ("", "v1"): [
        ("configmaps", "ConfigMap", True),
        ("secrets", "Secret", True),
        ("services", "Service", True),
        ("serviceaccounts", "ServiceAccount", True),
        ("pods", "Pod", True),
        ("namespaces", "Namespace", False),
    ],
    ("apps", "v1"): [("deployments", "Deployment", True), ("statefulsets", "StatefulSet", True)],
    ("policy", "v1"): [("poddisruptionbudgets", "PodDisruptionBudget", True)],
    ("networking.k8s.io", "v1"): [("networkpolicies", "NetworkPolicy", True)],
    ("monitoring.coreos.com", "v1"): [("servicemonitors", "ServiceMonitor", True),
                                      ("prometheusrules", "PrometheusRule", True)],
}
CRD_MODELS: dict[str, type[pydantic.BaseModel]] = {
    "monitoring.coreos.com/v1/ServiceMonitor": prometheus_operator_v1.ServiceMonitor,
    "monitoring.coreos.com/v1/PrometheusRule": prometheus_operator_v1.PrometheusRule,
}


def merge(base: Any, override: Any) -> Any:
    """Helm's coalescing for user values: maps merge, anything else replaces, null deletes."""
    if not isinstance(base, dict) or not isinstance(override, dict):
        return copy.deepcopy(override)
    out = copy.deepcopy(base)
    for key, value in override.items():
        if value is None:
            out.pop(key, None)
        elif key in out:
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def lint(chart: Path, values: dict[str, Any]) -> dict[str, Any]:
    """Run Helm's linter on a copy of the chart whose values.yaml has `values` merged in."""
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / chart.name
        shutil.copytree(chart, target, symlinks=False)
        values_file = target / "values.yaml"
        defaults = yaml.safe_load(values_file.read_text()) or {}
        values_file.write_text(yaml.safe_dump(merge(defaults, values), sort_keys=False))
        result = asyncio.run(helm_sdkpy.Lint(helm_sdkpy.Configuration()).run(str(target)))
    messages = [
        {"severity": SEVERITY.get(m["Severity"], str(m["Severity"])), "path": m["Path"]}
        for m in result.get("Messages") or []
    ]
    return {"charts": result.get("TotalChartsLinted", 0), "messages": messages}


class _FakeApi(BaseHTTPRequestHandler):
    """Just enough of the Kubernetes API for Helm to install: discovery and create."""

    protocol_version = "HTTP/1.1"
    kube_version = "1.33.0"

    def _send(self, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        path = urlparse(self.path).path
        if path == "/version":
            major, minor, _ = self.kube_version.split(".")
            return self._send(200, {"major": major, "minor": minor, "gitVersion": f"v{self.kube_version}",
                                    "platform": "linux/amd64"})
        if path == "/api":
            return self._send(200, {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []})
        if path == "/apis":
            groups = [
                {"name": g, "versions": [{"groupVersion": f"{g}/{v}", "version": v}],
                 "preferredVersion": {"groupVersion": f"{g}/{v}", "version": v}}
                for g, v in RESOURCES if g
            ]
            return self._send(200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
        for (group, version), resources in RESOURCES.items():
            if path == (f"/apis/{group}/{version}" if group else f"/api/{version}"):
                return self._send(200, {
                    "kind": "APIResourceList", "apiVersion": "v1",
                    "groupVersion": f"{group}/{version}" if group else version,
                    "resources": [
                        {"name": name, "singularName": "", "namespaced": namespaced, "kind": kind,
                         "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]}
                        for name, kind, namespaced in resources
                    ],
                })
        # Every object is new: Helm checks for conflicts with a GET first.
        return self._send(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                "reason": "NotFound", "code": 404, "message": "not found"})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
        body.setdefault("metadata", {})["resourceVersion"] = "1"
        self._send(201, body)

    def log_message(self, format: str, *args: Any) -> None:
        return


def render(chart: Path, values: dict[str, Any], kube_version: str, release: str, namespace: str) -> str:
    """Install the chart against the stand-in API and return Helm's rendered manifest."""
    handler = type("Api", (_FakeApi,), {"kube_version": kube_version})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        kubeconfig = yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "check",
            "clusters": [{"name": "check", "cluster": {"server": f"http://127.0.0.1:{server.server_address[1]}"}}],
            "contexts": [{"name": "check", "context": {"cluster": "check", "user": "check", "namespace": namespace}}],
            "users": [{"name": "check", "user": {"token": "unused"}}],
        })
        config = helm_sdkpy.Configuration(namespace=namespace, kubeconfig=kubeconfig)
        result = asyncio.run(helm_sdkpy.Install(config).run(release, str(chart), values=values or None,
                                                            wait=False, timeout=30))
        return str(result["manifest"])
    finally:
        server.shutdown()
        server.server_close()


def _unknown_fields(given: Any, kept: Any, path: str = "") -> list[str]:
    """Paths present in ``given`` that the model dropped (pydantic ignores extra fields)."""
    if isinstance(given, dict) and isinstance(kept, dict):
        return [p for k, v in given.items()
                for p in ([f"{path}.{k}"] if k not in kept else _unknown_fields(v, kept[k], f"{path}.{k}"))]
    if isinstance(given, list) and isinstance(kept, list):
        return [p for i, (g, k) in enumerate(zip(given, kept, strict=False))
                for p in _unknown_fields(g, k, f"{path}[{i}]")]
    return []


def validate_custom(doc: dict[str, Any]) -> str:
    """A prometheus-operator object against its CRD model: types, patterns, no unknown field."""
    model = CRD_MODELS.get(f"{doc.get('apiVersion')}/{doc.get('kind')}")
    if model is None:
        return "invalid: no schema for this custom resource"
    try:
        obj = model.model_validate(doc)
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        return f"invalid: {'.'.join(str(p) for p in first['loc'])}: {first['msg']}"
    unknown = _unknown_fields(doc, obj.model_dump(mode="json", by_alias=True, exclude_unset=True))
    return f"invalid: unknown field {unknown[0]}" if unknown else "valid"


GRAFANA_INTERVALS = re.compile(r"\$(__rate_interval|__interval|__range)\b|\$\{(__rate_interval|__interval|__range)\}")
GRAFANA_VARIABLE = re.compile(r"\$\{?[A-Za-z_][A-Za-z0-9_]*\}?")


def promql(expr: str) -> dict[str, Any]:
    """Parse one expression (Grafana variables replaced) and list the metric names it selects."""
    text = GRAFANA_VARIABLE.sub(".*", GRAFANA_INTERVALS.sub("5m", expr))
    text = re.sub(r"^label_values\((.*?)(,\s*\w+)?\)$", r"\1", text.strip())  # a Grafana variable query
    names: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector) and node.name:
            names.add(node.name)

    try:
        promql_parser.walk(promql_parser.parse(text), pre_visit=visit)
    except (ValueError, TypeError) as exc:
        return {"expr": expr, "metrics": [], "error": str(exc)}
    return {"expr": expr, "metrics": sorted(names), "error": None}


def _dashboard_queries(node: Any) -> list[str]:
    """Every target ``expr`` and variable ``query`` of a Grafana dashboard."""
    if isinstance(node, list):
        return [q for item in node for q in _dashboard_queries(item)]
    if not isinstance(node, dict):
        return []
    found = [node["expr"]] if isinstance(node.get("expr"), str) else []
    query = node.get("query")
    if node.get("type") == "query" and isinstance(query, dict | str):
        found.append(query["query"] if isinstance(query, dict) else query)
    return found + [q for value in node.values() for q in _dashboard_queries(value)]


def shipped_promql(manifest: str) -> list[dict[str, Any]]:
    """The PromQL of every PrometheusRule and of every dashboard ConfigMap (JSON with panels)."""
    report = []
    for doc in yaml.safe_load_all(manifest):
        if not doc:
            continue
        name = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        if doc.get("kind") == "PrometheusRule":
            for group in doc["spec"]["groups"]:
                for rule in group["rules"]:
                    report.append({"object": name, "rule": rule.get("alert") or rule.get("record"),
                                   **promql(str(rule["expr"]))})
        elif doc.get("kind") == "ConfigMap":
            for key, text in (doc.get("data") or {}).items():
                if not key.endswith(".json"):
                    continue
                dashboard = json.loads(text)
                if isinstance(dashboard, dict) and "panels" in dashboard:
                    report.extend({"object": name, "rule": key, **promql(q)} for q in _dashboard_queries(dashboard))
    return report


def validate(manifest: str, versions: list[str]) -> list[dict[str, Any]]:
    """Check every object against the Kubernetes schemas (strict) of each version."""
    report = []
    for doc in yaml.safe_load_all(manifest):
        if not doc:
            continue
        name = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        if str(doc.get("apiVersion", "")).split("/")[0] in CRD_GROUPS:
            report.append({"object": name, "version": None, "status": validate_custom(doc)})
            continue
        for version in versions:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
                status = "valid"
            except kubernetes_validate.ValidationError as exc:
                status = f"invalid: {'.'.join(str(p) for p in exc.path)}: {exc.message}"
            except kubernetes_validate.SchemaNotFoundError as exc:
                status = f"invalid: {exc}"
            report.append({"object": name, "version": version, "status": status})
    return report


def check(chart: Path, values: dict[str, Any], kube_version: str, versions: list[str],
          release: str = "demo", namespace: str = "agents") -> dict[str, Any]:
    """Lint, render and validate one values set; errors are data, not exceptions."""
    out: dict[str, Any] = {"lint": lint(chart, values), "manifest": None, "render_error": None, "validation": [],
                           "promql": []}
    try:
        out["manifest"] = render(chart, values, kube_version, release, namespace)
    except helm_sdkpy.HelmError as exc:
        out["render_error"] = str(exc)
        return out
    out["validation"] = validate(out["manifest"], versions)
    out["promql"] = shipped_promql(out["manifest"])
    return out


def _batch() -> int:
    """Each scenario may override the request's chart, kube_version and validate_versions."""
    request = json.load(sys.stdin)
    results: dict[str, Any] = {}
    # Plain manifests (examples/kubernetes): validation only.
    for name, text in (request.get("manifests") or {}).items():
        results[name] = {"validation": validate(text, request.get("validate_versions") or ["1.33"])}
    for s in request.get("scenarios") or []:
        opts = {**request, **s}
        kube_version = opts.get("kube_version", "1.33.0")
        results[s["name"]] = check(Path(opts["chart"]).resolve(), s.get("values") or {}, kube_version,
                                   opts.get("validate_versions") or [kube_version],
                                   opts.get("release", "demo"), opts.get("namespace", "agents"))
    json.dump({"helm": helm_sdkpy.get_version(), "results": results}, sys.stdout)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("chart", nargs="?", type=Path)
    parser.add_argument("-f", "--values", action="append", default=[], type=Path, help="values file (repeatable)")
    parser.add_argument("--kube-version", default="1.33.0", help="version the stand-in API reports")
    parser.add_argument("--validate", action="append", help="Kubernetes versions to validate against")
    parser.add_argument("--show", action="store_true", help="print the rendered manifest")
    parser.add_argument("--batch", action="store_true", help="JSON request on stdin, JSON result on stdout")
    args = parser.parse_args()
    if args.batch:
        return _batch()
    if args.chart is None:
        parser.error("a chart directory is required")
    values: dict[str, Any] = {}
    for path in args.values:
        values = merge(values, yaml.safe_load(path.read_text()) or {})
    result = check(args.chart.resolve(), values, args.kube_version, args.validate or [args.kube_version])
    failed = False
    for message in result["lint"]["messages"]:
        failed |= message["severity"] in ("warning", "error")
        print(f"lint {message['severity']}: {message['path']}")
    if result["render_error"]:
        print(f"render error: {result['render_error']}")
        return 1
    for entry in result["validation"]:
        failed |= entry["status"].startswith("invalid")
        print(f"{entry['object']} (Kubernetes {entry['version']}): {entry['status']}")
    for entry in result["promql"]:
        failed |= entry["error"] is not None
        print(f"{entry['object']} {entry['rule']}: {entry['error'] or 'parses'}")
    if args.show:
        print(result["manifest"])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
