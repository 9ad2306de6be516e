"""Reading a rendered pod spec the way the kubelet would: containers, flags, mounts."""

from __future__ import annotations

from typing import Any


def memoryd_container(spec: dict[str, Any]) -> dict[str, Any]:
    """The one container running `memoryd serve`, native (init) or classic."""
    found = [c for c in spec.get("initContainers", []) + spec["containers"] if c.get("args", [""])[0] == "serve"]
    assert len(found) == 1, "exactly one memoryd container"
    return found[0]


def agent_containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for c in spec["containers"] if c is not memoryd_container(spec)]


def flag(container: dict[str, Any], name: str) -> str | None:
    args: list[str] = [str(a) for a in container["args"]]
    return args[args.index(name) + 1] if name in args else None


def env_values(container: dict[str, Any]) -> dict[str, str | None]:
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def mount_for(container: dict[str, Any], path: str) -> dict[str, Any]:
    """The volumeMount whose directory holds `path`."""
    mounts = [m for m in container.get("volumeMounts", []) if path.startswith(m["mountPath"].rstrip("/") + "/")]
    assert mounts, f"{path} is not on any volume of {container['name']}"
    return mounts[0]


def volume(spec: dict[str, Any], name: str) -> dict[str, Any]:
    return next(v for v in spec["volumes"] if v["name"] == name)


def assert_hardened(container: dict[str, Any]) -> None:
    sc = container["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"]["drop"] == ["ALL"]


def assert_probes_on_health_listener(sidecar: dict[str, Any]) -> None:
    """gRPC probes dial the Pod IP: they must target the --health-listen port, bound to all addresses."""
    health = flag(sidecar, "--health-listen")
    assert health is not None
    host, port = health.rsplit(":", 1)
    assert host == "0.0.0.0", "the kubelet dials the Pod IP"
    probes = {kind: sidecar[f"{kind}Probe"] for kind in ("startup", "liveness", "readiness")}
    assert {kind: p["grpc"]["port"] for kind, p in probes.items()} == dict.fromkeys(probes, int(port))
    # Liveness must survive a Redis outage (else the kubelet restarts memoryd in a loop); readiness reports it.
    assert probes["liveness"]["grpc"]["service"] == "liveness"
    assert probes["startup"]["grpc"]["service"] == "liveness"
    assert probes["readiness"]["grpc"]["service"] == "memoryd.v1.MemoryService"


def assert_daemon_accepts(container: dict[str, Any], env: dict[str, str] | None = None) -> None:
    """The container's args parse with the daemon's own command line and settings checks
    (every flag exists, every value has the right type), and the API bind is one the
    daemon allows. Files named by flags exist only in the pod, so they are not read."""
    from memoryd import cli, settings
    from memoryd.server import is_loopback

    ns = cli.build_parser().parse_args([str(a) for a in container["args"]])
    assert ns.command == "serve"
    s = settings.from_sources(vars(ns), env=env or {})
    assert is_loopback(s.listen) or s.auth_token_file or s.tls_cert or s.allow_insecure_bind
