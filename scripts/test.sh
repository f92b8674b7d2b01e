#!/usr/bin/env bash
# Runs every test: the kustomize and OpenAPI checks, then the Rust tests.
#
# The tools the tests use are installed first when missing: Garage (the S3
# server, built from crates.io, several minutes the first time),
# kubernetes-validate, and the npm and PyPI packages of the OpenAPI checks.
# Each install script skips what is already there.
#
# The gateway's end-to-end tests start the `jobgate` binary, which runs
# `jobgate-worker` (and, in Kubernetes mode, `fake-kube`) from the same
# folder, so the binaries are built before the tests.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-test-deps.sh
scripts/install-s3-server.sh
scripts/install-kustomize-tools.sh
scripts/install-openapi-tools.sh

cargo build --workspace --bins
scripts/check-kustomize.sh
scripts/check-openapi.sh
cargo test --workspace "$@"
