#!/usr/bin/env bash
# Starts or stops a single-node Garage S3 server on loopback for tests and by
# hand, with one bucket and one access key.
#
#   scripts/s3-test-server.sh start DIR   start (or restart) the server whose state is in DIR;
#                                         prints KEY=VALUE lines: the endpoint, bucket and key
#   scripts/s3-test-server.sh stop DIR    stop it, keeping its data
#
# Ports are chosen free on 127.0.0.1 at the first start and kept in DIR, so a
# restart serves the same endpoint and data. The credentials are fixed test
# values; never use this server for real data.
set -euo pipefail

command="${1:-}"
dir="${2:-}"
if [[ -z "$command" || -z "$dir" ]]; then
    echo "usage: $0 start|stop DIR" >&2
    exit 64
fi

garage_bin="${GARAGE_BIN:-garage}"
bucket=jobgate
key_id=GK0123456789abcdef01234567
secret=0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
region=garage

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

stop() {
    if [[ -f "$dir/garage.pid" ]]; then
        pid=$(cat "$dir/garage.pid")
        if kill "$pid" 2>/dev/null; then
            for _ in $(seq 1 100); do
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.05
            done
            kill -9 "$pid" 2>/dev/null || true
        fi
        rm -f "$dir/garage.pid"
    fi
}

case "$command" in
stop)
    stop
    exit 0
    ;;
start) ;;
*)
    echo "$0: unknown command $command; use start or stop" >&2
    exit 64
    ;;
esac

if ! command -v "$garage_bin" >/dev/null; then
    echo "$0: garage not found; run scripts/install-s3-server.sh" >&2
    exit 69
fi

mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
config="$dir/garage.toml"
if [[ ! -f "$config" ]]; then
    s3_port=$(free_port)
    rpc_port=$(free_port)
    admin_port=$(free_port)
    cat >"$config" <<CONFIG
metadata_dir = "$dir/meta"
data_dir = "$dir/data"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:$rpc_port"
rpc_public_addr = "127.0.0.1:$rpc_port"
rpc_secret = "$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"

[s3_api]
s3_region = "$region"
api_bind_addr = "127.0.0.1:$s3_port"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:$admin_port"
admin_token = "$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
CONFIG
fi
s3_port=$(sed -n 's/^api_bind_addr = "127.0.0.1:\([0-9]*\)"/\1/p' "$config" | head -n 1)

stop
garage_cli() { "$garage_bin" -c "$config" "$@"; }
RUST_LOG="${GARAGE_LOG:-garage=info}" "$garage_bin" -c "$config" server >>"$dir/garage.log" 2>&1 &
echo $! >"$dir/garage.pid"

node=""
for _ in $(seq 1 200); do
    node=$(garage_cli status 2>/dev/null | awk 'NR > 2 && $1 ~ /^[0-9a-f]+$/ {print $1; exit}') || true
    [[ -n "$node" ]] && break
    sleep 0.05
done
if [[ -z "$node" ]]; then
    echo "$0: garage did not start; its log:" >&2
    tail -n 20 "$dir/garage.log" >&2
    exit 1
fi

layout_version() {
    garage_cli layout show 2>/dev/null | sed -n 's/^Current cluster layout version: //p'
}

if [[ ! -f "$dir/initialized" ]]; then
    if [[ "$(layout_version)" == "0" ]]; then
        garage_cli layout assign -z local -c 1G "$node" >/dev/null
        # The CLI may report an error for an apply that took effect; the
        # version check below is what counts.
        garage_cli layout apply --version 1 >/dev/null 2>&1 || true
    fi
    for _ in $(seq 1 200); do
        [[ "$(layout_version)" == "1" ]] && break
        sleep 0.05
    done
    garage_cli key info jobgate-test >/dev/null 2>&1 ||
        garage_cli key import --yes -n jobgate-test "$key_id" "$secret" >/dev/null
    garage_cli bucket info "$bucket" >/dev/null 2>&1 ||
        garage_cli bucket create "$bucket" >/dev/null
    garage_cli bucket allow --read --write --owner "$bucket" --key jobgate-test >/dev/null
    touch "$dir/initialized"
fi

# The S3 endpoint answers once the layout is active.
for _ in $(seq 1 200); do
    code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$s3_port/" || true)
    [[ "$code" != "000" ]] && break
    sleep 0.05
done

cat <<ENV
AWS_ENDPOINT_URL=http://127.0.0.1:$s3_port
AWS_ACCESS_KEY_ID=$key_id
AWS_SECRET_ACCESS_KEY=$secret
AWS_REGION=$region
JOBGATE_S3_BUCKET=$bucket
ENV
