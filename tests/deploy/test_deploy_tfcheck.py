"""`terraform validate` and `plan` against the AWS provider 6.25 schema, offline.

../shared/tools/tf-schema-provider/tfcheck.sh (its README) serves the real attribute schemas of
hashicorp/aws 6.25.0 and hashicorp/archive 2.7.1 through a schema-only provider, so `terraform
init`/`validate` run for real on every module and `plan` on examples/complete, for both stream
types. A wrong attribute, a bad variable value or a broken reference fails here, as it would
on `terraform apply`'s first step.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from deploy_plan import example_vars, tf_env, tfcheck_script

from deploy_helpers import NOTES, REPO, TERRAFORM, run

MODULES = sorted(p for p in (TERRAFORM / "modules").iterdir() if p.is_dir())
EXAMPLE = TERRAFORM / "examples" / "complete"


def tfcheck(*args, check: bool = False):
    return run(["bash", tfcheck_script(), *args], env=tf_env(), timeout=900, check=check)


def lines(out: str) -> dict[str, str]:
    """DIR -> its status line (tfcheck prints "DIR: ok ..." or "DIR: FAILED at ...")."""
    return {m.group(1): m.group(2) for m in re.finditer(r"^(\S+): (ok.*|FAILED.*)$", out, re.M)}


def var_file(tmp_path: Path, artifact: Path, name: str = "vars", **over) -> Path:
    p = tmp_path / f"{name}.tfvars.json"
    p.write_text(json.dumps(example_vars(artifact, **over)))
    return p


def test_tfcheck_validates_every_module():
    proc = tfcheck(*[str(m.relative_to(REPO)) for m in MODULES])
    status = lines(proc.stdout)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert set(status) == {str(m.relative_to(REPO)) for m in MODULES}
    assert all(s.startswith("ok") for s in status.values()), status
    NOTES.append(f"tfcheck (aws 6.25.0 schema): terraform validate ok on {len(MODULES)} modules")


@pytest.mark.parametrize("stream_type", ["kinesis", "msk"])
def test_tfcheck_plans_the_example(stream_type, collector_artifact, tmp_path):
    varfile = var_file(tmp_path, collector_artifact[0], stream_type=stream_type)
    proc = tfcheck("--plan", varfile, str(EXAMPLE.relative_to(REPO)))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [status] = lines(proc.stdout).values()
    m = re.search(r"Plan: (\d+) to add, 0 to change, 0 to destroy", status)
    assert m and int(m.group(1)) > 50, status
    NOTES.append(f"tfcheck: terraform plan of examples/complete with stream_type={stream_type}: {m.group(0)}")


def test_tfcheck_fails_on_a_wrong_attribute(tmp_path):
    """The check is real: a misspelt argument in a module fails validate with Terraform's error."""
    broken = tmp_path / "mirror-target"
    shutil.copytree(TERRAFORM / "modules" / "mirror-target", broken)
    main = broken / "main.tf"
    text, n = re.subn(r"^(\s*)enable_deletion_protection(\s*=)", r"\1enable_delete_protection\2",
                      main.read_text(), count=1, flags=re.M)
    assert n == 1  # the argument itself, not a mention of it in a comment
    main.write_text(text)
    proc = tfcheck(str(broken))
    assert proc.returncode == 1
    assert "FAILED at terraform validate" in proc.stdout
    assert 'An argument named "enable_delete_protection" is not expected here.' in proc.stdout


@pytest.mark.parametrize("over, message", [
    ({"filter_rules": [{"rule_number": 100, "direction": "ingress", "action": "accept", "protocol": 6,
                        "source_cidr": "10.0.0.0/8", "destination_cidr": "::/0"}]},
     "must be of one family"),
    ({"filter_rules": [{"rule_number": 2, "direction": "ingress", "action": "accept", "protocol": 6,
                        "source_cidr": "0.0.0.0/0", "destination_cidr": "0.0.0.0/0"}]},
     "reserved for the rules that reject VXLAN"),
    ({"mirror_sessions": {"a": {"network_interface_id": "eni-0123456789abcdef0"},
                          "b": {"network_interface_id": "eni-0123456789abcdef0"}}},
     "need distinct session_number"),
    ({"opt_in_tag_key": None}, "opt_in_tag_key is required"),
], ids=["mixed-cidr-families", "reserved-rule-number", "session-number-clash", "no-opt-in-tag"])
def test_plan_refuses_values_aws_would_refuse(over, message, collector_artifact, tmp_path):
    varfile = var_file(tmp_path, collector_artifact[0], **over)
    proc = tfcheck("--plan", varfile, str(EXAMPLE.relative_to(REPO)))
    assert proc.returncode == 1
    assert "FAILED at terraform plan" in proc.stdout
    assert message in re.sub(r"\s+", " ", proc.stdout), proc.stdout[-3000:]
