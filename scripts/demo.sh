#!/usr/bin/env bash
# Runs jobgate on the embedded default (local executor, filesystem store) and
# submits a `thumbnail` job over real photographs, with a progress bar. The
# gateway keeps serving afterwards, so the outputs can be downloaded and more
# jobs submitted; Ctrl-C stops it.
#
# Environment: JOBGATE_LISTEN (default 127.0.0.1:8080).
set -euo pipefail
cd "$(dirname "$0")/.."

listen="${JOBGATE_LISTEN:-127.0.0.1:8080}"
url="http://${listen}"

scripts/fetch-photos.sh photos
cargo build --workspace --bins
bin=target/debug

mkdir -p .jobgate
log=.jobgate/gateway.log
echo "demo: starting the gateway on $url; its log goes to $log"
"$bin/jobgate" serve --listen "$listen" >>"$log" 2>&1 &
server=$!
stop_server() {
    if kill -0 "$server" 2>/dev/null; then
        kill "$server"
    fi
    wait "$server" 2>/dev/null || true
}
trap stop_server EXIT
# Ctrl-C reaches the gateway too; let it drain and stop by itself.
trap 'wait "$server" 2>/dev/null; exit 130' INT TERM

for _ in $(seq 1 100); do
    if curl -fsS "$url/readyz" >/dev/null 2>&1; then
        break
    fi
    if ! kill -0 "$server" 2>/dev/null; then
        echo "demo: the gateway exited; its log:" >&2
        tail -n 20 "$log" >&2
        exit 1
    fi
    sleep 0.1
done

"$bin/jobgate" submit thumbnail images=@photos 'sizes=[256,1024]' 'formats=["jpeg","webp"]' \
    --url "$url" --wait

cat <<MESSAGE

The gateway is still serving at $url (log: $log):
  Swagger UI:   $url/docs
  recent jobs:  curl -s '$url/v1/jobs?limit=5'
Press Ctrl-C to stop it.
MESSAGE
wait "$server"
