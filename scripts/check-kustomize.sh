#!/usr/bin/env bash
# Renders kustomize/base and every overlay with `kubectl kustomize`, then
# validates each rendered object against the Kubernetes OpenAPI schemas with
# kubernetes-validate in strict mode, where an unknown field is an error.
# scripts/install-kustomize-tools.sh installs the tools.
#
# Without kubectl the check is skipped with a message, and exits 0.
set -euo pipefail
cd "$(dirname "$0")/.."

# The API version the gateway is built against (k8s-openapi's feature v1_33
# in Cargo.toml); kubernetes-validate 1.37.0 ships its schemas.
KUBERNETES_VERSION=1.33.0
venv="${KUSTOMIZE_TOOLS_VENV:-target/kustomize-tools/venv}"
validate="$venv/bin/kubernetes-validate"

if ! command -v kubectl >/dev/null; then
    echo "check-kustomize: SKIPPED, kubectl is missing; install kubectl 1.27 or later" \
        "(scripts/install-kustomize-tools.sh says whether a package provides it)"
    exit 0
fi
if [[ ! -x "$validate" ]]; then
    echo "check-kustomize: $validate is missing; run scripts/install-kustomize-tools.sh" >&2
    exit 1
fi

rendered="$(mktemp -d)"
trap 'rm -rf "$rendered"' EXIT

failed=()
objects=0
for dir in kustomize/base kustomize/overlays/*/; do
    dir="${dir%/}"
    name="$(basename "$dir")"
    out="$rendered/$name.yaml"
    if ! kubectl kustomize "$dir" >"$out" 2>"$rendered/$name.err"; then
        echo "check-kustomize: FAILED to render $dir with kubectl kustomize:" >&2
        sed 's/^/  /' "$rendered/$name.err" >&2
        failed+=("$dir")
        continue
    fi
    count="$(grep -c '^kind:' "$out" || true)"
    if "$validate" --strict --quiet --kubernetes-version "$KUBERNETES_VERSION" "$out" >"$rendered/$name.log" 2>&1; then
        echo "check-kustomize: $dir renders $count objects, all valid against Kubernetes $KUBERNETES_VERSION (strict)"
        objects=$((objects + count))
    else
        echo "check-kustomize: FAILED, $dir renders objects that are invalid against Kubernetes $KUBERNETES_VERSION (strict):" >&2
        sed 's/^/  /' "$rendered/$name.log" >&2
        failed+=("$dir")
    fi
done

if ((${#failed[@]})); then
    echo "check-kustomize: FAILED for ${failed[*]}; see the messages above" >&2
    exit 1
fi
echo "check-kustomize: $objects objects valid"
