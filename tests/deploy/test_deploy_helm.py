"""The Helm chart: lint, render, validate against Kubernetes' JSON schemas, security properties.

Renders: the default values, ci/full-values.yaml (everything on) and two variants that reach the
remaining branches (Deployment collectors + HPA + Kinesis; KEDA on Kinesis).
Built-in kinds are validated by kubernetes-validate with its bundled schemas (strict: unknown fields
fail) for the oldest Kubernetes the chart supports and the newest bundled. The CRD kinds
(ServiceMonitor, KEDA ScaledObject/TriggerAuthentication) have no bundled schema: they are validated
against the hand-written subsets of the upstream CRD schemas in crd_schemas/ (additional properties
rejected, so a misspelt field fails).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from deploy_helpers import CHART, NAMESPACE, require_module, run

jsonschema = require_module("jsonschema")
kubernetes_validate = require_module("kubernetes_validate")
yaml = require_module("yaml")

FULL = str(CHART / "ci" / "full-values.yaml")
RENDERS = {
    "default": (),
    "full": ("-f", FULL),
    "deployment-hpa-kinesis": (
        "--set", "collector.enabled=true", "--set", "collector.kind=Deployment",
        "--set", "collector.config.enrichment.discover=true",
        "--set", "stream.type=kinesis", "--set", "stream.kinesis.streamName=mirrorscope",
        "--set", "aws.region=us-east-1", "--set", "worker.autoscaling.enabled=true",
        "--set", "secret.existingSecret=mirrorscope-credentials",
    ),
    "keda-kinesis": (
        "-f", FULL, "--set", "stream.type=kinesis", "--set", "stream.kinesis.streamName=mirrorscope",
    ),
}
WORKLOAD_KINDS = {"Deployment", "DaemonSet"}
KUBE_VERSIONS = ("1.25.0", kubernetes_validate.utils.latest_version())
CRD_SCHEMAS = {
    (s["apiVersion"], s["kind"]): s["schema"]
    for s in (json.loads(p.read_text()) for p in (Path(__file__).parent / "crd_schemas").glob("*.json"))
}


MIRRORSCOPE = str(Path(sys.executable).with_name("mirrorscope"))


@pytest.fixture(params=sorted(RENDERS), scope="module")
def rendered(request, helm_template):
    return request.param, helm_template(*RENDERS[request.param])


def workloads(docs):
    return [d for d in docs if d["kind"] in WORKLOAD_KINDS]


def containers(doc):
    return doc["spec"]["template"]["spec"]["containers"]


# --------------------------------------------------------------------------------------------
# lint and render
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("values", ["default", "full"])
def test_helm_lint_strict(helm, values):
    args = ["-f", FULL] if values == "full" else ["-f", str(CHART / "ci" / "default-values.yaml")]
    out = run([helm, "lint", CHART, "--strict", "--namespace", NAMESPACE, *args]).stdout
    assert "0 chart(s) failed" in out


def test_render_produces_the_expected_kinds(helm_template):
    kinds = lambda docs: sorted({d["kind"] for d in docs})  # noqa: E731
    assert kinds(helm_template()) == [  # the Secret: the generated state key
        "ConfigMap", "Deployment", "NetworkPolicy", "PodDisruptionBudget", "Secret", "Service",
        "ServiceAccount"]
    assert kinds(helm_template("-f", FULL)) == [
        "ConfigMap", "DaemonSet", "Deployment", "NetworkPolicy", "PodDisruptionBudget", "ScaledObject",
        "Secret", "Service", "ServiceAccount", "ServiceMonitor", "TriggerAuthentication"]
    assert "HorizontalPodAutoscaler" in kinds(helm_template(*RENDERS["deployment-hpa-kinesis"]))


def test_schema_rejects_unknown_and_invalid_values(helm):
    bad = run([helm, "template", "ms", CHART, "--set", "worker.replica=3"], check=False)
    assert bad.returncode != 0 and "replica" in bad.stderr
    bad = run([helm, "template", "ms", CHART, "--set", "collector.kind=StatefulSet"], check=False)
    assert bad.returncode != 0 and "kind" in bad.stderr


# --------------------------------------------------------------------------------------------
# schema validation
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_manifests_validate_against_kubernetes_schemas(rendered, kube_version):
    name, docs = rendered
    checked_crds = 0
    for doc in docs:
        key = (doc["apiVersion"], doc["kind"])
        where = f"{name}: {doc['kind']}/{doc['metadata']['name']}"
        if key in CRD_SCHEMAS:
            try:
                jsonschema.validate(doc, CRD_SCHEMAS[key])
            except jsonschema.ValidationError as e:
                pytest.fail(f"{where} does not match crd_schemas ({'/'.join(map(str, e.path))}): {e.message}")
            checked_crds += 1
            continue
        try:
            kubernetes_validate.validate(doc, kube_version, strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"{where} is invalid for Kubernetes {kube_version}: {e.message} at {list(e.path)}")
        except kubernetes_validate.SchemaNotFoundError:
            pytest.fail(f"{where}: no bundled schema and no crd_schemas entry for {key}")
    if name == "full":
        assert checked_crds == 3  # ServiceMonitor, ScaledObject, TriggerAuthentication


# --------------------------------------------------------------------------------------------
# security properties of every workload
# --------------------------------------------------------------------------------------------

def test_workloads_are_non_root_read_only_and_unprivileged(rendered):
    name, docs = rendered
    assert workloads(docs), name
    for w in workloads(docs):
        where = f"{name}: {w['kind']}/{w['metadata']['name']}"
        pod = w["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, where
        assert pod["securityContext"]["runAsUser"] >= 10000, where
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", where
        assert pod["automountServiceAccountToken"] is False, where
        for key in ("hostNetwork", "hostPID", "hostIPC"):
            assert not pod.get(key), where
        for c in containers(w):
            sc = c["securityContext"]
            assert sc["runAsNonRoot"] is True, where
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc.get("privileged", False) is False, where
            assert "ALL" in sc["capabilities"]["drop"] and not sc["capabilities"].get("add"), where
            assert not any(p.get("hostPort") for p in c.get("ports", [])), where
            # a read-only root needs its writable paths mounted
            assert "/tmp" in {m["mountPath"] for m in c["volumeMounts"]}, where


def test_workloads_have_resources_probes_and_a_pinned_image(rendered):
    name, docs = rendered
    for w in workloads(docs):
        where = f"{name}: {w['kind']}/{w['metadata']['name']}"
        for c in containers(w):
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(c["resources"][kind]), where
            assert c["livenessProbe"]["httpGet"]["port"] == "health", where
            assert c["readinessProbe"]["httpGet"]["port"] == "health", where
            assert c["command"] == ["mirrorscope"], where
            assert c["args"][-2:] == ["--config", "/etc/mirrorscope/config.yaml"] or \
                "--config" in c["args"], where
            image = c["image"]
            assert not image.endswith(":latest") and re.search(r":[\w.-]+(@sha256:[0-9a-f]{64})?$", image), where


def test_commands_are_the_documented_ones(helm_template):
    docs = helm_template("-f", FULL)
    args = {w["metadata"]["name"]: containers(w)[0]["args"][:-2] for w in workloads(docs)}
    assert args == {
        "ms-worker": ["worker"],
        "ms-sink-s3": ["sink", "s3"],
        "ms-sink-cloudwatch": ["sink", "cloudwatch"],
        "ms-collector": ["collect"],
    }
    collector = next(w for w in workloads(docs) if w["metadata"]["name"] == "ms-collector")
    assert {"name": "vxlan", "containerPort": 4789, "protocol": "UDP"} in containers(collector)[0]["ports"]
    worker = next(w for w in workloads(docs) if w["metadata"]["name"] == "ms-worker")
    assert containers(worker)[0]["readinessProbe"]["httpGet"]["path"] == "/readyz"
    env = {e["name"]: e.get("value") for e in containers(worker)[0].get("env", [])}
    assert env["MIRRORSCOPE_WORKER_PROCESSES"] == "2"  # one core process per CPU of its limit
    # With Kinesis the worker is the Kinesis consumer.
    docs = helm_template("-f", FULL, "--set", "stream.type=kinesis",
                         "--set", "stream.kinesis.streamName=mirror")
    worker = next(w for w in workloads(docs) if w["metadata"]["name"] == "ms-worker")
    assert containers(worker)[0]["args"][:-2] == ["kinesis-worker"]
    # Every command the chart runs exists, and reads the config file it is given.
    for cmd in (["worker"], ["kinesis-worker"], ["sink", "s3"], ["sink", "cloudwatch"],
                ["collect"]):
        r = subprocess.run([MIRRORSCOPE, *cmd, "--help"], capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 0 and "--config" in r.stdout, (cmd, r.stderr)


def test_full_values_use_irsa_and_the_digest(helm_template):
    docs = helm_template("-f", FULL)
    sa = next(d for d in docs if d["kind"] == "ServiceAccount")
    assert sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].startswith("arn:aws:iam::")
    assert sa["automountServiceAccountToken"] is False
    for w in workloads(docs):
        assert w["spec"]["template"]["spec"]["serviceAccountName"] == sa["metadata"]["name"]
        assert "@sha256:" in containers(w)[0]["image"]
        # with a digest the CKV_K8S_43 suppression is gone; the Secret-as-env one stays, with its reason
        annotations = w["metadata"].get("annotations", {})
        assert not any(v.startswith("CKV_K8S_43") for v in annotations.values())
        assert any(v.startswith("CKV_K8S_35=") for v in annotations.values())


# --------------------------------------------------------------------------------------------
# replicas are capped at the partition count
# --------------------------------------------------------------------------------------------

def by_kind_name(docs):
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


def test_replicas_capped_at_partitions(helm_template):
    docs = by_kind_name(helm_template(
        "--set", "stream.partitions=4", "--set", "worker.replicas=50", "--set", "sinks.s3.replicas=9"))
    assert docs["Deployment", "ms-mirrorscope-worker"]["spec"]["replicas"] == 4
    assert docs["Deployment", "ms-mirrorscope-sink-s3"]["spec"]["replicas"] == 4
    assert docs["Deployment", "ms-mirrorscope-sink-cloudwatch"]["spec"]["replicas"] == 1
    # a rollout never adds a consumer beyond the partition count
    assert docs["Deployment", "ms-mirrorscope-worker"]["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == 0


def test_hpa_capped_at_partitions(helm_template):
    docs = by_kind_name(helm_template(
        "--set", "stream.partitions=4", "--set", "worker.autoscaling.enabled=true",
        "--set", "worker.autoscaling.minReplicas=10", "--set", "worker.autoscaling.maxReplicas=100"))
    hpa = docs["HorizontalPodAutoscaler", "ms-mirrorscope-worker"]["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (4, 4)
    assert "replicas" not in docs["Deployment", "ms-mirrorscope-worker"]["spec"]  # the HPA owns it


def test_keda_capped_at_partitions_and_never_idle(helm_template):
    docs = by_kind_name(helm_template("-f", FULL))  # partitions 6, maxReplicas 100
    so = docs["ScaledObject", "ms-worker"]["spec"]
    assert (so["minReplicaCount"], so["maxReplicaCount"]) == (2, 6)
    trigger = so["triggers"][0]
    assert trigger["type"] == "kafka"
    assert trigger["metadata"]["topic"] == "mirrorscope.packets"
    assert trigger["metadata"]["allowIdleConsumers"] == "false"
    assert trigger["metadata"]["sasl"] == "aws_msk_iam" and trigger["metadata"]["tls"] == "enable"
    assert trigger["authenticationRef"]["name"] == "ms-worker"
    pid = docs["TriggerAuthentication", "ms-worker"]["spec"]["podIdentity"]
    assert pid == {"provider": "aws", "roleArn": "arn:aws:iam::123456789012:role/mirrorscope-keda"}
    assert docs["Deployment", "ms-sink-s3"]["spec"]["replicas"] == 6  # 50 requested

    kinesis = by_kind_name(helm_template(*RENDERS["keda-kinesis"]))["ScaledObject", "ms-worker"]["spec"]
    assert kinesis["triggers"][0]["type"] == "aws-kinesis-stream"
    assert kinesis["triggers"][0]["metadata"]["streamName"] == "mirrorscope"
    age = kinesis["triggers"][1]
    assert age["type"] == "aws-cloudwatch" and age["authenticationRef"]["name"] == "ms-worker"
    assert age["metadata"]["metricName"] == "GetRecords.IteratorAgeMilliseconds"
    assert age["metadata"]["dimensionValue"] == "mirrorscope"


def test_keda_refuses_to_authenticate_as_its_own_operator(helm_template):
    """KEDA's pod identity without a role uses the operator's own role, which Terraform grants
    nothing: the chart refuses that instead of rendering a scaler that can never read lag."""
    with pytest.raises(pytest.fail.Exception, match="roleArn is required"):
        helm_template("-f", FULL, "--set",
                      "worker.autoscaling.keda.triggerAuthentication.podIdentity.roleArn=")


# --------------------------------------------------------------------------------------------
# the supporting objects select what they should
# --------------------------------------------------------------------------------------------

def matches(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def test_pdbs_network_policies_and_services_select_their_pods(rendered):
    name, docs = rendered
    pods = {w["metadata"]["name"]: w["spec"]["template"]["metadata"]["labels"] for w in workloads(docs)}
    for w in workloads(docs):
        assert matches(w["spec"]["selector"]["matchLabels"], pods[w["metadata"]["name"]])
    for d in docs:
        if d["kind"] == "PodDisruptionBudget":
            sel = d["spec"]["selector"]["matchLabels"]
        elif d["kind"] == "NetworkPolicy":
            sel = d["spec"]["podSelector"]["matchLabels"]
        elif d["kind"] == "Service":
            sel = d["spec"]["selector"]
        else:
            continue
        hits = [n for n, labels in pods.items() if matches(sel, labels)]
        assert len(hits) == 1, f"{name}: {d['kind']}/{d['metadata']['name']} selects {hits}"
    policed = {n for n, labels in pods.items() for d in docs
               if d["kind"] == "NetworkPolicy" and matches(d["spec"]["podSelector"]["matchLabels"], labels)}
    assert policed == set(pods), f"{name}: pods without a NetworkPolicy: {set(pods) - policed}"


def test_service_monitor_selects_every_metrics_service(helm_template):
    docs = helm_template("-f", FULL)
    sm = next(d for d in docs if d["kind"] == "ServiceMonitor")
    metrics = [d for d in docs if d["kind"] == "Service" and d["metadata"]["name"].endswith("-metrics")]
    assert len(metrics) == len(workloads(docs)) == 4
    for svc in metrics:
        assert matches(sm["spec"]["selector"]["matchLabels"], svc["metadata"]["labels"])
        assert svc["spec"]["ports"][0]["name"] == sm["spec"]["endpoints"][0]["port"]


def test_configmap_carries_the_stream_settings(helm_template):
    env = next(d for d in helm_template("-f", FULL)
               if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "ms-env")["data"]
    assert env["MIRRORSCOPE_TRANSPORT"] == "kafka"
    assert env["MIRRORSCOPE_KAFKA_SASL_MECHANISM"] == "AWS_MSK_IAM"
    assert env["MIRRORSCOPE_TOPIC_PACKETS"] == "mirrorscope.packets"
    assert env["MIRRORSCOPE_S3_BUCKET"] == "example-mirrorscope-records"
    assert all(isinstance(v, str) for v in env.values())
    # one result topic per kind of schemas/kinds.py, named by the variable its --topic-<kind>
    # reads, with the commands' default names
    from schemas.kinds import KINDS
    assert {k: v for k, v in env.items() if k.startswith("MIRRORSCOPE_TOPIC_")} == {
        "MIRRORSCOPE_TOPIC_PACKETS": "mirrorscope.packets", **{k.env: k.topic for k in KINDS}}


# --------------------------------------------------------------------------------------------
# values.yaml: every value documented
# --------------------------------------------------------------------------------------------

KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z0-9_.\-/\"]+):(?P<rest>.*)$")


def undocumented_values(text: str) -> list[str]:
    """Keys of values.yaml with no "# --" description (helm-docs style). A key documented as a
    whole covers everything under it; an undocumented key is fine only as a group whose children
    are all documented."""
    lines = text.splitlines()
    missing, stack = [], []  # stack of (indent, path, covered)
    for i, line in enumerate(lines):
        m = KEY.match(line)
        if not m or line.lstrip().startswith("#"):
            continue
        indent = len(m["indent"])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        covered = bool(stack) and stack[-1][2]
        path = ".".join([s[1] for s in stack] + [m["key"]])
        j = i - 1
        documented = False
        while j >= 0 and lines[j].strip().startswith("#"):
            documented |= lines[j].strip().startswith("# --")
            j -= 1
        is_group = m["rest"].strip() == "" and i + 1 < len(lines) and \
            len(lines[i + 1]) - len(lines[i + 1].lstrip()) > indent and not lines[i + 1].lstrip().startswith("-")
        if not (covered or documented or is_group):
            missing.append(path)
        stack.append((indent, m["key"], covered or documented))
    return missing


def test_every_value_is_documented():
    text = (CHART / "values.yaml").read_text()
    assert undocumented_values(text) == []
    # the checker itself catches an undocumented leaf
    assert undocumented_values("a:\n  # -- doc\n  b: 1\n  c: 2\n") == ["a.c"]


def test_values_schema_lists_every_top_level_value():
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["additionalProperties"] is False
    assert set(values) <= set(schema["properties"])


def test_each_workload_mounts_its_own_config_file(rendered):
    """Each command has its own settings (the collector rejects unknown keys), so every workload
    gets its own key of the ConfigMap as /etc/mirrorscope/config.yaml."""
    name, docs = rendered
    configmaps = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ConfigMap"}
    for w in workloads(docs):
        volume = next(v for v in w["spec"]["template"]["spec"]["volumes"] if v["name"] == "config")
        configmap = configmaps[volume["configMap"]["name"]]
        [item] = volume["configMap"]["items"]
        component = w["metadata"]["labels"]["app.kubernetes.io/component"]
        assert item == {"key": f"{component}.yaml", "path": "config.yaml"}, name
        assert item["key"] in configmap["data"], name
        yaml.safe_load(configmap["data"][item["key"]])


def test_s3_sink_has_a_writable_spool_and_its_kms_key(helm_template):
    """The S3 sink keeps files in MIRRORSCOPE_DATA_DIR while S3 is unreachable; with a
    read-only root filesystem that directory must be a volume of its own."""
    docs = by_kind_name(helm_template("--set", "sinks.s3.kmsKeyId=arn:aws:kms:eu-west-1:1:key/k"))
    spec = docs["Deployment", "ms-mirrorscope-sink-s3"]["spec"]["template"]["spec"]
    env = docs["ConfigMap", "ms-mirrorscope-env"]["data"]
    data_dir = env["MIRRORSCOPE_DATA_DIR"]
    [mount] = [m for c in spec["containers"] for m in c["volumeMounts"] if m["mountPath"] == data_dir]
    assert not mount.get("readOnly")
    [vol] = [v for v in spec["volumes"] if v["name"] == mount["name"]]
    assert vol["emptyDir"]["sizeLimit"] == "2Gi"
    assert env["MIRRORSCOPE_S3_KMS_KEY_ID"] == "arn:aws:kms:eu-west-1:1:key/k"


def test_kinesis_runs_no_sinks_and_the_worker_gets_the_result_settings(helm, helm_template):
    """stream.type kinesis: no Kafka, so no sink Deployment (they read the result topics);
    the worker writes to S3 and CloudWatch itself, from the -env ConfigMap it mounts. The
    rendered environment is what kinesis-worker's selection reads (no Kafka bootstrap, a
    bucket, a namespace and a log group), and a render with nowhere to send the records fails."""
    from stream_app.runtime.aws_outputs import from_env

    docs = by_kind_name(helm_template(
        "--set", "stream.type=kinesis", "--set", "stream.kinesis.streamName=mirror",
        "--set", "aws.region=eu-west-1", "--set", "sinks.s3.bucket=records",
        "--set", "sinks.s3.prefix=lake/"))
    deployments = sorted(n for k, n in docs if k == "Deployment")
    assert deployments == ["ms-mirrorscope-worker"]
    worker = docs["Deployment", "ms-mirrorscope-worker"]["spec"]["template"]["spec"]
    [c] = worker["containers"]
    assert c["args"][0] == "kinesis-worker"
    refs = [e["configMapRef"]["name"] for e in c["envFrom"] if "configMapRef" in e]
    assert refs == ["ms-mirrorscope-env"]
    env = docs["ConfigMap", "ms-mirrorscope-env"]["data"]
    assert "MIRRORSCOPE_KAFKA_BOOTSTRAP" not in env
    out = from_env("mirror", environ=env)
    assert out is not None
    assert out.describe() == {"s3": "s3://records/lake/", "cloudwatch": "MirrorScope",
                              "alert_log": f"/mirrorscope/alerts/{out.log_stream}"}
    assert out.s3.region == out.cw_settings.region == "eu-west-1"

    bad = run([helm, "template", "ms", CHART, "--set", "stream.type=kinesis",
               "--set", "stream.kinesis.streamName=mirror", "--set", "sinks.cloudwatch.enabled=false"],
              check=False)
    assert bad.returncode != 0 and "sinks.s3.bucket" in bad.stderr
