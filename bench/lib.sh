# Shared helpers for the benchmark scripts under bench/ (sourced, not run).
#
# Gives: a temporary work directory removed at exit, the release binary built (with
# retries) and copied there (so a rebuild by someone else mid-run cannot swap it), free
# ports, marketplace servers started on a data directory or a fresh PostgreSQL database
# and stopped at exit, databases dropped at exit, small API helpers (curl + jq), and the
# machine/load description for the report.
#
# Knobs (environment): BENCH_PG_URL (postgres://postgres@127.0.0.1:5432), BENCH_SKIP_PG=1,
# BENCH_SKIP_BUILD=1, BENCH_KEEP=1 (keep the work directory and databases, for profiling).

set -euo pipefail

BENCH_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PG_URL="${BENCH_PG_URL:-postgres://postgres@127.0.0.1:5432}"
PG_PREFIX="marketplace_bench_$$_$(date +%s)"
PASSWORD="benchmark password, long enough"

# Settings from the caller's environment must not change what is measured.
while IFS='=' read -r _name _; do
    case "$_name" in MARKETPLACE_*) unset "$_name" ;; esac
done < <(env)

WORK="$(mktemp -d -t marketplace-bench.XXXXXX)"
SERVER_PIDS=()
EXTRA_PIDS=()
PG_DBS=()
PG_OK=""

log() { printf '[%s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

stop_pid() { # pid
    local pid="$1"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

stop_servers() {
    local pid
    for pid in "${SERVER_PIDS[@]}" "${EXTRA_PIDS[@]}"; do stop_pid "$pid"; done
    SERVER_PIDS=()
    EXTRA_PIDS=()
}

drop_pg_db() { # name
    psql "$PG_URL/postgres" -q -v ON_ERROR_STOP=1 \
        -c "DROP DATABASE IF EXISTS \"$1\" WITH (FORCE)" >/dev/null 2>&1 ||
        log "warning: could not drop database $1"
}

bench_cleanup() {
    stop_servers
    if [[ -n "${BENCH_KEEP:-}" ]]; then
        log "kept $WORK and databases: ${PG_DBS[*]:-none}"
        return
    fi
    local db
    for db in "${PG_DBS[@]}"; do drop_pg_db "$db"; done
    rm -rf "$WORK"
}
trap bench_cleanup EXIT
trap 'exit 130' INT TERM

# ---------- tools and binaries ----------

apt_install() { # command package
    command -v "$1" >/dev/null && return
    log "installing $2 (apt-get)"
    local sudo=""
    [[ "$(id -u)" -ne 0 ]] && sudo="sudo"
    $sudo apt-get install -y "$2" >/dev/null 2>&1 ||
        { $sudo apt-get update >/dev/null && $sudo apt-get install -y "$2" >/dev/null; }
}

# Builds the release binary (retrying: other people's half-done edits can break the build
# for a while) and copies it into the work directory.
build_marketplace() {
    if [[ -z "${BENCH_SKIP_BUILD:-}" ]]; then
        local attempt
        for attempt in 1 2 3 4 5; do
            log "building the release binary (attempt $attempt)"
            if (cd "$BENCH_ROOT" && cargo build --release --bin marketplace) >"$WORK/build.log" 2>&1; then
                break
            fi
            [[ "$attempt" -eq 5 ]] && { tail -n 30 "$WORK/build.log" >&2; die "the build failed"; }
            log "build failed; retrying in 60 s"
            sleep 60
        done
    fi
    cp "${CARGO_TARGET_DIR:-$BENCH_ROOT/target}/release/marketplace" "$WORK/marketplace"
    MARKETPLACE="$WORK/marketplace"
    BUILD_REV="$(git -C "$BENCH_ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')"
    if [[ -n "$(git -C "$BENCH_ROOT" status --porcelain -- api billing schema migrations 2>/dev/null)" ]]; then
        BUILD_REV="$BUILD_REV + uncommitted changes"
    fi
}

# ---------- ports, servers, databases ----------

free_port() {
    local port
    for _ in $(seq 100); do
        port=$((20000 + RANDOM % 40000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return
        fi
    done
    die "no free port found"
}

wait_http() { # url pid logfile
    for _ in $(seq 600); do
        if ! kill -0 "$2" 2>/dev/null; then
            tail -n 30 "$3" >&2
            die "the server exited (log above)"
        fi
        curl -fsS -o /dev/null "$1" 2>/dev/null && return
        sleep 0.1
    done
    die "no answer from $1"
}

# A fresh PostgreSQL database, dropped at exit; sets PG_NEW_URL (call it directly, not in
# a command substitution, so the database is remembered for the clean-up).
pg_create() { # suffix
    local name="${PG_PREFIX}_$1"
    psql "$PG_URL/postgres" -q -v ON_ERROR_STOP=1 -c "CREATE DATABASE \"$name\"" >/dev/null ||
        return 1
    PG_DBS+=("$name")
    PG_NEW_URL="$PG_URL/$name"
}

# Drops the database a run created last (before the exit, to free its disk early).
pg_drop_last() {
    [[ "${#PG_DBS[@]}" -gt 0 ]] || return 0
    drop_pg_db "${PG_DBS[-1]}"
    unset 'PG_DBS[-1]'
}

pg_available() {
    [[ -z "${BENCH_SKIP_PG:-}" ]] && psql "$PG_URL/postgres" -qAtc 'select 1' >/dev/null 2>&1
}

# The database URL of a backend for a run: `sqlite` (a file in a new data dir) or
# `postgres` (a fresh database). Sets DB_URL and DATA_DIR.
new_database() { # backend tag
    DATA_DIR="$WORK/data-$2"
    mkdir -p "$DATA_DIR"
    case "$1" in
        sqlite) DB_URL="sqlite://$DATA_DIR/marketplace.sqlite3" ;;
        postgres)
            pg_create "$2" || die "cannot create a PostgreSQL database at $PG_URL"
            DB_URL="$PG_NEW_URL"
            ;;
        *) die "unknown backend $1" ;;
    esac
}

# Runs the marketplace CLI against DB_URL / DATA_DIR.
mkt() {
    MARKETPLACE_DATABASE_URL="$DB_URL" MARKETPLACE_DATA_DIR="$DATA_DIR" "$MARKETPLACE" "$@"
}

# Starts `marketplace serve` on DB_URL / DATA_DIR and a free port; sets BASE and SERVER_PID.
# Extra environment as NAME=VALUE arguments.
start_marketplace() {
    local port
    port="$(free_port)"
    BASE="http://127.0.0.1:$port"
    SERVER_LOG="$WORK/server-$port.log"
    (
        cd "$WORK"
        export MARKETPLACE_AUTH_RATE_LIMIT=1000000 MARKETPLACE_DATABASE_URL="$DB_URL"
        export MARKETPLACE_OUTBOX_POLL_MS=0 MARKETPLACE_JOBS_INTERVAL=0
        for kv in "$@"; do export "${kv?}"; done
        exec "$MARKETPLACE" serve --listen "127.0.0.1:$port" --data-dir "$DATA_DIR"
    ) >"$SERVER_LOG" 2>&1 &
    SERVER_PID=$!
    SERVER_PIDS+=("$SERVER_PID")
    wait_http "$BASE/healthz" "$SERVER_PID" "$SERVER_LOG"
}

stop_marketplace() {
    stop_pid "$SERVER_PID"
    local kept=() pid
    for pid in "${SERVER_PIDS[@]}"; do [[ "$pid" != "$SERVER_PID" ]] && kept+=("$pid"); done
    SERVER_PIDS=("${kept[@]}")
}

# SQL straight into the run's database (stdin), stopping at the first error.
db_sql() {
    case "$DB_URL" in
        sqlite://*) sqlite3 -bail -cmd 'PRAGMA busy_timeout = 10000' "${DB_URL#sqlite://}" ;;
        *) psql "$DB_URL" -q -X -v ON_ERROR_STOP=1 ;;
    esac
}

