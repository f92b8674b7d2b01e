#!/usr/bin/env bash
# Measures the gateway's request paths with its default settings, on a
# release build, and prints one Markdown table row per measurement:
#
#   submit  POST /v1/jobs, 200 jobs with 4 clients (ab)
#   poll    GET /v1/jobs/{id} of one running job that reports progress,
#           with 64 connections (wrk); with S3, also the progress reads
#           that reached the store per second
#   list    GET /v1/jobs?limit=20 with the submitted jobs in the store,
#           with 16 connections (wrk)
#
# and the gateway's peak resident memory. Setups, each skipped with a note
# when its tools are missing:
#
#   local       local executor, filesystem store (the embedded default)
#   local-s3    local executor, Garage S3 store on loopback
#   kubernetes  Kubernetes executor against the fake API server, filesystem store
#
# Usage: scripts/bench.sh [SETUP...]   (default: all three)
# Environment: BENCH_SECONDS (default 10), the length of each wrk run.
#
# The load generator runs on the same machine as the gateway and its
# workers, so the numbers are a floor for what the gateway does on its own.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${BENCH_SECONDS:-10}"
setups=("$@")
((${#setups[@]})) || setups=(local local-s3 kubernetes)

need_apt=()
command -v wrk >/dev/null || need_apt+=(wrk)
command -v ab >/dev/null || need_apt+=(apache2-utils)
if ((${#need_apt[@]})); then
    echo "bench: installing ${need_apt[*]}" >&2
    apt-get update -qq
    apt-get install -y -qq "${need_apt[@]}" >&2
fi

cargo build --release --workspace --bins >&2
bin=$PWD/target/release
work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    if [[ -f "$work/s3/garage.pid" ]]; then
        scripts/s3-test-server.sh stop "$work/s3" >/dev/null 2>&1 || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

wait_ready() {
    local url=$1 pid=$2 log=$3
    for _ in $(seq 1 300); do
        curl -fsS "$url/readyz" >/dev/null 2>&1 && return 0
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "bench: the gateway exited; its log:" >&2
            tail -n 20 "$log" >&2
            return 1
        fi
        sleep 0.1
    done
    echo "bench: the gateway did not become ready" >&2
    return 1
}

# Submits one job and prints its id.
submit() {
    local url=$1 body=$2
    curl -fsS -X POST "$url/v1/jobs" -H 'Content-Type: application/json' -d "$body" |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])'
}

wait_state() {
    local url=$1 id=$2 state=$3
    for _ in $(seq 1 300); do
        if curl -fsS "$url/v1/jobs/$id" | grep -q "\"state\":\"$state\""; then
            return 0
        fi
        sleep 0.1
    done
    echo "bench: job $id did not become $state" >&2
    return 1
}

row() {
    printf '| %s | %s | %s | %s | %s | %s |\n' "$@"
}

# Runs the three measurements against a gateway at $1 (pid $2); $3 is the
# Garage log for counting store reads, or empty.
measure() {
    local setup=$1 url=$2 pid=$3 garage_log=${4:-} prefix=${5:-}
    local body='{"template": "shell", "parameters": {"script": "true"}}'
    printf '%s' "$body" >"$work/submit.json"
    local out
    out=$(ab -q -n 200 -c 4 -p "$work/submit.json" -T application/json "$url/v1/jobs" 2>&1)
    local failed
    failed=$(sed -n 's/^Non-2xx responses: *//p' <<<"$out")
    row "$setup" submit "$(sed -n 's/^Requests per second: *\([0-9.]*\).*/\1/p' <<<"$out")" \
        "$(awk '$1 == "50%" {print $2 " ms"}' <<<"$out")" "$(awk '$1 == "99%" {print $2 " ms"}' <<<"$out")" \
        "200 jobs, 4 clients${failed:+, $failed non-2xx}"

    local id
    id=$(submit "$url" '{"template": "shell", "parameters": {"script": "echo progress 10 warming up; sleep 600"}}')
    wait_state "$url" "$id" running
    sleep 1.5
    local before=0
    if [[ -n "$garage_log" ]]; then
        before=$(grep -c "GET /jobgate/$prefix/jobs/$id/progress.json" "$garage_log" || true)
    fi
    out=$(wrk -t 2 -c 64 -d "${seconds}s" --latency "$url/v1/jobs/$id")
    local note="64 connections, ${seconds} s"
    if [[ -n "$garage_log" ]]; then
        sleep 0.5
        local after
        after=$(grep -c "GET /jobgate/$prefix/jobs/$id/progress.json" "$garage_log" || true)
        note="$note; $((after - before)) progress reads reached S3"
    fi
    local errors
    errors=$(sed -n 's/^ *Non-2xx or 3xx responses: *//p' <<<"$out")
    row "$setup" poll "$(sed -n 's/^Requests\/sec: *//p' <<<"$out")" \
        "$(awk '$1 == "50%" {print $2}' <<<"$out")" "$(awk '$1 == "99%" {print $2}' <<<"$out")" \
        "$note${errors:+, $errors non-2xx}"
    curl -fsS -X DELETE "$url/v1/jobs/$id" >/dev/null

    out=$(wrk -t 2 -c 16 -d "${seconds}s" --latency "$url/v1/jobs?limit=20")
    row "$setup" "list (201 jobs)" "$(sed -n 's/^Requests\/sec: *//p' <<<"$out")" \
        "$(awk '$1 == "50%" {print $2}' <<<"$out")" "$(awk '$1 == "99%" {print $2}' <<<"$out")" \
        "16 connections, ${seconds} s"
    row "$setup" "peak memory" "" "" "" "$(awk '/VmHWM/ {printf "%.0f MiB", $2 / 1024}' "/proc/$pid/status")"
}

start_gateway() {
    local name=$1
    shift
    local port log
    port=$(free_port)
    log="$work/$name.log"
    "$bin/jobgate" serve --listen "127.0.0.1:$port" --data-dir "$work/$name" \
        --templates tests/fixtures/templates "$@" >"$log" 2>&1 &
    gateway_pid=$!
    pids+=("$gateway_pid")
    gateway_url="http://127.0.0.1:$port"
    wait_ready "$gateway_url" "$gateway_pid" "$log"
}

stop_gateway() {
    kill "$gateway_pid" 2>/dev/null || true
    wait "$gateway_pid" 2>/dev/null || true
}

echo "machine: $(nproc) CPUs ($(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -n 1)), $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo), $(uname -sr)"
echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown); wrk runs of ${seconds} s"
echo
row setup measurement "requests/s" p50 p99 notes
row --- --- --- --- --- ---

for setup in "${setups[@]}"; do
    case "$setup" in
    local)
        start_gateway local
        measure local "$gateway_url" "$gateway_pid"
        stop_gateway
        ;;
    local-s3)
        garage_bin="${GARAGE_BIN:-garage}"
        if ! command -v "$garage_bin" >/dev/null; then
            echo "bench: garage not found (scripts/install-s3-server.sh installs it); skipping local-s3" >&2
            continue
        fi
        declare -A s3=()
        while IFS='=' read -r key value; do
            s3[$key]=$value
        done < <(scripts/s3-test-server.sh start "$work/s3")
        for key in "${!s3[@]}"; do
            [[ $key == AWS_* ]] && export "$key=${s3[$key]}"
        done
        start_gateway local-s3 --store "s3://${s3[JOBGATE_S3_BUCKET]}/bench" --s3-path-style true
        measure local-s3 "$gateway_url" "$gateway_pid" "$work/s3/garage.log" bench
        stop_gateway
        scripts/s3-test-server.sh stop "$work/s3" >/dev/null
        ;;
    kubernetes)
        if ! command -v kubectl >/dev/null; then
            echo "bench: kubectl not found; skipping kubernetes" >&2
            continue
        fi
        "$bin/fake-kube" --kubeconfig "$work/fake.kubeconfig" >"$work/fake-kube.log" 2>&1 &
        pids+=("$!")
        for _ in $(seq 1 100); do
            [[ -f "$work/fake.kubeconfig.jobgate" ]] && break
            sleep 0.1
        done
        KUBECONFIG="$work/fake.kubeconfig" kubectl apply --validate=false -n jobgate \
            -f tests/fixtures/templates/shell.yaml >/dev/null
        start_gateway kubernetes --executor kubernetes --namespace jobgate \
            --kubeconfig "$work/fake.kubeconfig.jobgate"
        measure kubernetes "$gateway_url" "$gateway_pid"
        stop_gateway
        ;;
    *)
        echo "bench: unknown setup $setup; use local, local-s3 or kubernetes" >&2
        exit 64
        ;;
    esac
done
