"""The collectors' user data, as `terraform plan` renders it, boots a working collector.

The script is taken from the example's plan (the launch template's user_data, base64-decoded)
and run verbatim with bash in the mirror lab's collector namespace, where a moto server holds
what the stack would have made: the artifact bucket with the wheelhouse built from this tree
(terraform/scripts/build-collector-artifact.sh) under the key and SHA-256 the plan names, the
Kinesis stream, and an autoscaling group. The AWS CLI fetches the artifact from moto's S3, pip
installs it with --no-index into a fresh venv, the collector starts and answers /healthz, and
curl's HTTP exchange in the mirrored namespace reaches it as VXLAN and Kinesis as records.
A corrupted artifact makes the script fail and mark the instance Unhealthy in moto's
autoscaling group.

Stand-ins (tests/deploy/userdata_shims/README.md): dnf, useradd, chgrp, sysctl and systemctl;
MIRRORSCOPE_ROOT puts the script's files under a scratch folder and INSTANCE_ID replaces the
instance metadata service. Needs root (network namespaces), like tests/e2e.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from deploy_plan import planned

from deploy_helpers import CACHE, REPO, find_tool
from tests.services.moto_service import moto_server_exe

sys.path.insert(0, str(REPO / "tests" / "e2e"))
from lab_env import PREFIX, lab_up, serve_http  # noqa: E402

pytestmark = pytest.mark.e2e
HERE = Path(__file__).resolve().parent
SHIMS = HERE / "userdata_shims"
MOTO_PORT = 5000  # inside the collector namespace: nothing else listens there
LAUNCH_TEMPLATE = "module.collectors.aws_launch_template.this"


@pytest.fixture(scope="module")
def lab():
    with lab_up(f"{PREFIX}u", ("ip", "tc", "ethtool", "curl")) as lab:
        yield lab


@pytest.fixture(scope="module")
def moto_in_ns(lab, tmp_path_factory):
    """moto_server on 127.0.0.1 inside the collector namespace (the lab has no route to the
    host's loopback, as an instance reaches AWS only through its own network)."""
    exe = moto_server_exe()
    assert exe, "moto_server not found: pip install -e '.[test]'"
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    proc = subprocess.Popen(lab.ns(lab.collector) + [exe, "-H", "127.0.0.1", "-p", str(MOTO_PORT)],
                            stdout=open(log, "wb"), stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{MOTO_PORT}"
    deadline = time.monotonic() + 30
    while lab.run(lab.collector, "curl", "-sf", "-o", "/dev/null", f"{url}/moto-api/", check=False).returncode:
        if time.monotonic() > deadline or proc.poll() is not None:
            pytest.fail(f"moto_server did not start in {lab.collector}: {log.read_text()[-2000:]}", pytrace=False)
        time.sleep(0.2)
    try:
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)


def aws_env(moto_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1",
               AWS_ENDPOINT_URL=moto_url, AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull)
    return env


def in_ns(lab, moto_url: str, *args: str) -> dict:
    r = subprocess.run(lab.ns(lab.collector) + [sys.executable, str(HERE / "netns_aws.py"), *args],
                       env=aws_env(moto_url), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout)


def tool_path(tmp_path: Path) -> str:
    """PATH for the script: the stand-ins first, then python3.11 and the AWS CLI."""
    extra = tmp_path / "bin"
    extra.mkdir(exist_ok=True)
    if shutil.which("python3.11") is None:  # the venv's interpreter is a 3.11
        (extra / "python3.11").symlink_to(sys.executable)
    aws = find_tool("aws", extra_dirs=(CACHE / "awscli-venv" / "bin",))
    assert aws is not None, "the AWS CLI is missing: run `bash .ci/install-deploy-tools.sh`"
    return os.pathsep.join([str(SHIMS), str(extra), str(aws.parent), os.environ["PATH"]])


def run_user_data(lab, moto_url: str, script: Path, root: Path, instance_id: str, tmp_path: Path):
    root.mkdir()
    env = {**aws_env(moto_url), "MIRRORSCOPE_ROOT": str(root), "INSTANCE_ID": instance_id,
           "PATH": tool_path(tmp_path), "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    return subprocess.run(lab.ns(lab.collector) + ["bash", str(script)], env=env, capture_output=True,
                          text=True, timeout=900)


def prom(lab, name: str) -> float:
    r = lab.run(lab.collector, "curl", "-s", "-m", "3", "http://127.0.0.1:9108/metrics", check=False)
    return sum(float(line.rsplit(" ", 1)[1]) for line in r.stdout.splitlines()
               if line.startswith(name + "{") or line.startswith(name + " "))


@pytest.fixture(scope="module")
def rendered(example_plan, tmp_path_factory) -> dict:
    """The launch template's user data from the plan, and what it names."""
    user_data = base64.b64decode(planned(example_plan, LAUNCH_TEMPLATE)["user_data"]).decode()
    script = tmp_path_factory.mktemp("user-data") / "user-data.sh"
    script.write_text(user_data)
    bucket, key = re.search(r"^ARTIFACT_URL='s3://([^/]+)/(\S+)'$", user_data, re.M).groups()
    return {"script": script, "text": user_data, "bucket": bucket, "key": key,
            "sha256": re.search(r"^ARTIFACT_SHA256='(\w+)'$", user_data, re.M).group(1),
            "stream": re.search(r"^MIRRORSCOPE_KINESIS_STREAM=(\S+)$", user_data, re.M).group(1)}


@pytest.fixture(scope="module")
def seeded(lab, moto_in_ns, rendered, collector_artifact) -> dict:
    """What the stack would have made, in moto: the artifact in its bucket, the stream, the group."""
    artifact, built_sha = collector_artifact
    assert rendered["sha256"] == built_sha and rendered["key"].endswith(f"{built_sha}.tar.gz")
    return in_ns(lab, moto_in_ns, "seed", rendered["bucket"], rendered["key"], str(artifact), rendered["stream"])


def stop_service(root: Path) -> None:
    pid_file = root / "run" / "mirrorscope-collect.service.pid"
    if pid_file.exists():
        pid = int(pid_file.read_text())
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        for _ in range(200):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)
        os.killpg(pid, signal.SIGKILL)


