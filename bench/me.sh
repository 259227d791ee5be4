#!/usr/bin/env bash
# Benchmark: authenticated `GET /v1/me` on SQLite and on PostgreSQL, against a baseline of
# actix-web answering a static JSON body (api/examples/static_json_baseline.rs), in one run.
#
#   bench/me.sh
#
# Needs: a Rust toolchain, curl, wrk (installed with apt-get if missing), and for the
# PostgreSQL rows a server reachable at $BENCH_PG_URL whose user may create databases (a
# fresh database per round, dropped afterwards).
#
# Each round runs baseline, SQLite, PostgreSQL one after another, each on a freshly started
# server; the table shows the median over the rounds, so a burst of unrelated work on the
# machine does not decide the result alone.
#
# Knobs (environment): BENCH_ROUNDS (3), BENCH_DURATION (20s), BENCH_WARMUP (5s),
# BENCH_CONNECTIONS (32), BENCH_THREADS (2), BENCH_PG_URL (postgres://postgres@127.0.0.1:5432),
# BENCH_SKIP_PG=1, BENCH_SKIP_BUILD=1. RUST_LOG reaches the marketplace (default `info`).
#
# This is a benchmark, not a test: it exits 0 whatever the numbers are. The load generator
# runs on the same machine as the server, so they share the CPU cores.

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ROUNDS="${BENCH_ROUNDS:-3}"
DURATION="${BENCH_DURATION:-20s}"
WARMUP="${BENCH_WARMUP:-5s}"
CONNECTIONS="${BENCH_CONNECTIONS:-32}"
THREADS="${BENCH_THREADS:-2}"
PG_URL="${BENCH_PG_URL:-postgres://postgres@127.0.0.1:5432}"
PG_PREFIX="marketplace_bench_$$_$(date +%s)"
PASSWORD="benchmark password, long enough"

# Settings from the caller's environment must not change what is measured.
while IFS='=' read -r name _; do
    case "$name" in MARKETPLACE_*) unset "$name" ;; esac
done < <(env)

WORK="$(mktemp -d -t marketplace-bench.XXXXXX)"
SERVER_PID=""
PG_DB=""

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

drop_pg_db() {
    if [[ -n "$PG_DB" ]]; then
        psql "$PG_URL/postgres" -q -v ON_ERROR_STOP=1 \
            -c "DROP DATABASE IF EXISTS \"$PG_DB\" WITH (FORCE)" >/dev/null 2>&1 ||
            log "warning: could not drop database $PG_DB"
        PG_DB=""
    fi
}

cleanup() {
    stop_server
    drop_pg_db
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
    (cd "$ROOT" && cargo build --release --bin marketplace &&
        cargo build --release -p api --example static_json_baseline) >&2
fi
MARKETPLACE="$ROOT/target/release/marketplace"
BASELINE="$ROOT/target/release/examples/static_json_baseline"

# wrk reports through this script: rate, p50 and p99 in microseconds, errors.
cat >"$WORK/report.lua" <<'LUA'
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH rps=%.1f p50_us=%d p99_us=%d requests=%d errors=%d detail=connect:%d,read:%d,write:%d,timeout:%d,non2xx:%d\n",
    summary.requests / (summary.duration / 1e6), latency:percentile(50),
    latency:percentile(99), summary.requests,
    e.connect + e.read + e.write + e.timeout + e.status,
    e.connect, e.read, e.write, e.timeout, e.status))
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

signup() { # base url -> access token
    local body
    body="$(curl -fsS -X POST "$1/v1/auth/signup" -H 'Content-Type: application/json' \
        -d "{\"email\":\"bench-$RANDOM@example.com\",\"password\":\"$PASSWORD\",\"name\":\"Benchmark User\",\"organization_name\":\"Benchmark Organization\"}")"
    sed -n 's/.*"access_token":"\([^"]*\)".*/\1/p' <<<"$body"
}

# Warm-up, then the measured load; appends "rps p50_us p99_us errors idle_kib after_kib"
# to the target's results file.
measure() { # key url idle_kib [wrk args...]
    local key="$1" url="$2" idle="$3" out line after
    shift 3
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"$WARMUP" "$@" "$url" >/dev/null
    out="$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -s "$WORK/report.lua" \
        "$@" "$url")"
    after="$(rss_kib)"
    line="$(grep '^BENCH ' <<<"$out")"
    val() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<" ${line#BENCH }"; }
    echo "$(val rps) $(val p50_us) $(val p99_us) $(val errors) $idle $after" >>"$WORK/$key.results"
    log "  $key: $(printf '%.0f' "$(val rps)") req/s, p50 $(val p50_us) us, p99 $(val p99_us) us," \
        "idle RSS $idle KiB, after load $after KiB ($(threads) threads), errors $(val errors)" \
        "($(val detail))"
}

run_baseline() {
    local port
    port="$(free_port)"
    (cd "$WORK" && exec "$BASELINE" "127.0.0.1:$port") >"$WORK/server.log" 2>&1 &
    SERVER_PID=$!
    wait_ready "http://127.0.0.1:$port/v1/me"
    sleep 1
    measure baseline "http://127.0.0.1:$port/v1/me" "$(rss_kib)"
    stop_server
}

