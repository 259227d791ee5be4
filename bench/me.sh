#!/usr/bin/env bash
# Benchmark: authenticated `GET /v1/me` on SQLite and on PostgreSQL, against a baseline of
# actix-web answering a static JSON body (api/examples/static_json_baseline.rs), in one run.
#
#   bench/me.sh
#
# Needs: a Rust toolchain, curl, wrk (installed with apt-get if missing), and for the
# PostgreSQL row a server reachable at $BENCH_PG_URL with the right to create databases
# (a fresh database is created for the run and dropped at the end).
#
# Knobs (environment): BENCH_DURATION (20s), BENCH_WARMUP (5s), BENCH_CONNECTIONS (32),
# BENCH_THREADS (2), BENCH_PG_URL (postgres://postgres@127.0.0.1:5432), BENCH_SKIP_PG=1,
# BENCH_SKIP_BUILD=1. RUST_LOG is passed to the marketplace (default: its own, `info`).
#
# This is a benchmark, not a test: it exits 0 whatever the numbers are. The load generator
# runs on the same machine as the server, so they share the CPU cores.

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DURATION="${BENCH_DURATION:-20s}"
WARMUP="${BENCH_WARMUP:-5s}"
CONNECTIONS="${BENCH_CONNECTIONS:-32}"
THREADS="${BENCH_THREADS:-2}"
PG_URL="${BENCH_PG_URL:-postgres://postgres@127.0.0.1:5432}"
PG_DB="marketplace_bench_$$_$(date +%s)"
PASSWORD="benchmark password, long enough"

# Settings from the caller's environment must not change what is measured.
while IFS='=' read -r name _; do
    case "$name" in MARKETPLACE_*) unset "$name" ;; esac
done < <(env)

WORK="$(mktemp -d -t marketplace-bench.XXXXXX)"
SERVER_PID=""
PG_CREATED=""

log() { printf '%s\n' "$*" >&2; }

stop_server() {
    if [[ -n "$SERVER_PID" ]]; then
        kill "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 50); do
            kill -0 "$SERVER_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
        SERVER_PID=""
    fi
}