# One value from a query.
db_value() { # sql
    case "$DB_URL" in
        sqlite://*) sqlite3 "${DB_URL#sqlite://}" "$1" ;;
        *) psql "$DB_URL" -X -qAt -c "$1" ;;
    esac
}

# ---------- the API ----------

# api METHOD PATH [TOKEN] [JSON]: prints the body; dies on a non-2xx answer.
api() {
    local method="$1" path="$2" token="${3:-}" body="${4:-}" out status
    local args=(-sS --max-time 120 -X "$method" -o "$WORK/api.out" -w '%{http_code}')
    [[ -n "$token" ]] && args+=(-H "Authorization: Bearer $token")
    [[ -n "$body" ]] && args+=(-H 'Content-Type: application/json' --data-binary "$body")
    status="$(curl "${args[@]}" "$BASE$path")"
    out="$(cat "$WORK/api.out")"
    [[ "$status" == 2* ]] || die "$method $path: $status $out"
    printf '%s' "$out"
}

# Signs up an organization and its admin; sets TOKEN and ORG_ID.
signup() { # label
    local out
    out="$(api POST /v1/auth/signup "" "$(jq -nc --arg e "bench-$RANDOM$RANDOM$RANDOM@example.com" \
        --arg p "$PASSWORD" --arg o "$1" \
        '{email: $e, password: $p, name: "Bench User", organization_name: $o}')")"
    TOKEN="$(jq -r .access_token <<<"$out")"
    ORG_ID="$(jq -r .organization.id <<<"$out")"
}

# ---------- the report ----------

loadavg() { cut -d' ' -f1-3 /proc/loadavg; }

machine_line() {
    local cpu mem
    cpu="$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)"
    mem="$(awk '/^MemTotal:/ { printf "%.0f", $2 / 1048576 }' /proc/meminfo)"
    echo "$(nproc) cores ($cpu), $mem GiB RAM, $(uname -sr)"
}

pg_version() { psql "$PG_URL/postgres" -qAtc 'show server_version' 2>/dev/null | cut -d' ' -f1; }

report_header() { # title
    cat <<EOF

$1, $(date -u '+%Y-%m-%d %H:%M UTC'), $BUILD_REV
Machine: $(machine_line); SQLite $(sqlite3 --version | cut -d' ' -f1) (CLI; the server's is bundled), PostgreSQL $(pg_version || echo '-') on the same machine.
EOF
}

# Arithmetic helpers on decimals.
calc() { awk "BEGIN { printf \"$1\", $2 }"; }
