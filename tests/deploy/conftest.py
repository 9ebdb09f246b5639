"""Fixtures of the deployment tests (terraform/, helm/, the automation Lambda).

Tools come from .ci/cache (installed by .ci/install-deploy-tools.sh) or PATH; deploy_helpers.py
finds them and fails, never skips, when one is missing.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.services.moto_service import MotoServer

# The test modules import deploy_helpers (a unique name, so it cannot clash with other conftests).
sys.path.insert(0, str(Path(__file__).resolve().parent))

from deploy_helpers import CHART, NAMESPACE, NOTES, require_module, require_tool, run  # noqa: E402
from deploy_plan import example_vars, tf_env, tfcheck_script  # noqa: E402

DEFAULT_VALUES = CHART / "ci" / "default-values.yaml"

# --------------------------------------------------------------------------------------------
# helm
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def helm() -> Path:
    return require_tool("helm")


@pytest.fixture(scope="session")
def helm_template(helm):
    """Render the chart: helm_template(*args) -> list of manifest dicts (cached per args).
    Every render starts from ci/default-values.yaml (the defaults plus a generated state key,
    without which the chart refuses to render: test_deploy_secure_defaults.py); ``args`` override it."""
    yaml = require_module("yaml")
    cache: dict[tuple[str, ...], list[dict]] = {}

    def render(*args: str) -> list[dict]:
        if args not in cache:
            out = run([helm, "template", "ms", CHART, "--namespace", NAMESPACE,
                       "-f", str(DEFAULT_VALUES), *args]).stdout
            cache[args] = [d for d in yaml.safe_load_all(out) if d]
        return cache[args]

    return render


# --------------------------------------------------------------------------------------------
# moto server (a real subprocess on a free loopback port)
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    server = MotoServer()
    try:
        server.start()
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def aws(moto_server, monkeypatch) -> str:
    """A clean moto backend, and boto3 pointed at it through the environment (as the Lambda's
    boto3.client("ec2") would be in AWS). Yields the endpoint URL."""
    req = urllib.request.Request(f"{moto_server}/moto-api/reset", method="POST")
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 200
    for key in list(os.environ):
        if key.startswith("AWS_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    return moto_server


def pytest_terminal_summary(terminalreporter):
    if NOTES:
        terminalreporter.section("deploy checks: tools used")
        for line in dict.fromkeys(NOTES):
            terminalreporter.write_line(line)


# --------------------------------------------------------------------------------------------
# the collector artifact (terraform/scripts/build-collector-artifact.sh) and example var files
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def collector_artifact(tmp_path_factory) -> tuple[Path, str]:
    """The wheelhouse the collectors module ships, built from this tree: (path, sha256)."""
    import sys as _sys

    from deploy_helpers import TERRAFORM
    out = tmp_path_factory.mktemp("artifact") / "mirrorscope-collector.tar.gz"
    proc = run(["bash", TERRAFORM / "scripts" / "build-collector-artifact.sh", out],
               env={**os.environ, "PYTHON": _sys.executable}, timeout=900)
    sha, path = proc.stdout.split()
    assert Path(path) == out and len(sha) == 64
    return out, sha


@pytest.fixture(scope="session")
def example_plan(collector_artifact, tmp_path_factory) -> dict:
    """`terraform show -json` of the example's plan (kinesis), made with tfcheck's schema-only
    provider: the values Terraform renders (alarms, the collectors' user data...), as applied."""
    import json as _json
    import re as _re

    from deploy_helpers import TERRAFORM
    tmp = tmp_path_factory.mktemp("plan")
    varfile = tmp / "example.tfvars.json"
    varfile.write_text(_json.dumps(example_vars(collector_artifact[0])))
    env = {**tf_env(), "TFCHECK_KEEP": "1", "TMPDIR": str(tmp)}
    proc = run(["bash", tfcheck_script(), "--plan", varfile, TERRAFORM / "examples" / "complete"],
               env=env, timeout=900)
    assert ": ok" in proc.stdout, proc.stdout
    kept = Path(_re.search(r"keeping the copies in (\S+)", proc.stderr).group(1))
    [work] = [p.parent for p in kept.glob("1/**/terraform.tfvars.example")]
    cache = Path(os.environ.get("TFSP_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
                 / "tf-schema-provider")
    tf = {**env, "TF_CLI_CONFIG_FILE": str(cache / "tf.rc"), "TF_IN_AUTOMATION": "1", "TF_INPUT": "0",
          "CHECKPOINT_DISABLE": "1", "AWS_ACCESS_KEY_ID": "tfcheck-fake", "AWS_SECRET_ACCESS_KEY": "tfcheck-fake",
          "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}
    run(["terraform", "plan", "-refresh=false", "-lock=false", "-input=false", "-no-color",
         f"-var-file={varfile}", "-out=plan.bin"], env=tf, cwd=work, timeout=300)
    return _json.loads(run(["terraform", "show", "-json", "plan.bin"], env=tf, cwd=work, timeout=120).stdout)
