"""Terraform: formatting, and parse-level checks of the module boundaries.

`terraform validate` and `plan` against the AWS provider's schema run in test_deploy_tfcheck.py
(../shared/tools/tf-schema-provider). Here python-hcl2 parses every file and these tests check
what goes beyond validate at the module boundaries: every var.X, local.X, resource, data
source and module output referenced is declared; every module input in examples/complete is a
variable of that module and every required variable is given; every variable is typed and
described; versions.tf pins the providers a module uses.

Formatting: `terraform fmt -check` (or OpenTofu's `tofu fmt`) where either is installed, otherwise
`hclfmt` (hashicorp/hcl's formatter, the same hclwrite formatting; built by
.ci/install-deploy-tools.sh). Which one ran is printed in the test summary.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

from schemas.kinds import KINDS
from tests.test_athena_ddl import sorted_structs

from deploy_helpers import (NOTES, TERRAFORM, blocks, find_tool, named, parse, require_module, require_tool,
                            run, two_level)

hcl2 = require_module("hcl2")

MODULES = sorted(p for p in (TERRAFORM / "modules").iterdir() if p.is_dir())
EXAMPLE = TERRAFORM / "examples" / "complete"
ROOTS = [*MODULES, EXAMPLE]
META_ARGS = {"source", "version", "providers", "depends_on", "count", "for_each"}


def strings(obj):
    if isinstance(obj, dict):
        for v in obj.values():
            yield from strings(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from strings(v)
    elif isinstance(obj, str) and "${" in obj:  # only expressions and interpolations reference
        yield obj


def refs(root: Path, pattern: str) -> set:
    rx = re.compile(r"(?<![\w.])" + pattern)
    found = set()
    for items in blocks(root).values():
        for s in strings(items):
            found |= set(rx.findall(s))
    return found


def type_text(t: str) -> str:
    """A type constraint as comparable text: python-hcl2 v8 gives "list(object({a = number}))",
    older versions "list(object({'a': '${number}'}))"; both become "list(object(a=number))"."""
    return re.sub(r"[\s'\"${}]", "", t).replace(":", "=")


# --------------------------------------------------------------------------------------------
# formatting
# --------------------------------------------------------------------------------------------

def hclfmt_unformatted() -> list[str]:
    hclfmt = require_tool("hclfmt")
    return [str(f.relative_to(TERRAFORM)) for f in sorted(TERRAFORM.rglob("*.tf"))
            if run([hclfmt, "-require-no-change", f], check=False).returncode != 0]


def test_terraform_fmt_check():
    tf = find_tool("terraform", "tofu", extra_dirs=(Path("/usr/local/bin"),))
    if tf is None:
        NOTES.append("terraform fmt check: hclfmt -require-no-change (no terraform or tofu installed)")
        assert hclfmt_unformatted() == [], "not canonically formatted: run `hclfmt -w FILE`"
        return
    version = run([tf, "version"], check=False).stdout.splitlines()[0]
    NOTES.append(f"terraform fmt check: `{tf.name} fmt -check -recursive` ({version})")
    proc = run([tf, "fmt", "-check", "-recursive", "-diff", TERRAFORM], check=False)
    assert proc.returncode == 0, f"run `{tf.name} fmt -recursive terraform/`:\n{proc.stdout}"


def test_hclfmt_agrees():
    """hclfmt, the check a machine without terraform falls back to, accepts the same files."""
    assert hclfmt_unformatted() == []


# --------------------------------------------------------------------------------------------
# parse-level checks
# --------------------------------------------------------------------------------------------

def test_parse_level_check_is_reported():
    NOTES.append(f"parse-level check by python-hcl2 {getattr(hcl2, '__version__', '?')} over {len(ROOTS)} modules "
                 "(terraform validate/plan: test_deploy_tfcheck.py)")


@pytest.mark.parametrize("root", ROOTS, ids=lambda p: p.name)
def test_module_layout_and_every_file_parses(root):
    for name in ("main.tf", "variables.tf", "outputs.tf", "versions.tf"):
        assert (root / name).is_file(), f"{root.relative_to(TERRAFORM)} lacks {name}"
    for tf in root.glob("*.tf"):
        parse(tf)  # raises on a syntax error


@pytest.mark.parametrize("root", ROOTS, ids=lambda p: p.name)
def test_variables_typed_and_described_outputs_described(root):
    b = blocks(root)
    variables = named(b.get("variable", []))
    assert variables or root == EXAMPLE
    for name, body in variables.items():
        assert body.get("type"), f"{root.name}: variable {name} has no type"
        assert str(body.get("description", "")).strip(), f"{root.name}: variable {name} has no description"
    for name, body in named(b.get("output", [])).items():
        assert str(body.get("description", "")).strip(), f"{root.name}: output {name} has no description"


@pytest.mark.parametrize("root", ROOTS, ids=lambda p: p.name)
def test_references_are_declared(root):
    b = blocks(root)
    declared_vars = set(named(b.get("variable", [])))
    declared_locals = {k for item in b.get("locals", []) for k in item}
    declared_resources = two_level(b.get("resource", []))
    declared_data = two_level(b.get("data", []))
    declared_modules = set(named(b.get("module", [])))

    assert refs(root, r"var\.([A-Za-z_][\w-]*)") - declared_vars == set()
    assert refs(root, r"local\.([A-Za-z_][\w-]*)") - declared_locals == set()
    assert refs(root, r"((?:aws|archive)_[a-z0-9_]+)\.([A-Za-z_][\w-]*)") - declared_resources == set()
    assert refs(root, r"data\.([a-z0-9_]+)\.([A-Za-z_][\w-]*)") - declared_data == set()
    assert {m for m, _ in refs(root, r"module\.([\w-]+)\.([\w-]+)")} - declared_modules == set()
    # declared but never used is dead weight (or a wiring mistake)
    assert declared_vars - refs(root, r"var\.([A-Za-z_][\w-]*)") == set()


def test_example_wires_every_module_with_declared_inputs():
    b = blocks(EXAMPLE)
    calls = named(b["module"])
    assert {Path(c["source"]).name for c in calls.values()} == {m.name for m in MODULES}
    for name, call in calls.items():
        target = (EXAMPLE / call["source"]).resolve()
        assert target.is_dir(), f"module {name}: source {call['source']} does not exist"
        tb = blocks(target)
        variables = named(tb.get("variable", []))
        inputs = {k for k in call if k not in META_ARGS}
        assert inputs - set(variables) == set(), f"module {name}: inputs not declared in {target.name}"
        required = {v for v, body in variables.items() if "default" not in body}
        assert required - inputs == set(), f"module {name}: required variables not given"
    outputs_of = {name: set(named(blocks((EXAMPLE / c["source"]).resolve()).get("output", [])))
                  for name, c in calls.items()}
    for module, output in refs(EXAMPLE, r"module\.([\w-]+)\.([\w-]+)"):
        assert output in outputs_of[module], f"module.{module}.{output} is not an output of {module}"


@pytest.mark.parametrize("root", ROOTS, ids=lambda p: p.name)
def test_versions_pin_the_providers_used(root):
    terraform = parse(root / "versions.tf")["terraform"][0]
    assert terraform["required_version"].startswith(">=")
    providers = {}
    for entry in terraform["required_providers"]:
        providers.update(entry)
    for name, spec in providers.items():
        assert spec["source"] == f"hashicorp/{name}", name
        assert re.fullmatch(r">= [\d.]+, < [\d.]+", spec["version"]), f"{name}: {spec['version']}"
    b = blocks(root)
    used = {t.split("_", 1)[0] for t, _ in two_level(b.get("resource", [])) | two_level(b.get("data", []))}
    assert used <= set(providers), f"{root.name}: providers used but not pinned: {used - set(providers)}"


def test_user_data_template_gets_every_variable():
    template = (TERRAFORM / "modules" / "collectors" / "templates" / "user_data.sh.tftpl").read_text()
    used = set(re.findall(r"(?<!\$)\$\{\s*([A-Za-z_]\w*)", template))
    loops = re.findall(r"%\{\s*for\s+(\w+)(?:\s*,\s*(\w+))?\s+in\s+(\w+)", template)
    loop_vars = {v for k, v2, _ in loops for v in (k, v2) if v}
    used = (used - loop_vars) | {src for *_, src in loops}
    main = (TERRAFORM / "modules" / "collectors" / "main.tf").read_text()
    call = re.search(r"templatefile\([^,]+,\s*\{(.*?)\}\)\)", main, re.S)
    assert call, "templatefile(...) call not found"
    passed = set(re.findall(r"^\s*(\w+)\s*=", call.group(1), re.M))
    assert used == passed
    assert "mirrorscope collect --config $ROOT/etc/mirrorscope/config.yaml" in template


def test_filter_rule_format_is_one_type_everywhere():
    def var_type(root: Path, name: str) -> str:
        return type_text(named(blocks(root)["variable"])[name]["type"])

    filter_type = var_type(TERRAFORM / "modules" / "mirror-filter", "rules")
    assert var_type(TERRAFORM / "modules" / "collectors", "local_filter_rules") == filter_type
    assert var_type(EXAMPLE, "filter_rules") == filter_type
    for field in ("rule_number=number", "direction=string", "action=string", "protocol=optional(number)",
                  "source_cidr=string", "destination_cidr=string", "description=optional(string)",
                  "source_port_range=optional(object(from_port=number,to_port=number))",
                  "destination_port_range=optional(object(from_port=number,to_port=number))"):
        assert field in filter_type


def test_lambda_environment_matches_what_the_handler_reads():
    automation = TERRAFORM / "modules" / "mirror-automation"
    lambda_env = next(item["lambda_env"] for item in blocks(automation)["locals"] if "lambda_env" in item)
    source = (automation / "lambda" / "handler.py").read_text()
    from_env = next(n for n in ast.walk(ast.parse(source))
                    if isinstance(n, ast.FunctionDef) and n.name == "from_env")
    read = {n.value for n in ast.walk(from_env)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and re.fullmatch(r"[A-Z][A-Z_]+", n.value)}
    assert set(lambda_env) == read
    handler = next(r for item in blocks(automation)["resource"] for t, by_name in item.items()
                   if t == "aws_lambda_function" for r in by_name.values())
    assert handler["handler"] == "handler.handler" and handler["runtime"] == "python3.11"



def test_helm_values_output_uses_existing_chart_values():
    """examples/complete's helm_values output is fed to `helm install -f`: every key must be a chart value."""
    yaml = require_module("yaml")
    chart_values = yaml.safe_load((TERRAFORM.parent / "helm" / "mirrorscope" / "values.yaml").read_text())
    output = named(blocks(EXAMPLE)["output"])["helm_values"]["value"]

    def paths(tree, prefix=()):
        for key, value in tree.items():
            if isinstance(value, dict):
                yield from paths(value, (*prefix, key))
            else:
                yield (*prefix, key)

    for path in paths(output):
        node = chart_values
        for key in path:
            assert isinstance(node, dict) and key in node, f"helm_values sets {'.'.join(path)}: not a chart value"
            node = node[key]


