#!/usr/bin/env bash
# Installs the tools that scripts/check-openapi.sh needs, from the npm registry
# and PyPI only, at the versions pinned in the repository:
#   - tests/clients/typescript/node_modules: Redocly CLI, openapi-typescript,
#     openapi-fetch, TypeScript and tsx, from package-lock.json (`npm ci`);
#   - .venv-tests: openapi-python-client, schemathesis and the generated
#     client's imports, from tests/clients/python/requirements.txt.
# Safe to run again: each part is skipped while its lock file is unchanged
# since the last successful install.
#
# Needs Node.js 20.19 or later (Redocly CLI requires it) with npm, and
# Python 3.9 or later with the venv module.
set -euo pipefail
cd "$(dirname "$0")/.."

typescript_dir=tests/clients/typescript
venv=.venv-tests
requirements=tests/clients/python/requirements.txt

# Prints the SHA-256 of a file. Each install step stores it as the marker of
# the lock file it installed from.
checksum() {
    sha256sum "$1" | cut -d' ' -f1
}

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    echo "install-openapi-tools: node and npm are missing; install Node.js 20.19 or later" >&2
    exit 1
fi

npm_marker="$typescript_dir/node_modules/.installed-lock-sha256"
if [[ -f "$npm_marker" && "$(cat "$npm_marker")" == "$(checksum "$typescript_dir/package-lock.json")" ]]; then
    echo "install-openapi-tools: npm packages are up to date in $typescript_dir/node_modules"
else
    echo "install-openapi-tools: installing npm packages into $typescript_dir/node_modules (npm ci)"
    (cd "$typescript_dir" && npm ci --no-audit --no-fund)
    checksum "$typescript_dir/package-lock.json" >"$npm_marker"
fi

python=${PYTHON:-python3}
if ! command -v "$python" >/dev/null; then
    echo "install-openapi-tools: $python is missing; install Python 3.9 or later, or set PYTHON" >&2
    exit 1
fi

pip_marker="$venv/.installed-requirements-sha256"
if [[ -f "$pip_marker" && "$(cat "$pip_marker")" == "$(checksum "$requirements")" ]]; then
    echo "install-openapi-tools: Python packages are up to date in $venv"
else
    if [[ ! -x "$venv/bin/python" ]]; then
        echo "install-openapi-tools: creating the virtualenv $venv"
        "$python" -m venv "$venv"
    fi
    echo "install-openapi-tools: installing Python packages into $venv from $requirements"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --requirement "$requirements"
    checksum "$requirements" >"$pip_marker"
fi

echo "install-openapi-tools: done"
