#!/usr/bin/env bash
# Installs what scripts/check-kustomize.sh needs: kubernetes-validate (pinned,
# from PyPI) in a virtualenv, and kubectl from the Debian packages when it is
# missing and the packaged version is recent enough. Safe to run again: it
# skips what is there.
#
# The virtualenv lives in target/kustomize-tools/venv, which git ignores;
# KUSTOMIZE_TOOLS_VENV moves it.
set -euo pipefail
cd "$(dirname "$0")/.."

# kubernetes-validate 1.37.0 ships the Kubernetes schemas from 1.25 to 1.37;
# check-kustomize.sh picks the version it validates against.
KUBERNETES_VALIDATE_VERSION=1.37.0
venv="${KUSTOMIZE_TOOLS_VENV:-target/kustomize-tools/venv}"

installed_version() {
    "$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("kubernetes-validate"))' 2>/dev/null || true
}

if [[ "$(installed_version)" == "$KUBERNETES_VALIDATE_VERSION" ]]; then
    echo "install-kustomize-tools: kubernetes-validate $KUBERNETES_VALIDATE_VERSION is already in $venv"
else
    command -v python3 >/dev/null || {
        echo "install-kustomize-tools: python3 is missing; install python3 and python3-venv, then run this again" >&2
        exit 1
    }
    echo "install-kustomize-tools: installing kubernetes-validate $KUBERNETES_VALIDATE_VERSION into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
fi

if command -v kubectl >/dev/null; then
    echo "install-kustomize-tools: kubectl is at $(command -v kubectl)"
elif command -v apt-get >/dev/null; then
    apt-get update -qq
    # Debian names the package kubernetes-client. The overlays are checked
    # with kubectl 1.32 (kustomize v5.5.0), and kubectl embeds kustomize v5
    # from 1.27 on, so older packages (Debian 12 ships 1.20) are skipped.
    candidate="$(apt-cache policy kubernetes-client 2>/dev/null | sed -n 's/^ *Candidate: *//p')"
    if [[ "$candidate" =~ ^([0-9]+:)?1\.([0-9]+)\. ]] && ((BASH_REMATCH[2] >= 27)); then
        echo "install-kustomize-tools: installing kubectl from the Debian package kubernetes-client $candidate"
        apt-get install -y -qq kubernetes-client
    else
        echo "install-kustomize-tools: kubectl is missing, and the Debian package kubernetes-client" \
            "(${candidate:-not available}) is older than 1.27; install kubectl 1.27 or later to run the kustomize checks"
    fi
else
    echo "install-kustomize-tools: kubectl is missing and apt-get is not available;" \
        "install kubectl 1.27 or later to run the kustomize checks"
fi