# Glue table -> (schemas/jsonschema file, $defs entry): every result kind (schemas/kinds.py)
RECORD_SCHEMAS = {k.table: (f"{k.schema}.json", k.struct_type.__name__) for k in KINDS}


def athena_type(prop: dict, defs: dict) -> str:
    if "anyOf" in prop:  # nullable: [T, null]
        [prop] = [p for p in prop["anyOf"] if p.get("type") != "null"]
    if "$ref" in prop:  # a nested record (DNS answers, TLS certificates): members by name
        d = defs[prop["$ref"].rsplit("/", 1)[1]]
        return "struct<" + ",".join(f"{n}:{athena_type(p, defs)}"
                                    for n, p in sorted(d["properties"].items())) + ">"
    if "enum" in prop:
        return "string"
    if prop["type"] == "array":
        return f"array<{athena_type(prop['items'], defs)}>"
    if prop["type"] == "object":
        return f"map<string,{athena_type(prop['additionalProperties'], defs)}>"
    return {"integer": "bigint", "number": "double", "string": "string", "boolean": "boolean"}[prop["type"]]


@pytest.mark.parametrize("table", sorted(RECORD_SCHEMAS))
def test_glue_columns_follow_the_record_schemas(table):
    """The Athena tables read what the S3 sink writes: the columns are the record contract's
    fields (schemas/jsonschema/), with Parquet-safe types (every integer is a bigint)."""
    file, definition = RECORD_SCHEMAS[table]
    path = TERRAFORM.parent / "schemas" / "jsonschema" / file
    if table != "flows" and not path.exists():
        NOTES.append(f"Glue table {table}: not compared, schemas/jsonschema/{file} does not exist yet")
        return
    doc = json.loads(path.read_text())
    schema = doc["$defs"][definition]
    expected = {(name, athena_type(prop, doc["$defs"])) for name, prop in schema["properties"].items()}
    locals_ = {k: v for item in blocks(TERRAFORM / "modules" / "storage")["locals"] for k, v in item.items()}
    columns = locals_[{"flows": "flow_columns", "http": "http_columns", "alerts": "alert_columns",
                       "dns": "dns_columns", "tls": "tls_columns", "ssh": "ssh_columns"}[table]]
    assert {(c["name"], sorted_structs(c["type"])) for c in columns} == expected
