"""Helpers of the Terraform tests that read the example's plan: its var values, tfcheck.sh and
the environment it needs, and a resource's planned values (a unique module name, so it cannot
clash with another folder's conftest)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from deploy_helpers import CACHE, REPO, require_tool


def example_vars(artifact: Path, **over) -> dict:
    """The example's terraform.tfvars.example values, with the artifact path and overrides."""
    base = {
        "region": "us-east-1", "vpc_id": "vpc-0123456789abcdef0",
        "private_subnet_ids": ["subnet-0aaaaaaaaaaaaaaaa", "subnet-0bbbbbbbbbbbbbbbb"],
        # 198.18.1.0/24: the mirror lab's VXLAN source, so the rendered user data admits it
        "vpc_cidr_blocks": ["10.0.0.0/16"], "mirror_source_cidr_blocks": ["10.0.0.0/16", "198.18.1.0/24"],
        "bucket_name": "example-mirrorscope-records",
        "eks_oidc_provider_arn": "arn:aws:iam::123456789012:oidc-provider/oidc.eks.us-east-1.amazonaws.com/id/EXAMPLE",
        "eks_oidc_issuer_url": "https://oidc.eks.us-east-1.amazonaws.com/id/EXAMPLE",
        "stream_type": "kinesis", "partition_count": 12,
        "collector_artifact_path": str(artifact),
        "mirror_sessions": {"web-1": {"network_interface_id": "eni-0123456789abcdef0"}},
    }
    base.update(over)
    return base


def tfcheck_script() -> Path:
    for cand in (os.environ.get("TFCHECK"), REPO.parent / "shared" / "tools" / "tf-schema-provider" / "tfcheck.sh"):
        if cand and Path(cand).is_file():
            return Path(cand)
    pytest.fail("tfcheck.sh not found: expected ../shared/tools/tf-schema-provider/tfcheck.sh beside the "
                "repository (or set TFCHECK)", pytrace=False)


def tf_env() -> dict[str, str]:
    terraform = require_tool("terraform", extra_dirs=(Path("/usr/local/bin"),))
    return {**os.environ, "PATH": f"{terraform.parent}{os.pathsep}{CACHE / 'bin'}{os.pathsep}{os.environ['PATH']}"}


def planned(plan: dict, address: str) -> dict:
    """The planned values of one resource, by its full address."""
    def walk(module: dict):
        yield from module.get("resources", [])
        for child in module.get("child_modules", []):
            yield from walk(child)
    for r in walk(plan["planned_values"]["root_module"]):
        if r["address"] == address:
            return r["values"]
    raise KeyError(address)