run_marketplace() { # key database-url-or-empty
    local key="$1" db_url="$2" port base token
    port="$(free_port)"
    base="http://127.0.0.1:$port"
    mkdir -p "$WORK/data-$port"
    (
        cd "$WORK"
        export MARKETPLACE_AUTH_RATE_LIMIT=1000000
        [[ -n "$db_url" ]] && export MARKETPLACE_DATABASE_URL="$db_url"
        exec "$MARKETPLACE" serve --listen "127.0.0.1:$port" --data-dir "$WORK/data-$port"
    ) >"$WORK/server.log" 2>&1 &
    SERVER_PID=$!
    wait_ready "$base/healthz"
    token="$(signup "$base")"
    [[ -n "$token" ]] || { log "error: signup gave no access token"; exit 1; }
    curl -fsS -o /dev/null -H "Authorization: Bearer $token" "$base/v1/me" ||
        { log "error: GET /v1/me failed"; exit 1; }
    sleep 2
    measure "$key" "$base/v1/me" "$(rss_kib)" -H "Authorization: Bearer $token"
    stop_server
}

# ---------- the runs ----------

LOADAVG_START="$(cut -d' ' -f1-3 /proc/loadavg)"
log "$ROUNDS rounds of wrk -t$THREADS -c$CONNECTIONS -d$DURATION (after a $WARMUP warm-up); loadavg $LOADAVG_START"
PG_OK=""
for round in $(seq "$ROUNDS"); do
    log "round $round/$ROUNDS"
    run_baseline
    run_marketplace sqlite ""
    if [[ -z "${BENCH_SKIP_PG:-}" ]]; then
        if psql "$PG_URL/postgres" -q -v ON_ERROR_STOP=1 \
            -c "CREATE DATABASE \"${PG_PREFIX}_$round\"" >/dev/null; then
            PG_DB="${PG_PREFIX}_$round"
            run_marketplace postgres "$PG_URL/$PG_DB"
            drop_pg_db
            PG_OK=1
        else
            log "warning: cannot create a PostgreSQL database at $PG_URL; no PostgreSQL row"
        fi
    fi
done
LOADAVG_END="$(cut -d' ' -f1-3 /proc/loadavg)"

# ---------- report ----------

median() { # column of a results file
    cut -d' ' -f"$2" "$WORK/$1.results" | sort -g |
        awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
maximum() { cut -d' ' -f"$2" "$WORK/$1.results" | sort -g | tail -n1; }
total() { cut -d' ' -f"$2" "$WORK/$1.results" | awk '{ s += $1 } END { print s }'; }

BASE_RPS="$(median baseline 1)"
row() { # key label
    local rps p99 pct idle after errors
    rps="$(median "$1" 1)"
    p99="$(awk -v u="$(median "$1" 3)" 'BEGIN { printf "%.2f", u / 1000 }')"
    pct="$(awk -v a="$rps" -v b="$BASE_RPS" 'BEGIN { printf "%.1f", 100 * a / b }')"
    idle="$(awk -v k="$(median "$1" 5)" 'BEGIN { printf "%.1f", k / 1024 }')"
    after="$(awk -v k="$(maximum "$1" 6)" 'BEGIN { printf "%.1f", k / 1024 }')"
    errors="$(total "$1" 4)"
    printf '| %s | %.0f | %s | %s %% | %s | %s | %s |\n' "$2" "$rps" "$p99" "$pct" "$idle" "$after" "$errors"
}

cpu="$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)"
mem="$(awk '/^MemTotal:/ { printf "%.0f", $2 / 1048576 }' /proc/meminfo)"
cat <<EOF

Benchmark of authenticated \`GET /v1/me\` (access token), $(date -u '+%Y-%m-%d %H:%M UTC'), $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')
Machine: $(nproc) cores ($cpu), $mem GiB RAM, $(uname -sr)
Load: $ROUNDS rounds, each target on a fresh server: wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency after a
$WARMUP warm-up, default worker threads (one per core), default pool size, RUST_LOG ${RUST_LOG:-unset (info)}.
Medians over the rounds; "RSS after load" is the largest seen; errors (socket errors, wrk's
2 s timeouts, non-2xx answers) are summed over the rounds.
NOTE: wrk runs on the same machine and shares its $(nproc) cores with the server (and, for
PostgreSQL, with the database server), so absolute numbers are lower and tails longer than
with a separate load machine; compare the rows. Load average before/after the run:
$LOADAVG_START / $LOADAVG_END (well above 0 means unrelated work also used the cores).
Idle RSS: VmRSS after start, one signup and one /v1/me, before any load.

| target | req/s | p99 ms | % of baseline req/s | idle RSS MiB | RSS after load MiB | errors |
| --- | ---: | ---: | ---: | ---: | ---: | ---: |
EOF
row baseline "baseline: actix-web, static JSON"
row sqlite "marketplace /v1/me, SQLite"
[[ -n "$PG_OK" ]] && row postgres "marketplace /v1/me, PostgreSQL"
exit 0
