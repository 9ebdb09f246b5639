"""What the chart deploys, as data: `helm template` rendered, then every container of every
workload taken with its command, arguments, environment (literal values, fieldRefs, envFrom
ConfigMaps and Secrets, all resolved exactly as the kubelet would) and the files its ConfigMap
volumes mount. Nothing here is written by hand: the rehearsal runs what this returns."""

from __future__ import annotations

import base64
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from tests.deploy.deploy_helpers import CHART, require_tool

REPO = CHART.parents[1]


@dataclass
class Container:
    workload: str            # the Deployment/DaemonSet's name
    kind: str
    component: str           # the container's name (worker, sink-s3, collector ...)
    command: list[str]
    args: list[str]
    env: dict[str, str]
    env_sources: dict[str, str]   # variable -> where it came from (ConfigMap/Secret name, "env")
    files: dict[str, dict[str, str]] = field(default_factory=dict)  # mountPath -> {file: text}
    file_modes: dict[str, int] = field(default_factory=dict)        # mountPath -> file mode
    empty_dirs: list[str] = field(default_factory=list)             # mountPaths of emptyDirs
    ports: dict[str, int] = field(default_factory=dict)
    run_as_user: int | None = None
    run_as_group: int | None = None
    fs_group: int | None = None
    read_only_root: bool = False
    readiness_path: str | None = None
    replicas: int = 1


def render(*values: Path, sets: dict[str, str] | None = None, release: str = "ms",
           namespace: str = "mirrorscope") -> list[dict]:
    helm = require_tool("helm", extra_dirs=(REPO / ".ci" / "cache" / "bin",))
    cmd = [str(helm), "template", release, str(CHART), "--namespace", namespace]
    for v in values:
        cmd += ["-f", str(v)]
    for k, v in (sets or {}).items():
        cmd += ["--set-string", f"{k}={v}"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=120).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def _data(obj: dict) -> dict[str, str]:
    if obj["kind"] == "Secret":
        out = {k: base64.b64decode(v).decode() for k, v in (obj.get("data") or {}).items()}
        out.update(obj.get("stringData") or {})
        return out
    return dict(obj.get("data") or {})


def containers(manifests: list[dict], pod_name: str = "{component}-0") -> list[Container]:
    by_kind = {(m["kind"], m["metadata"]["name"]): m for m in manifests}
    out = []
    for m in manifests:
        if m["kind"] not in ("Deployment", "DaemonSet", "StatefulSet"):
            continue
        spec = m["spec"]["template"]["spec"]
        pod_sc = spec.get("securityContext") or {}
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for c in spec["containers"]:
            env: dict[str, str] = {}
            sources: dict[str, str] = {}
            for ef in c.get("envFrom", []):
                ref = ef.get("configMapRef") or ef.get("secretRef")
                kind = "ConfigMap" if "configMapRef" in ef else "Secret"
                obj = by_kind.get((kind, ref["name"]))
                if obj is None:
                    if ref.get("optional"):
                        continue
                    raise KeyError(f"{m['metadata']['name']}: envFrom {kind} {ref['name']} is not "
                                   "rendered (it must exist in the cluster beforehand)")
                for k, v in _data(obj).items():
                    env[ef.get("prefix", "") + k] = v
                    sources[ef.get("prefix", "") + k] = f"{kind}/{ref['name']}"
            name = pod_name.format(component=c["name"])
            for e in c.get("env", []):
                if "value" in e:
                    env[e["name"]] = str(e["value"])
                else:
                    vf = e["valueFrom"]
                    if "fieldRef" in vf:
                        path = vf["fieldRef"]["fieldPath"]
                        env[e["name"]] = {"metadata.name": name, "metadata.namespace": m["metadata"].get(
                            "namespace", "default")}.get(path, f"<{path}>")
                    else:
                        ref = vf.get("secretKeyRef") or vf.get("configMapKeyRef")
                        kind = "Secret" if "secretKeyRef" in vf else "ConfigMap"
                        env[e["name"]] = _data(by_kind[(kind, ref["name"])])[ref["key"]]
                sources[e["name"]] = "env"
            files, file_modes, empty = {}, {}, []
            for vm in c.get("volumeMounts", []):
                vol = volumes[vm["name"]]
                if "configMap" in vol or "secret" in vol:
                    src = vol.get("configMap") or vol.get("secret")
                    kind = "ConfigMap" if "configMap" in vol else "Secret"
                    data = _data(by_kind[(kind, src.get("name") or src.get("secretName"))])
                    items = src.get("items") or [{"key": k, "path": k} for k in data]
                    files[vm["mountPath"]] = {it["path"]: data[it["key"]] for it in items}
                    # Kubernetes' default mode of ConfigMap and Secret volume files is 0644
                    file_modes[vm["mountPath"]] = int(src.get("defaultMode", 0o644))
                elif "emptyDir" in vol:
                    empty.append(vm["mountPath"])
            sc = {**pod_sc, **(c.get("securityContext") or {})}
            ports = {p.get("name", str(p["containerPort"])): p["containerPort"]
                     for p in c.get("ports", [])}
            rp = (c.get("readinessProbe") or {}).get("httpGet", {}).get("path")
            out.append(Container(
                workload=m["metadata"]["name"], kind=m["kind"], component=c["name"],
                command=list(c.get("command") or []), args=[str(a) for a in c.get("args") or []],
                env=env, env_sources=sources, files=files, file_modes=file_modes,
                empty_dirs=empty, ports=ports, fs_group=pod_sc.get("fsGroup"),
                run_as_user=sc.get("runAsUser"), run_as_group=sc.get("runAsGroup"),
                read_only_root=bool(sc.get("readOnlyRootFilesystem")), readiness_path=rp,
                replicas=int(m["spec"].get("replicas") or 1)))
    return out
