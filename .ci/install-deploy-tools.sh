#!/usr/bin/env bash
# Install what tests/deploy needs into .ci/cache/ (gitignored), then print where everything is.
#
# Idempotent: a tool already at its pinned version is skipped, so a second run takes about a second.
# Needs only Go, Python 3.11 and pip (all from the machine's registries: the Go module proxy, PyPI).
#
#   helm     Go module proxy, `go install helm.sh/helm/v3/cmd/helm`, stamped with the Kubernetes
#            version of its client libraries as upstream's Makefile does (otherwise `helm template`
#            assumes Kubernetes 1.20 and rejects the chart's kubeVersion).
#   hclfmt   Go module proxy (github.com/hashicorp/hcl/v2): the Terraform formatting check when
#            neither terraform nor tofu is installed. It applies the same hclwrite formatting as
#            `terraform fmt`.
#   checkov  PyPI, in a venv of its own (.ci/cache/checkov-venv): it pins many packages.
#   aws      the AWS CLI (PyPI awscli, in .ci/cache/awscli-venv) when none is on PATH: the
#            collectors' user data runs it in tests/deploy/test_deploy_user_data_lab.py.
#   terraform  when none is on PATH: `go install github.com/hashicorp/terraform@TERRAFORM_VERSION`
#            (several minutes cold). tests/deploy runs ../shared/tools/tf-schema-provider/tfcheck.sh,
#            which gives it the AWS provider's schema offline (it needs npm and go on its first run).
#   Python test packages (moto[server], boto3, python-hcl2, kubernetes-validate, PyYAML, pytest):
#            the project's `.[test]` extra has them; any that $DEPLOY_PYTHON (default .venv/bin/python)
#            lacks are installed into it. A python3 outside a virtualenv is only reported on, never
#            changed, unless DEPLOY_PYTHON names it.
#
#
# Environment: DEPLOY_TOOLS_CACHE (default .ci/cache), DEPLOY_PYTHON, GOMODCACHE/GOCACHE as usual.
set -euo pipefail

HELM_VERSION=v3.22.0
HCL_VERSION=v2.25.0
CHECKOV_VERSION=3.3.30
AWSCLI_VERSION=1.45.11
TERRAFORM_VERSION=v1.11.4

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${DEPLOY_TOOLS_CACHE:-$ROOT/.ci/cache}
BIN=$CACHE/bin
LOGS=$CACHE/logs
mkdir -p "$BIN" "$LOGS"

say() { printf '[install-deploy-tools] %s\n' "$*"; }
die() { say "ERROR: $*" >&2; exit 1; }
show_log() { say "--- last lines of $1"; tail -n 40 "$1" >&2 || true; }

command -v go >/dev/null || die "go is required (helm and hclfmt are built from the Go module proxy)"
command -v python3 >/dev/null || die "python3 is required"
start=$(date +%s)

# ---- checkov: in the background, it is mostly download time ---------------------------------
CHECKOV_VENV=$CACHE/checkov-venv
checkov_version() {  # from the package metadata: `checkov --version` takes seconds to import
  "$CHECKOV_VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("checkov"))' 2>/dev/null || true
}
checkov_pid=""
if [ "$(checkov_version)" = "$CHECKOV_VERSION" ] && [ -x "$CHECKOV_VENV/bin/checkov" ]; then
  say "checkov $CHECKOV_VERSION: already installed"
else
  say "checkov $CHECKOV_VERSION: installing into $CHECKOV_VENV (background)"
  (
    rm -rf "$CHECKOV_VENV"
    python3 -m venv "$CHECKOV_VENV"
    "$CHECKOV_VENV/bin/pip" install --quiet --disable-pip-version-check "checkov==$CHECKOV_VERSION"
    [ "$("$CHECKOV_VENV/bin/checkov" --version)" = "$CHECKOV_VERSION" ]
  ) > "$LOGS/checkov.log" 2>&1 &
  checkov_pid=$!
fi

# ---- the AWS CLI: only when there is none -----------------------------------------------------
AWSCLI_VENV=$CACHE/awscli-venv
if command -v aws >/dev/null || [ -x "$AWSCLI_VENV/bin/aws" ]; then
  say "aws CLI: present ($(command -v aws || echo "$AWSCLI_VENV/bin/aws"))"
else
  say "aws CLI $AWSCLI_VERSION: installing into $AWSCLI_VENV"
  { rm -rf "$AWSCLI_VENV" && python3 -m venv "$AWSCLI_VENV" \
      && "$AWSCLI_VENV/bin/pip" install --quiet --disable-pip-version-check "awscli==$AWSCLI_VERSION"; } \
    > "$LOGS/awscli.log" 2>&1 || { show_log "$LOGS/awscli.log"; die "installing the AWS CLI failed"; }
fi

# ---- terraform: only when there is none (tfcheck.sh needs it) ---------------------------------
if command -v terraform >/dev/null || [ -x "$BIN/terraform" ]; then
  say "terraform: present ($(command -v terraform || echo "$BIN/terraform"))"
else
  say "terraform $TERRAFORM_VERSION: building from the Go module proxy (several minutes the first time)"
  GOBIN=$BIN nice go install "github.com/hashicorp/terraform@$TERRAFORM_VERSION" > "$LOGS/terraform.log" 2>&1 \
    || { show_log "$LOGS/terraform.log"; die "building terraform failed"; }
