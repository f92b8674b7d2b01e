#!/usr/bin/env bash
# Runs every test: the kustomize and OpenAPI checks, then the Rust tests.
#
# The gateway's end-to-end tests start the `jobgate` binary, which runs
# `jobgate-worker` from the same folder, so both binaries are built first.
# The tools the checks use are installed by the scripts/install-*.sh
# scripts, which .ci/run calls.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --workspace --bins
scripts/check-kustomize.sh
scripts/check-openapi.sh
cargo test --workspace "$@"