def test_rendered_user_data_boots_a_collector_that_receives_the_lab(lab, moto_in_ns, rendered, seeded,
                                                                    tmp_path):
    script, stream = rendered["script"], rendered["stream"]
    root = tmp_path / "root"
    try:
        r = run_user_data(lab, moto_in_ns, script, root, seeded["instance_id"], tmp_path)
        assert r.returncode == 0, f"user data failed:\n{r.stdout[-3000:]}\n{r.stderr[-5000:]}"
        assert "mirrorscope collector healthy" in r.stdout
        shim_log = (root / "shim.log").read_text()
        assert "dnf install -y python3.11" in shim_log
        assert "systemctl enable --now mirrorscope-collect.service" in shim_log
        assert (root / "opt" / "mirrorscope" / "bin" / "mirrorscope").exists()
        config = (root / "etc" / "mirrorscope" / "config.yaml").read_text()
        assert "cloudwatch" in config and "198.18.1.0/24" in config

        code = lab.run(lab.collector, "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                       "http://127.0.0.1:8081/healthz").stdout
        assert code == "200"

        www = tmp_path / "www"
        www.mkdir()
        (www / "index.html").write_text("mirrorscope " * 100)
        with serve_http(lab, www) as url:
            for port in (42001, 42002, 42003):
                got = lab.run(lab.client, "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                              "--local-port", str(port), f"{url}/index.html").stdout
                assert got == "200"
        deadline = time.monotonic() + 30
        while prom(lab, "mirrorscope_collector_records_published_total") < 10 and time.monotonic() < deadline:
            time.sleep(0.5)
        received = prom(lab, "mirrorscope_collector_datagrams_received_total")
        published = prom(lab, "mirrorscope_collector_records_published_total")
        assert received >= 10 and published >= 10, (received, published)
        assert prom(lab, "mirrorscope_collector_records_filtered_total") == 0  # TCP: accepted by the rules
        assert in_ns(lab, moto_in_ns, "records", stream)["records"] > 0  # batches reached Kinesis
    finally:
        stop_service(root)
    assert in_ns(lab, moto_in_ns, "health", seeded["instance_id"])["health"] == "Healthy"


def test_a_corrupted_artifact_marks_the_instance_unhealthy(lab, moto_in_ns, rendered, seeded, tmp_path,
                                                           collector_artifact):
    # the bucket holds other bytes under the key the plan pinned
    in_ns(lab, moto_in_ns, "put", rendered["bucket"], rendered["key"], "not the artifact the plan pinned")
    root = tmp_path / "root"
    try:
        r = run_user_data(lab, moto_in_ns, rendered["script"], root, seeded["instance_id"], tmp_path)
    finally:  # put the real one back for whatever runs next
        in_ns(lab, moto_in_ns, "upload", rendered["bucket"], rendered["key"], str(collector_artifact[0]))

    assert r.returncode == 1
    assert "does not have SHA-256" in r.stderr
    assert "systemctl enable" not in (root / "shim.log").read_text()  # nothing was installed or started
    assert not (root / "opt" / "mirrorscope").exists()
    assert in_ns(lab, moto_in_ns, "health", seeded["instance_id"])["health"] == "Unhealthy"
