#!/usr/bin/env bash
# Runs every test of the workspace.
#
# The gateway's end-to-end tests start the `jobgate` binary, which runs
# `jobgate-worker` from the same folder, so both binaries are built first.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --workspace --bins
cargo test --workspace "$@"