fi

# ---- helm --------------------------------------------------------------------------------------
build_helm() {
  local gomod k8s minor pkg=helm.sh/helm/v3
  gomod=$(go mod download -json "$pkg@$HELM_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])') || return 1
  k8s=$(awk '$1 == "k8s.io/client-go" { print $2 }' "$gomod") || return 1   # v0.MINOR.PATCH = Kubernetes 1.MINOR
  minor=$(echo "$k8s" | cut -d. -f2)
  [ -n "$minor" ] || { echo "no k8s.io/client-go requirement in $gomod"; return 1; }
  GOBIN=$BIN go install -ldflags "-s -w \
    -X $pkg/internal/version.version=$HELM_VERSION -X $pkg/internal/version.gitTreeState=clean \
    -X $pkg/pkg/lint/rules.k8sVersionMajor=1 -X $pkg/pkg/lint/rules.k8sVersionMinor=$minor \
    -X $pkg/pkg/chartutil.k8sVersionMajor=1 -X $pkg/pkg/chartutil.k8sVersionMinor=$minor" \
    "$pkg/cmd/helm@$HELM_VERSION"
}

if [ "$("$BIN/helm" version --template '{{.Version}}' 2>/dev/null || true)" = "$HELM_VERSION" ]; then
  say "helm $HELM_VERSION: already installed"
else
  say "helm $HELM_VERSION: building from the Go module proxy (about 2 minutes the first time)"
  build_helm > "$LOGS/helm.log" 2>&1 || { show_log "$LOGS/helm.log"; die "building helm failed"; }
  [ "$("$BIN/helm" version --template '{{.Version}}')" = "$HELM_VERSION" ] || die "helm reports the wrong version"
fi

# ---- hclfmt ----------------------------------------------------------------------------------
if [ -x "$BIN/hclfmt" ] && [ -f "$BIN/.hclfmt-$HCL_VERSION" ]; then
  say "hclfmt $HCL_VERSION: already installed"
else
  say "hclfmt $HCL_VERSION: building from the Go module proxy"
  if ! GOBIN=$BIN go install "github.com/hashicorp/hcl/v2/cmd/hclfmt@$HCL_VERSION" > "$LOGS/hclfmt.log" 2>&1; then
    show_log "$LOGS/hclfmt.log"; die "building hclfmt failed"
  fi
  rm -f "$BIN"/.hclfmt-*
  touch "$BIN/.hclfmt-$HCL_VERSION"
fi

# ---- Python test packages --------------------------------------------------------------------
PY=${DEPLOY_PYTHON:-}
if [ -z "$PY" ]; then
  if [ -x "$ROOT/.venv/bin/python" ]; then PY=$ROOT/.venv/bin/python; else PY=$(command -v python3); fi
fi
missing=$("$PY" - <<'EOF'
import importlib.util, os, sys
need = {"moto": "moto[server]>=5.0", "flask": "moto[server]>=5.0", "boto3": "boto3>=1.34",
        "hcl2": "python-hcl2>=4.3", "kubernetes_validate": "kubernetes-validate>=1.28",
        "yaml": "PyYAML>=6", "pytest": "pytest>=8"}
missing = {spec for mod, spec in need.items() if importlib.util.find_spec(mod) is None}
if not os.path.exists(os.path.join(os.path.dirname(sys.executable), "moto_server")):
    missing.add("moto[server]>=5.0")
print(" ".join(sorted(missing)))
EOF
)
in_venv=$("$PY" -c 'import sys; print(int(sys.prefix != sys.base_prefix))')
if [ -z "$missing" ]; then
  say "python test packages: present in $PY"
elif [ "$in_venv" = 1 ] || [ -n "${DEPLOY_PYTHON:-}" ]; then
  say "python test packages: installing into $PY: $missing"
  # shellcheck disable=SC2086
  "$PY" -m pip install --quiet --disable-pip-version-check $missing > "$LOGS/python.log" 2>&1 \
    || { show_log "$LOGS/python.log"; die "pip install failed"; }
else
  # Not a virtualenv and not asked for: leave the system's Python alone.
  say "python test packages: $PY lacks $missing; run .ci/setup.sh (creates .venv with them)" \
      "or set DEPLOY_PYTHON=<python> to install them there"
fi

# ---- wait for checkov --------------------------------------------------------------------------
if [ -n "$checkov_pid" ]; then
  if ! wait "$checkov_pid"; then show_log "$LOGS/checkov.log"; die "installing checkov failed"; fi
  say "checkov $CHECKOV_VERSION: installed"
fi

# ---- where everything is -------------------------------------------------------------------------
tf=$(command -v terraform || command -v tofu || { [ -x "$BIN/terraform" ] && echo "$BIN/terraform"; } || true)
say "done in $(( $(date +%s) - start ))s"
cat <<EOF
  helm      $BIN/helm ($("$BIN/helm" version --template '{{.Version}}'))
  hclfmt    $BIN/hclfmt ($HCL_VERSION)
  checkov   $CHECKOV_VENV/bin/checkov ($(checkov_version))
  python    $PY (moto_server, boto3, python-hcl2, kubernetes-validate, PyYAML, pytest)
  terraform ${tf:-not installed}
  aws       $(command -v aws || echo "$AWSCLI_VENV/bin/aws")
Run: $PY -m pytest tests/deploy -q
EOF
