#!/usr/bin/env bash
# Benchmark: usage-event ingestion over HTTP (`POST /v1/usage-events`, batches of 1,000,
# 8 concurrent clients, 10 % duplicates) on SQLite and PostgreSQL, against the same rows
# inserted straight into the same database in the same run (the limit).
#
#   bench/usage_ingest.sh
#
# Needs: a Rust toolchain, python3, sqlite3, psql, curl, jq, and for PostgreSQL a server at
# $BENCH_PG_URL whose user may create databases.
#
# Per backend: a fresh database and server; through the API a provider publishes a listing
# with an offer pricing the metric `queries`, and BENCH_SUBSCRIBERS buyers subscribe to it
# (active at once). bench/usage_load.py then prepares, per client, BENCH_BATCHES batches of
# 1,000 events spread over the subscriptions (10 % of each batch repeat events of the
# client's previous batch, with the same content) as request bodies, and the same events as
# SQL: per batch BEGIN; one multi-row INSERT ... ON CONFLICT (organization_id, id) DO
# NOTHING; COMMIT (with another organization_id, so the two sets never collide).
#
# Measured, in this order, on the same database: the direct insert with 8 writers (one
# sqlite3 or psql process per client, at once) and with 1 writer (all batches in one
# session); then the HTTP ingestion (8 client processes, one keep-alive connection each, at
# once). The limit is the faster direct insert. SQLite's direct writers use the server's
# settings (WAL, synchronous = NORMAL, a busy timeout); every batch is committed (durable)
# before the next, as the API acknowledges a batch only once it is.
#
# Knobs: BENCH_BATCHES (per client, 125: 1,000,000 events), BENCH_CLIENTS (8), BENCH_SUBSCRIBERS (16),
# BENCH_BACKENDS ("sqlite postgres"), BENCH_PROFILE=1 (record `perf` of the server during
# the HTTP run into the work directory; use with BENCH_KEEP=1), and those of bench/lib.sh.
# A benchmark, not a test: exits 0 whatever the numbers.

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

BATCHES="${BENCH_BATCHES:-125}"
CLIENTS="${BENCH_CLIENTS:-8}"
SUBSCRIBERS="${BENCH_SUBSCRIBERS:-16}"
BACKENDS="${BENCH_BACKENDS:-sqlite postgres}"
LOAD="$BENCH_ROOT/bench/usage_load.py"

for tool in python3 sqlite3 psql curl jq; do command -v "$tool" >/dev/null || die "$tool is required"; done
build_marketplace

# Provider, listing, offer, subscribers; sets PROVIDER_TOKEN, PROVIDER_ORG, SUBSCRIPTIONS.
setup_market() {
    local listing offer i sub
    signup "Bench Provider"
    PROVIDER_TOKEN="$TOKEN" PROVIDER_ORG="$ORG_ID"
    listing="$(api POST /v1/listings "$PROVIDER_TOKEN" \
        '{"title":"Usage benchmark","summary":"Metered API","visibility":"public"}' | jq -r .id)"
    offer="$(api POST "/v1/listings/$listing/offers" "$PROVIDER_TOKEN" \
        '{"name":"Metered","currency":"USD","billing_interval":"monthly","recurring_amount":1000,"term_months":12,"usage_prices":[{"metric":"queries","model":"per_unit","unit_amount_decimal":"0.05"}]}' |
        jq -r .id)"
    api POST "/v1/listings/$listing/publish" "$PROVIDER_TOKEN" >/dev/null
    SUBSCRIPTIONS=""
    for i in $(seq "$SUBSCRIBERS"); do
        signup "Bench Buyer $i"
        sub="$(api POST /v1/subscriptions "$TOKEN" "{\"offer_id\":\"$offer\"}")"
        [[ "$(jq -r .status <<<"$sub")" == active ]] || die "subscription not active: $sub"
        SUBSCRIPTIONS="${SUBSCRIPTIONS:+$SUBSCRIPTIONS,}$(jq -r .id <<<"$sub")"
    done
}

json_val() { jq -r ".$2" <<<"$1"; }

