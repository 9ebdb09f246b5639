"""What the deployment hands `mirrorscope collect` is what it reads (collectors/config.py).

Terraform's user data writes /etc/mirrorscope/config.yaml (local.collector_config, yamlencoded) and
an environment file; the chart writes the collector's config.yaml and an environment ConfigMap.
Both are checked against the collector's own settings loader, so a renamed setting fails here
rather than on an instance at boot.
"""

from __future__ import annotations

import msgspec
import pytest

from deploy_helpers import CHART, TERRAFORM, blocks, named, require_module

collect_config = require_module("collectors.config")
yaml = require_module("yaml")

COLLECTORS = TERRAFORM / "modules" / "collectors"
RULE_FIELDS = ("rule_number", "direction", "action", "protocol", "source_cidr", "destination_cidr",
               "source_port_range", "destination_port_range", "description")


def setting_exists(path: tuple[str, ...]) -> bool:
    t = collect_config.CollectConfig
    for key in path:
        fields = {f.name: f.type for f in msgspec.structs.fields(t)} if isinstance(t, type) and \
            issubclass(t, msgspec.Struct) else {}
        if key not in fields:
            return False
        t = fields[key]
    return True


def key_paths(tree: dict, prefix: tuple[str, ...] = ()):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from key_paths(value, (*prefix, key))
        else:
            yield (*prefix, key)


def collector_locals() -> dict:
    return {k: v for item in blocks(COLLECTORS)["locals"] for k, v in item.items()}


def test_terraform_config_yaml_uses_collector_settings():
    config = collector_locals()["collector_config"]
    paths = list(key_paths(config))
    assert ("filter", "rules") in paths and ("listen", "port") in paths
    assert [p for p in paths if not setting_exists(p)] == []


def test_terraform_environment_names_are_collector_settings():
    known = set(collect_config.ENV_PATHS) | set(collect_config.ENV_ALIASES)
    for stream_type, env in collector_locals()["stream_environment"].items():
        assert set(env) - known == set(), stream_type
        assert env["MIRRORSCOPE_TRANSPORT"] in ("kafka", "kinesis")


def test_terraform_filter_rules_load_as_the_collector_filter():
    """Terraform gives every optional attribute (null when unset): the loader must take that."""
    rules = named(blocks(TERRAFORM / "examples" / "complete")["variable"])["filter_rules"]["default"]
    full = [{field: rule.get(field) for field in RULE_FIELDS} for rule in rules]
    full[0]["destination_port_range"] = {"from_port": 80, "to_port": 443}
    cfg = collect_config.load_config(None, environ={}, overrides={"filter": {"rules": full}})
    assert len(cfg.filter.rules) == len(rules)
    assert cfg.filter.rules[0].destination_port_range.to_port == 443


@pytest.mark.parametrize("stream", ["kafka", "kinesis"])
def test_chart_collector_config_and_environment_load(helm_template, tmp_path, stream):
    args = ["-f", str(CHART / "ci" / "full-values.yaml")]
    if stream == "kinesis":
        args += ["--set", "stream.type=kinesis", "--set", "stream.kinesis.streamName=mirrorscope"]
    docs = helm_template(*args)
    configmaps = {d["metadata"]["name"]: d["data"] for d in docs if d["kind"] == "ConfigMap"}
    (tmp_path / "config.yaml").write_text(configmaps["ms"]["collector.yaml"])
    environ = {k: v for k, v in configmaps["ms-env"].items()}
    collector = next(d for d in docs if d["kind"] == "DaemonSet")
    environ.update({e["name"]: e["value"] for e in collector["spec"]["template"]["spec"]["containers"][0]["env"]
                    if "value" in e})

    cfg = collect_config.load_config(tmp_path / "config.yaml", environ=environ)

    assert cfg.transport == stream
    assert cfg.processes == 2
    assert cfg.source_cidrs == ["10.0.0.0/16"] and len(cfg.filter.rules) == 2
    assert (cfg.health.port, cfg.metrics.port) == (8081, 9108)
    if stream == "kafka":
        assert cfg.kafka.topic == "mirrorscope.packets"
        assert cfg.kafka.security_protocol == "SASL_SSL" and cfg.kafka.sasl_mechanism == "AWS_MSK_IAM"
        assert cfg.kafka.bootstrap.endswith(":9098")
    else:
        assert cfg.kinesis.stream == "mirrorscope"
