#!/usr/bin/env bash
# Installs Garage, the S3-compatible server the tests run against, from
# crates.io into ~/.cargo/bin. Skips the build when that version is there.
#
# Garage is chosen over s3s-fs because it checks SigV4 signatures and
# implements multipart uploads and conditional GETs (If-None-Match), which
# the gateway's cache relies on; s3s-fs 0.17 ignores If-None-Match on reads.
set -euo pipefail

version=2.5.0
if command -v garage >/dev/null && garage --version 2>/dev/null | grep -q "$version"; then
    echo "install-s3-server: garage $version already installed"
    exit 0
fi
echo "install-s3-server: building garage $version (takes several minutes)"
cargo install garage --version "$version" --locked \
    --no-default-features --features bundled-libs,sqlite
