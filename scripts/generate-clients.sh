#!/usr/bin/env bash
# Generates the API clients that tests/clients/*/smoke.* exercise, from the
# committed openapi/openapi.yaml:
#   - tests/clients/typescript/generated/schema.d.ts: types for openapi-fetch,
#     made by openapi-typescript;
#   - tests/clients/python/generated/jobgate_client/: the Python package
#     `jobgate_client`, made by openapi-python-client.
# Both folders are git-ignored and rebuilt from scratch on every run, so a
# client always matches the current document.
#
# Needs the tools from scripts/install-openapi-tools.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

document=openapi/openapi.yaml
typescript_dir=tests/clients/typescript
python_dir=tests/clients/python
venv=.venv-tests

if [[ ! -x "$typescript_dir/node_modules/.bin/openapi-typescript" || ! -x "$venv/bin/openapi-python-client" ]]; then
    echo "generate-clients: the generators are not installed; run scripts/install-openapi-tools.sh" >&2
    exit 1
fi

echo "generate-clients: TypeScript types from $document into $typescript_dir/generated/"
rm -rf "$typescript_dir/generated"
mkdir -p "$typescript_dir/generated"
# `--default-non-nullable false` keeps request fields that have a default
# (such as `labels` of SubmitJob) optional, as the document declares them.
"$typescript_dir/node_modules/.bin/openapi-typescript" "$document" \
    --default-non-nullable false \
    --output "$typescript_dir/generated/schema.d.ts"

echo "generate-clients: Python client from $document into $python_dir/generated/"
rm -rf "$python_dir/generated"
"$venv/bin/openapi-python-client" generate \
    --path "$document" \
    --config "$python_dir/generator.yaml" \
    --output-path "$python_dir/generated/jobgate_client" \
    --meta none \
    --fail-on-warning

echo "generate-clients: done"
