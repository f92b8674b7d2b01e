#!/usr/bin/env bash
# Installs the tools the test suite needs that a fresh machine may lack.
# Safe to run again: it skips what is already there.
set -euo pipefail

need_apt=()
command -v curl >/dev/null || need_apt+=(curl)
command -v sh >/dev/null || need_apt+=(dash)

if ((${#need_apt[@]})); then
    echo "install-test-deps: installing ${need_apt[*]}"
    apt-get update -qq
    apt-get install -y -qq "${need_apt[@]}"
fi
