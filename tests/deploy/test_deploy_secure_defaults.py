"""Secure defaults of the chart. The workers' state key: no key, no render (unless generation
is chosen), and the key reaches the worker as a read-only file that `stream_app/statekey.py`
accepts. The collectors: no allowed mirror source, no render (they are default-deny).

`lookup` (how a generated key survives an upgrade) needs a Kubernetes API server, which this
machine lacks: helm template shows a fresh key each time, as the template says."""

from __future__ import annotations

import base64

import pytest

from deploy_helpers import CHART, NAMESPACE, run

from stream_app.statekey import StateKeyError, load_state_key


def template(helm, *args):
    return run([helm, "template", "ms", CHART, "--namespace", NAMESPACE, *args], check=False)


def docs_of(helm, *args):
    import yaml
    res = template(helm, *args)
    assert res.returncode == 0, res.stderr
    return [d for d in yaml.safe_load_all(res.stdout) if d]


def worker_pod(docs):
    return next(d for d in docs if d["kind"] == "Deployment"
                and d["metadata"]["name"].endswith("-worker"))["spec"]["template"]["spec"]


def key_file_of(pod) -> tuple[str, dict]:
    """(MIRRORSCOPE_STATE_KEY_FILE, the secret volume it lies in)."""
    c = pod["containers"][0]
    path = next(e["value"] for e in c["env"] if e["name"] == "MIRRORSCOPE_STATE_KEY_FILE")
    mount = next(m for m in c["volumeMounts"] if path.startswith(m["mountPath"] + "/"))
    assert mount["readOnly"] is True
    vol = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert path == mount["mountPath"] + "/" + vol["secret"]["items"][0]["path"]
    return path, vol["secret"]


@pytest.mark.parametrize("extra", [(), ("--set", "stream.type=kinesis",
                                         "--set", "stream.kinesis.streamName=s")])
def test_no_key_no_render(helm, extra):
    res = template(helm, *extra)
    assert res.returncode != 0
    assert "stateKey" in res.stderr and "stateKey.generate=true" in res.stderr, res.stderr
    # the old place for it does not count either: it used to be optional there
    res = template(helm, "--set", "secret.create=true", "--set", "secret.data.X=1", *extra)
    assert res.returncode != 0 and "stateKey" in res.stderr


def test_no_worker_needs_no_key(helm):
    docs = docs_of(helm, "--set", "worker.enabled=false")
    assert not [d for d in docs if d["kind"] == "Secret"]


def test_generated_key_is_a_kept_secret_the_worker_reads(helm, tmp_path):
    docs = docs_of(helm, "--set", "stateKey.generate=true")
    secret = next(d for d in docs if d["kind"] == "Secret")
    assert secret["metadata"]["name"] == "ms-mirrorscope-state-key"
    # an uninstall leaves it, so a reinstall's lookup finds the key the state was signed with
    assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    key = base64.b64decode(secret["data"]["state-key"])
    assert len(key) == 48
    path, vol = key_file_of(worker_pod(docs))
    assert vol["secretName"] == secret["metadata"]["name"]
    assert vol["defaultMode"] & 0o007 == 0  # not readable by other users of the node
    assert vol["items"][0]["key"] == "state-key"
    # the worker accepts exactly what the Secret holds
    f = tmp_path / "state-key"
    f.write_bytes(key)
    assert load_state_key(str(f), environ={}) == key
    # a second render without a cluster makes another key: stability comes only from lookup
    again = next(d for d in docs_of(helm, "--set", "stateKey.generate=true", "--set",
                                    "worker.replicas=1") if d["kind"] == "Secret")
    assert again["data"]["state-key"] != secret["data"]["state-key"]


def test_given_key_and_existing_secret(helm, tmp_path):
    docs = docs_of(helm, "--set-string", "stateKey.value=" + "k" * 64)
    secret = next(d for d in docs if d["kind"] == "Secret")
    assert base64.b64decode(secret["data"]["state-key"]) == b"k" * 64
    docs = docs_of(helm, "--set", "stateKey.existingSecret=my-key", "--set",
                   "stateKey.secretKey=signing")
    assert not [d for d in docs if d["kind"] == "Secret"]
    _, vol = key_file_of(worker_pod(docs))
    assert vol["secretName"] == "my-key" and vol["items"][0]["key"] == "signing"


def test_key_longer_than_the_mac_refused(helm):
    res = template(helm, "--set-string", "stateKey.value=" + "k" * 65)
    assert res.returncode != 0 and "stateKey" in res.stderr and "64" in res.stderr, res.stderr
    with pytest.raises(StateKeyError):
        load_state_key(None, environ={"MIRRORSCOPE_STATE_KEY": "k" * 65})


def test_collector_without_allowed_sources_does_not_render(helm):
    """Collectors are default-deny: enabled with no source_cidrs, no discovery and no explicit
    accept_any_source they would refuse every datagram, so the chart says so at render."""
    key = ("--set", "stateKey.generate=true", "--set", "collector.enabled=true")
    res = template(helm, *key)
    assert res.returncode != 0 and "source_cidrs" in res.stderr, res.stderr
    for ok in ("collector.config.source_cidrs={10.0.0.0/16}",
               "collector.config.enrichment.discover=true",
               "collector.config.accept_any_source=true"):
        assert template(helm, *key, "--set", ok).returncode == 0, ok