run_backend() { # backend
    local b="$1" prep d8 d1 http perf_pid="" direct_org="org_direct_insert_$b" stored
    new_database "$b" "usage"
    # Tokens must outlive the run.
    start_marketplace MARKETPLACE_ACCESS_TOKEN_TTL=3600
    setup_market
    log "$b: $SUBSCRIBERS subscriptions; preparing $CLIENTS x $BATCHES batches"
    rm -rf "$WORK/load-$b"
    prep="$(python3 "$LOAD" prepare "$WORK/load-$b" --subscriptions "$SUBSCRIPTIONS" \
        --clients "$CLIENTS" --batches "$BATCHES" --direct-org "$direct_org")"
    EVENTS="$(json_val "$prep" events)"
    local target=(--postgres "$DB_URL")
    [[ "$b" == sqlite ]] && target=(--sqlite "${DB_URL#sqlite://}")

    log "$b: direct insert, $CLIENTS writers"
    d8="$(python3 "$LOAD" direct "$WORK/load-$b" --clients "$CLIENTS" --writers "$CLIENTS" "${target[@]}")"
    [[ "$(json_val "$d8" errors)" == 0 ]] || die "direct insert failed: $(json_val "$d8" first_error)"
    stored="$(db_value "SELECT count(*) FROM usage_events WHERE organization_id = '$direct_org'")"
    db_sql <<<"DELETE FROM usage_events WHERE organization_id = '$direct_org';" >/dev/null
    log "$b: direct insert, 1 writer"
    d1="$(python3 "$LOAD" direct "$WORK/load-$b" --clients "$CLIENTS" --writers 1 "${target[@]}")"
    [[ "$(json_val "$d1" errors)" == 0 ]] || die "direct insert failed: $(json_val "$d1" first_error)"
    # Every phase starts from the same table: the HTTP run does not insert on top of the
    # direct insert's rows.
    db_sql <<<"DELETE FROM usage_events WHERE organization_id = '$direct_org';" >/dev/null

    log "$b: HTTP, $CLIENTS clients"
    if [[ -n "${BENCH_PROFILE:-}" ]]; then
        perf record -F 499 -g -p "$SERVER_PID" -o "$WORK/perf-usage-$b.data" >/dev/null 2>&1 &
        perf_pid=$!
        EXTRA_PIDS+=("$perf_pid")
    fi
    http="$(python3 "$LOAD" send "$WORK/load-$b" --url "$BASE" --token "$PROVIDER_TOKEN" --clients "$CLIENTS")"
    if [[ -n "$perf_pid" ]]; then kill -INT "$perf_pid"; wait "$perf_pid" 2>/dev/null || true; fi
    [[ "$(json_val "$http" errors)" == 0 ]] || log "warning: $(json_val "$http" errors) failed requests: $(json_val "$http" first_error)"
    local http_stored
    http_stored="$(db_value "SELECT count(*) FROM usage_events WHERE organization_id = '$PROVIDER_ORG'")"
    [[ "$http_stored" == "$stored" ]] || log "warning: HTTP stored $http_stored events, direct $stored"
    echo "$b $EVENTS $(json_val "$http" wall_s) $(json_val "$http" accepted) $(json_val "$http" duplicates) $(json_val "$http" errors) $(json_val "$http" p50_ms) $(json_val "$http" p95_ms) $(json_val "$d8" wall_s) $(json_val "$d1" wall_s) $stored $(cut -d' ' -f1 /proc/loadavg)" >>"$WORK/results"
    log "$b: HTTP $(calc '%.0f' "$EVENTS / $(json_val "$http" wall_s)") events/s" \
        "(accepted $(json_val "$http" accepted), duplicates $(json_val "$http" duplicates)," \
        "p50 $(calc '%.0f' "$(json_val "$http" p50_ms)") ms per batch);" \
        "direct: 8 writers $(calc '%.0f' "$EVENTS / $(json_val "$d8" wall_s)") events/s," \
        "1 writer $(calc '%.0f' "$EVENTS / $(json_val "$d1" wall_s)") events/s"
    stop_marketplace
    if [[ "$b" == postgres ]]; then PG_OK=1; fi
}

LOAD_START="$(loadavg)"
log "usage ingestion: $CLIENTS clients x $BATCHES batches of 1000; loadavg $LOAD_START"
for b in $BACKENDS; do
    if [[ "$b" == postgres ]] && ! pg_available; then
        log "warning: PostgreSQL not reachable at $PG_URL; no PostgreSQL rows"
        continue
    fi
    run_backend "$b"
done
LOAD_END="$(loadavg)"

# ---------- report ----------

report_header "Usage-event ingestion (POST /v1/usage-events)"
cat <<EOF
Load: $CLIENTS clients x $BATCHES batches of 1,000 events (10 % duplicates) over $SUBSCRIBERS subscriptions, per backend;
events/s counts every event sent (duplicates too) over the wall time. "direct" = the same rows as
multi-row INSERT ... ON CONFLICT DO NOTHING, one transaction per batch, through sqlite3/psql, with
8 writers at once or 1; the limit is the faster. Load average before/after: $LOAD_START / $LOAD_END.

| backend | events | HTTP events/s | p50 / p95 ms per batch | direct 8 writers events/s | direct 1 writer events/s | HTTP % of limit | errors | load |
| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |
EOF
while read -r b events wall accepted dups errors p50 p95 d8 d1 stored load; do
    rate="$(calc '%.0f' "$events / $wall")"
    r8="$(calc '%.0f' "$events / $d8")"
    r1="$(calc '%.0f' "$events / $d1")"
    limit="$(awk -v a="$r8" -v b="$r1" 'BEGIN { print (a > b) ? a : b }')"
    printf '| %s | %s | %s | %s / %s | %s | %s | %s %% | %s | %s |\n' "$b" "$events" "$rate" \
        "$(calc '%.0f' "$p50")" "$(calc '%.0f' "$p95")" "$r8" "$r1" "$(calc '%.1f' "100 * $rate / $limit")" "$errors" "$load"
done <"$WORK/results"
echo
echo "Targets: >= 50,000 events/s on SQLite, >= 20,000 on PostgreSQL, and >= 50 % of the direct-insert rate."
exit 0
