"""checkov over terraform/ and helm/ (the chart with default and full values, and the Dockerfile).

No check may fail. A suppression is allowed only inline (Terraform: `#checkov:skip=ID:reason`;
Kubernetes manifests: a `checkov.io/skipN: ID=reason` annotation) with a reason, and only the ones
listed here, so a new suppression is a reviewed change of this file.

checkov runs from its own venv (.ci/cache/checkov-venv, it pins many packages) with
--skip-download (no network). Its helm runner calls `helm template`, so the helm from .ci/cache/bin
goes first on PATH, and HELM_NAMESPACE names the namespace the chart is installed in.
"""

from __future__ import annotations

import json
import os

import pytest

from deploy_helpers import CACHE, CHART, NAMESPACE, NOTES, require_tool, run

EXPECTED_SUPPRESSIONS = {
    "terraform": {
        ("CKV_AWS_91", "module.mirror_target.aws_lb.this"),  # NLB access logs exist only for TLS listeners
        ("CKV_AWS_150", "module.mirror_target.aws_lb.this"),  # deletion protection: a variable, off in the example
        ("CKV_AWS_144", "module.collectors.aws_s3_bucket.artifacts"),  # the artifact is rebuildable
        ("CKV2_AWS_62", "module.collectors.aws_s3_bucket.artifacts"),  # fetched by key, no event consumers
        ("CKV_AWS_18", "module.collectors.aws_s3_bucket.artifacts"),  # read only by the instance role
        ("CKV_AWS_117", "module.mirror_automation.aws_lambda_function.this"),  # VPC optional
        ("CKV_AWS_272", "module.mirror_automation.aws_lambda_function.this"),  # signing optional
        ("CKV_AWS_144", "module.storage.aws_s3_bucket.this"),  # replication of derived data
        ("CKV2_AWS_62", "module.storage.aws_s3_bucket.this"),  # no event consumers
        ("CKV_AWS_109", "aws_iam_policy_document.kms"),  # key policy "*" = this key
        ("CKV_AWS_111", "aws_iam_policy_document.kms"),
        ("CKV_AWS_356", "aws_iam_policy_document.kms"),
    },
    # default values: the image is referenced by tag until image.digest is set
    "helm-default": {("CKV_K8S_43", f"Deployment.{NAMESPACE}.release-name-mirrorscope-{c}")
                     for c in ("worker", "sink-s3", "sink-cloudwatch")},
    # full values pin a digest; their Secret reaches the app as environment variables
    "helm-full": {("CKV_K8S_35", f"{kind}.{NAMESPACE}.ms-{c}")
                  for kind, c in (("Deployment", "worker"), ("Deployment", "sink-s3"),
                                  ("Deployment", "sink-cloudwatch"), ("DaemonSet", "collector"))},
    "dockerfile": set(),
}
SCANS = {
    "terraform": (["-d", "terraform", "--framework", "terraform"], {"terraform"}),
    # the defaults need a state-key choice to render at all (ci/default-values.yaml)
    "helm-default": (["-d", "helm", "--framework", "helm", "dockerfile",
                      "--var-file", str(CHART / "ci" / "default-values.yaml")], {"helm", "dockerfile"}),
    "helm-full": (["-d", "helm", "--framework", "helm", "--var-file", str(CHART / "ci" / "full-values.yaml")],
                  {"helm"}),
}


@pytest.fixture(scope="module")
def checkov():
    return require_tool("checkov", extra_dirs=(CACHE / "checkov-venv" / "bin",))


@pytest.fixture(scope="module")
def reports(checkov, helm):
    """checkov's JSON reports per scan: a list of {check_type, results, summary}."""
    env = {**os.environ, "HELM_NAMESPACE": NAMESPACE, "PATH": f"{helm.parent}{os.pathsep}{os.environ['PATH']}"}
    version = run([checkov, "--version"], env=env).stdout.strip()
    NOTES.append(f"checkov {version} ({checkov}) over terraform/, helm/ (default and full values) and helm/Dockerfile")
    out = {}
    for name, (args, _) in SCANS.items():
        proc = run([checkov, *args, "-o", "json", "--skip-download", "--compact"], env=env, check=False)
        # exit 1 = failed checks (asserted below with their names); anything else is a broken run
        assert proc.returncode in (0, 1), f"checkov {name} exited {proc.returncode}: {proc.stderr[-3000:]}"
        data = json.loads(proc.stdout)
        out[name] = data if isinstance(data, list) else [data]
    return out


@pytest.mark.parametrize("scan", sorted(SCANS))
def test_checkov_scans_and_nothing_fails(reports, scan):
    by_type = {r["check_type"]: r for r in reports[scan]}
    # a chart that does not render, or a parser error, would scan nothing and "pass"
    assert set(by_type) == SCANS[scan][1], f"{scan}: checkov reported {set(by_type)}"
    failed = []
    for check_type, report in by_type.items():
        summary = report["summary"]
        assert summary["resource_count"] > 0 and summary["parsing_errors"] == 0, (check_type, summary)
        assert summary["passed"] > 0, (check_type, summary)
        failed += [f"{c['check_id']} {c['resource']} ({c['file_path']})"
                   for c in report["results"].get("failed_checks", [])]
    assert failed == [], "\n".join(failed)


@pytest.mark.parametrize("scan", sorted(EXPECTED_SUPPRESSIONS))
def test_only_the_reviewed_suppressions_each_with_a_reason(reports, scan):
    checks = [c for name, rs in reports.items() for r in rs
              if ("dockerfile" if r["check_type"] == "dockerfile" else name) == scan
              for c in r["results"].get("skipped_checks", [])]
    for c in checks:
        reason = (c["check_result"].get("suppress_comment") or "").strip()
        assert len(reason) >= 30, f"{c['check_id']} on {c['resource']}: reason too thin: {reason!r}"
    assert {(c["check_id"], c["resource"]) for c in checks} == EXPECTED_SUPPRESSIONS[scan]