cleanup() {
    stop_server
    if [[ -n "$PG_CREATED" ]]; then
        psql "$PG_URL/postgres" -q -v ON_ERROR_STOP=1 \
            -c "DROP DATABASE IF EXISTS \"$PG_DB\" WITH (FORCE)" >/dev/null 2>&1 ||
            log "warning: could not drop database $PG_DB"
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------- tools and binaries ----------

if ! command -v wrk >/dev/null; then
    log "installing wrk (apt-get)"
    SUDO=""
    [[ "$(id -u)" -ne 0 ]] && SUDO="sudo"
    $SUDO apt-get install -y wrk >/dev/null 2>&1 ||
        { $SUDO apt-get update >/dev/null && $SUDO apt-get install -y wrk >/dev/null; }
fi
command -v curl >/dev/null || { log "error: curl is required"; exit 1; }

if [[ -z "${BENCH_SKIP_BUILD:-}" ]]; then
    log "building release binaries"
    (cd "$ROOT" && cargo build --release --bin marketplace && \
        cargo build --release -p api --example static_json_baseline) >&2
fi
MARKETPLACE="$ROOT/target/release/marketplace"
BASELINE="$ROOT/target/release/examples/static_json_baseline"

# wrk prints its numbers through this script: p99 in microseconds, requests/s, errors.
cat >"$WORK/report.lua" <<'LUA'
done = function(summary, latency, requests)
  local secs = summary.duration / 1e6
  local e = summary.errors
  io.write(string.format("BENCH rps=%.1f p50_us=%d p99_us=%d requests=%d errors=%d non2xx=%d\n",
    summary.requests / secs, latency:percentile(50), latency:percentile(99), summary.requests,
    e.connect + e.read + e.write + e.timeout, e.status))
end
LUA

# ---------- helpers ----------

free_port() {
    local port
    for _ in $(seq 100); do
        port=$((20000 + RANDOM % 40000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return
        fi
    done
    log "error: no free port found"
    exit 1
}

wait_ready() { # url
    for _ in $(seq 300); do
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then
            log "error: the server exited; its log:"
            tail -n 30 "$WORK/server.log" >&2
            exit 1
        fi
        curl -fsS -o /dev/null "$1" 2>/dev/null && return
        sleep 0.1
    done
    log "error: the server did not answer $1"
    exit 1
}

rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$SERVER_PID/status"; }
threads() { awk '/^Threads:/ { print $2 }' "/proc/$SERVER_PID/status"; }
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }

signup() { # base url -> access token
    local body
    body="$(curl -fsS -X POST "$1/v1/auth/signup" -H 'Content-Type: application/json' \
        -d "{\"email\":\"bench-$RANDOM@example.com\",\"password\":\"$PASSWORD\",\"name\":\"Benchmark User\",\"organization_name\":\"Benchmark Organization\"}")"
    sed -n 's/.*"access_token":"\([^"]*\)".*/\1/p' <<<"$body"
}

# Runs warm-up and load against url; sets RPS, P99_MS, P50_MS, REQUESTS, ERRORS.
load() { # url [header]
    local url="$1" header=("${@:2}")
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"$WARMUP" "${header[@]}" "$url" >/dev/null
    local out line
    out="$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -s "$WORK/report.lua" \
        "${header[@]}" "$url")"
    printf '%s\n' "$out" >>"$WORK/wrk.log"
    line="$(grep '^BENCH ' <<<"$out")"
    field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<" ${line#BENCH }"; }
    RPS="$(field rps)"
    P50_MS="$(awk -v u="$(field p50_us)" 'BEGIN { printf "%.2f", u / 1000 }')"
    P99_MS="$(awk -v u="$(field p99_us)" 'BEGIN { printf "%.2f", u / 1000 }')"
    REQUESTS="$(field requests)"
    ERRORS="$(( $(field errors) + $(field non2xx) ))"
}

declare -a ROWS=()
BASE_RPS=""

record() { # target idle_kib after_kib threads_after
    local pct="100"
    if [[ -n "$BASE_RPS" ]]; then
        pct="$(awk -v a="$RPS" -v b="$BASE_RPS" 'BEGIN { printf "%.1f", 100 * a / b }')"
    fi
    ROWS+=("| $1 | $(printf '%.0f' "$RPS") | $P99_MS | $pct % | $(mib "$2") | $(mib "$3") | $ERRORS |")
    log "  $1: $(printf '%.0f' "$RPS") req/s, p50 $P50_MS ms, p99 $P99_MS ms," \
        "idle RSS $(mib "$2") MiB, after load $(mib "$3") MiB ($4 threads), errors $ERRORS"
}

run_marketplace() { # label database-url-or-empty
    local label="$1" db_url="$2" port base token idle after
    port="$(free_port)"
    base="http://127.0.0.1:$port"
    local data="$WORK/data-$port"
    mkdir -p "$data"
    log "$label: starting on port $port"
    (
        cd "$WORK"
        export MARKETPLACE_AUTH_RATE_LIMIT=1000000
        [[ -n "$db_url" ]] && export MARKETPLACE_DATABASE_URL="$db_url"
        exec "$MARKETPLACE" serve --listen "127.0.0.1:$port" --data-dir "$data"
    ) >"$WORK/server.log" 2>&1 &
    SERVER_PID=$!
    wait_ready "$base/healthz"
    token="$(signup "$base")"
    [[ -n "$token" ]] || { log "error: signup gave no access token"; exit 1; }
    curl -fsS -o /dev/null -H "Authorization: Bearer $token" "$base/v1/me" ||
        { log "error: GET /v1/me failed"; exit 1; }
    sleep 2
    idle="$(rss_kib)"
    load "$base/v1/me" -H "Authorization: Bearer $token"
    after="$(rss_kib)"
    record "$label" "$idle" "$after" "$(threads)"
    stop_server
}

# ---------- the runs ----------

LOADAVG_START="$(cut -d' ' -f1-3 /proc/loadavg)"
log "load: wrk -t$THREADS -c$CONNECTIONS -d$DURATION (after a $WARMUP warm-up), loadavg $LOADAVG_START"

port="$(free_port)"
log "baseline: starting on port $port"
(cd "$WORK" && exec "$BASELINE" "127.0.0.1:$port") >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
wait_ready "http://127.0.0.1:$port/v1/me"
sleep 1
idle="$(rss_kib)"
load "http://127.0.0.1:$port/v1/me"
after="$(rss_kib)"
record "baseline: actix-web static JSON" "$idle" "$after" "$(threads)"
BASE_RPS="$RPS"
stop_server

run_marketplace "marketplace /v1/me, SQLite" ""

if [[ -z "${BENCH_SKIP_PG:-}" ]]; then
    if psql "$PG_URL/postgres" -q -v ON_ERROR_STOP=1 -c "CREATE DATABASE \"$PG_DB\"" >/dev/null; then
        PG_CREATED=1
        run_marketplace "marketplace /v1/me, PostgreSQL" "$PG_URL/$PG_DB"
    else
        log "warning: cannot create a PostgreSQL database at $PG_URL; skipping that row"
    fi
fi

# ---------- report ----------

cpu="$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)"
mem="$(awk '/^MemTotal:/ { printf "%.0f", $2 / 1048576 }' /proc/meminfo)"
cat <<EOF

Benchmark of \`GET /v1/me\` (authenticated with an access token), $(date -u '+%Y-%m-%d %H:%M UTC')
Machine: $(nproc) cores ($cpu), $mem GiB RAM, $(uname -sr); $(wrk -v 2>&1 | head -n1 | cut -d' ' -f1-2)
Load: wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency after a $WARMUP warm-up, one server at a time,
default worker threads (one per core). The load generator runs on the same machine and shares
its $(nproc) cores with the server (and, for PostgreSQL, with the database), so these numbers
are lower than a separate load machine would show; compare rows, not absolutes.
Idle RSS: VmRSS after start, one signup and one /v1/me, before load; after load: at its end.
Load average before the first run: $LOADAVG_START (anything well above 0 means other work
shared the cores too; rerun on a quiet machine for comparable numbers).

| target | req/s | p99 ms | % of baseline req/s | idle RSS MiB | RSS after load MiB | errors |
| --- | ---: | ---: | ---: | ---: | ---: | ---: |
EOF
printf '%s\n' "${ROWS[@]}"
