#!/usr/bin/env bash
# Benchmark: a billing run (`marketplace billing run --period 2026-10`) over 10,000 active
# subscriptions and 10,000,000 usage events, on SQLite and PostgreSQL: wall time, peak
# resident memory (/usr/bin/time -v), against the month's aggregation as one plain SQL
# query over the events (SUM of quantity grouped by subscription and metric) in the same
# run, which the run itself no longer does (it reads the monthly sums kept as events are
# stored); and the same at half the data, to see how the time grows with it.
#
#   bench/billing_run.sh
#
# Needs: a Rust toolchain, sqlite3, psql, GNU time (installed with apt-get if missing), and
# for PostgreSQL a server at $BENCH_PG_URL whose user may create databases. About 4 GB of
# disk per backend.
#
# The data is generated straight into the database with SQL after `marketplace migrate`:
# 50 providers with 20 published listings each (one monthly USD offer per listing: 100.00
# a month, 12-month term, a graduated price for `queries` and a per-unit price for `rows`),
# customers holding 4 active subscriptions each (the rows `activate` writes: the `prices`
# snapshot, `billing_anchor` = term start between January and September 2026, current
# period, and a grant), and 1,000 usage events per subscription in October 2026, half for
# each metric. The half-size run has the first half of the customers, subscriptions and
# events; the full run adds the second half (the first run's invoices are deleted first,
# so each run starts with no drafts). The usage index is dropped during the bulk load and
# created again after it; PostgreSQL is then VACUUM ANALYZEd (autovacuum would analyze it)
# and CHECKPOINTed, SQLite's WAL checkpointed (SQLite is left without ANALYZE, as the server
# would have it), and the files synced, so no write-back of the load runs during the
# measurements.
#
# The plain query runs before the billing run (to warm the cache as the run's would be) and
# after it; the table shows the faster. The run itself does not aggregate the events: it
# reads the month's sums per subscription and metric that the server keeps as it stores
# events (`usage_monthly`; the load fills them from the loaded events in one statement). That
# read is timed too, as plain SQL ("run's usage query").
#
# Knobs: BENCH_CUSTOMERS (2500 in all: 4 subscriptions each), BENCH_EVENTS_PER_SUB (1000),
# BENCH_RUNS (3 billing runs per size, the median reported),
# BENCH_BACKENDS ("sqlite postgres"), and those of bench/lib.sh. A benchmark, not a test.

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CUSTOMERS="${BENCH_CUSTOMERS:-2500}"
RUNS="${BENCH_RUNS:-3}"
EVENTS_PER_SUB="${BENCH_EVENTS_PER_SUB:-1000}"
BACKENDS="${BENCH_BACKENDS:-sqlite postgres}"
PERIOD="2026-10"
HALF_CUSTOMERS=$((CUSTOMERS / 2))
HALF_SUBS=$((HALF_CUSTOMERS * 4))
HALF_EVENTS=$((HALF_SUBS * EVENTS_PER_SUB))
PROVIDERS=50
LISTINGS=1000
MONTH_SECONDS=$((31 * 86400))

[[ -x /usr/bin/time ]] || apt_install /usr/bin/time time
for tool in sqlite3 psql; do command -v "$tool" >/dev/null || die "$tool is required"; done
build_marketplace

USAGE_PRICES='[{"metric":"queries","model":"graduated","tiers":[{"up_to":10000,"unit_amount_decimal":"0.5","flat_amount":0},{"up_to":null,"unit_amount_decimal":"0.25","flat_amount":0}]},{"metric":"rows","model":"per_unit","unit_amount_decimal":"0.01"}]'
SNAPSHOT="{\"currency\":\"USD\",\"billing_interval\":\"monthly\",\"recurring_amount\":10000,\"term_months\":12,\"trial_days\":0,\"usage_prices\":$USAGE_PRICES,\"free_metrics\":[]}"

# ---------- SQL per backend ----------
# Expressions over an integer `n`, as each dialect spells them.

sqlite_series() { # from count -> a FROM clause giving n
    echo "(WITH RECURSIVE s(n) AS (SELECT $1 UNION ALL SELECT n + 1 FROM s WHERE n < $1 + $2 - 1) SELECT n FROM s)"
}
pg_series() { echo "(SELECT generate_series($1, $1 + $2 - 1) AS n)"; }

# The catalog part: providers, listings, offers (same for both halves).
base_sql() { # backend
    local pad3 pad4 ts0 series
    if [[ "$1" == sqlite ]]; then
        pad3="printf('%03d', n)"; pad4="printf('%04d', n)"; ts0="'2025-06-01 00:00:00'"
        series=sqlite_series
    else
        pad3="lpad(n::text, 3, '0')"; pad4="lpad(n::text, 4, '0')"; ts0="timestamp '2025-06-01 00:00:00'"
        series=pg_series
    fi
    local f="false" t="true"
    [[ "$1" == sqlite ]] && { f=0; t=1; }
    cat <<SQL
INSERT INTO organizations (id, name, kind, tax_rate_bps, fee_bps, created_at)
SELECT 'org_bp_' || $pad3, 'Provider ' || $pad3, 'customer', NULL, NULL, $ts0 FROM $($series 0 $PROVIDERS) AS x;
INSERT INTO listings (id, organization_id, title, summary, description, categories, tags,
    visibility, state, search_document, created_at, updated_at, published_at, archived_at)
SELECT 'lst_b_' || $pad4, 'org_bp_' || $(pad_expr "$1" "n % $PROVIDERS" 3), 'Listing ' || $pad4,
    'A listing', '', '[]', '[]', 'public', 'published', 'Listing ' || $pad4, $ts0, $ts0, $ts0, NULL
FROM $($series 0 $LISTINGS) AS x;
INSERT INTO offers (id, listing_id, organization_id, name, currency, billing_interval,
    recurring_amount, term_months, usage_prices, free_metrics, trial_days, requires_approval,
    auto_renew_default, private, state, created_at, archived_at)
SELECT 'ofr_b_' || $pad4, 'lst_b_' || $pad4, 'org_bp_' || $(pad_expr "$1" "n % $PROVIDERS" 3),
    'Plan ' || $pad4, 'USD', 'monthly', 10000, 12, '$USAGE_PRICES', '[]', 0, $f, $t, $f,
    'active', $ts0, NULL
FROM $($series 0 $LISTINGS) AS x;
SQL
}

pad_expr() { # backend expr width
    if [[ "$1" == sqlite ]]; then echo "printf('%0$3d', $2)"; else echo "lpad(($2)::text, $3, '0')"; fi
}

# Customers [c0, c0+count), their 4 subscriptions each (subscription g = 4c + k takes offer
# g % 1000, so a customer's four offers differ), their grants.
customers_sql() { # backend c0 count
    local b="$1" c0="$2" count="$3" series anchor add12 t f cur_start cur_end
    local g0=$((c0 * 4)) subs=$((count * 4))
    if [[ "$b" == sqlite ]]; then
        series="$(sqlite_series "$g0" "$subs")"
        # Anchors from 2026-01-01 over 270 days, at a varying hour.
        anchor="strftime('%Y-%m-%d %H:%M:%S', 1767225600 + (n % 270) * 86400 + (n % 24) * 3600, 'unixepoch')"
        add12="strftime('%Y-%m-%d %H:%M:%S', 1767225600 + (n % 270) * 86400 + (n % 24) * 3600, 'unixepoch', '+12 months')"
        cur_start="'2026-11-01 00:00:00'"; cur_end="'2026-12-01 00:00:00'"; t=1
    else
        series="$(pg_series "$g0" "$subs")"
        anchor="(timestamp '2026-01-01' + (n % 270) * interval '1 day' + (n % 24) * interval '1 hour')"
        add12="($anchor + interval '12 months')"
        cur_start="timestamp '2026-11-01'"; cur_end="timestamp '2026-12-01'"; t=true
    fi
    cat <<SQL
INSERT INTO organizations (id, name, kind, tax_rate_bps, fee_bps, created_at)
SELECT 'org_bc_' || $(pad_expr "$b" n 5), 'Customer ' || $(pad_expr "$b" n 5), 'customer', NULL, NULL, $cur_start
FROM $(if [[ "$b" == sqlite ]]; then sqlite_series "$c0" "$count"; else pg_series "$c0" "$count"; fi) AS x;
INSERT INTO subscriptions (id, organization_id, provider_organization_id, listing_id, offer_id,
    status, message, decision_reason, prices, trial_end, term_start, term_end,
    current_period_start, current_period_end, auto_renew, cancel_at, request_expires_at,
    created_at, updated_at, ended_at, billing_anchor, term_end_reminded_at)
SELECT 'sub_b_' || $(pad_expr "$b" n 5), 'org_bc_' || $(pad_expr "$b" "n / 4" 5),
    'org_bp_' || $(pad_expr "$b" "n % $PROVIDERS" 3), 'lst_b_' || $(pad_expr "$b" "n % $LISTINGS" 4),
    'ofr_b_' || $(pad_expr "$b" "n % $LISTINGS" 4), 'active', '', NULL, '$SNAPSHOT', NULL,
    $anchor, $add12, $cur_start, $cur_end, $t, NULL, NULL, $anchor, $anchor, NULL, $anchor, NULL
FROM $series AS x;
INSERT INTO grants (id, organization_id, subscription_id, listing_id, valid_from, valid_until,
    revoked_at, suspended_at, created_at)
SELECT 'grt_b_' || substr(id, 7), organization_id, id, listing_id, term_start, term_end, NULL, NULL, created_at
FROM subscriptions WHERE id >= 'sub_b_$(printf '%05d' "$g0")' AND id < 'sub_b_$(printf '%05d' $((g0 + subs)))';
SQL
}

# Events [e0, e0+count) for subscriptions [g0, g0+subs): event n goes to subscription
# g0 + (n - e0) % subs, metric alternating per round over the subscriptions, spread evenly
# over October 2026 (whole seconds).
events_sql() { # backend e0 count g0 subs
    local b="$1" e0="$2" count="$3" g0="$4" subs="$5" at day
    local g="($g0 + (n - $e0) % $subs)"
    local metric="CASE WHEN ((n - $e0) / $subs) % 2 = 0 THEN 'queries' ELSE 'rows' END"
    if [[ "$b" == sqlite ]]; then
        at="strftime('%Y-%m-%d %H:%M:%S', 1790812800 + (n - $e0) * $MONTH_SECONDS / $count, 'unixepoch')"
        cat <<SQL
INSERT INTO usage_events (organization_id, id, subscription_id, metric, quantity, occurred_at, day, received_at)
SELECT 'org_bp_' || printf('%03d', $g % $PROVIDERS), 'ev' || n, 'sub_b_' || printf('%05d', $g),
    $metric, 1 + (n * 7919) % 100, at, substr(at, 1, 10), at
FROM (SELECT n, $at AS at FROM $(sqlite_series "$e0" "$count"));
SQL
    else
        at="(timestamp '2026-10-01' + ((n - $e0)::bigint * $MONTH_SECONDS / $count) * interval '1 second')"
        cat <<SQL
INSERT INTO usage_events (organization_id, id, subscription_id, metric, quantity, occurred_at, day, received_at)
SELECT 'org_bp_' || lpad(($g % $PROVIDERS)::text, 3, '0'), 'ev' || n, 'sub_b_' || lpad($g::text, 5, '0'),
    $metric, 1 + (n::bigint * 7919) % 100, at, to_char(at, 'YYYY-MM-DD'), at
FROM (SELECT n, $at AS at FROM $(pg_series "$e0" "$count") AS s) AS x;
SQL
    fi
}

# The monthly sums the server keeps as it stores events (`usage_monthly`, written by
# schema::usage::insert_new in each batch's transaction), for the loaded subscriptions
# [g0, g0+subs), in one statement here; what keeping them costs ingestion is measured by
# bench/usage_ingest.sh.
monthly_sums_sql() { # g0 subs
    cat <<SQL
INSERT INTO usage_monthly (month, subscription_id, metric, quantity)
SELECT substr(day, 1, 7), subscription_id, metric, SUM(quantity) FROM usage_events
WHERE subscription_id >= 'sub_b_$(printf '%05d' "$1")' AND subscription_id < 'sub_b_$(printf '%05d' $(($1 + $2)))'
GROUP BY substr(day, 1, 7), subscription_id, metric;
SQL
}

load_half() { # backend half(0|1)
    local b="$1" h="$2" prelude="" post=""
    if [[ "$b" == sqlite ]]; then
        prelude="PRAGMA synchronous = OFF;"
        post="PRAGMA wal_checkpoint(TRUNCATE);"
    else
        post="VACUUM ANALYZE; CHECKPOINT;"
    fi
    {
        echo "$prelude"
        echo "BEGIN;"
        [[ "$h" == 0 ]] && base_sql "$b"
        customers_sql "$b" $((h * HALF_CUSTOMERS)) "$HALF_CUSTOMERS"
        echo "DROP INDEX usage_events_subscription;"
        events_sql "$b" $((h * HALF_EVENTS)) "$HALF_EVENTS" $((h * HALF_SUBS)) "$HALF_SUBS"
        echo "CREATE INDEX usage_events_subscription ON usage_events (subscription_id, metric, day, occurred_at, quantity);"
        monthly_sums_sql $((h * HALF_SUBS)) "$HALF_SUBS"
        echo "COMMIT;"
        echo "$post"
    } >"$WORK/load-$b-$h.sql"
    db_sql <"$WORK/load-$b-$h.sql" >/dev/null
    # Flush what the load left dirty, so no write-back of it runs during the measurements.
    sync
}

PLAIN_SQL="SELECT subscription_id, metric, SUM(quantity) FROM usage_events
WHERE occurred_at >= '2026-10-01 00:00:00' AND occurred_at < '2026-11-01 00:00:00'
GROUP BY subscription_id, metric"
# What the run reads for subscriptions billed since before the month (all of them here):
# the month's sums, kept as events are stored, as diesel writes the query.
RUN_SQL="SELECT usage_monthly.subscription_id, usage_monthly.metric, usage_monthly.quantity
FROM usage_monthly WHERE usage_monthly.month = '2026-10'"

# Seconds a query takes (result rows discarded); checks it returns one row per subscription
# and metric.
time_query() { # sql expected-rows
    local t0 rows
    t0="$(date +%s.%N)"
    case "$DB_URL" in
        sqlite://*) rows="$(sqlite3 "${DB_URL#sqlite://}" "$1" | wc -l)" ;;
        *) rows="$(psql "$DB_URL" -X -qAt -c "$1" | wc -l)" ;;
    esac
    calc '%.3f' "$(date +%s.%N) - $t0"
    [[ "$rows" == "$2" ]] || log "warning: the query returned $rows rows, expected $2"
}

min() { awk -v a="$1" -v b="$2" 'BEGIN { print (a < b) ? a : b }'; }

measure() { # backend size-label subscriptions events
    local b="$1" label="$2" subs="$3" events="$4" p1 p2 r1 r2 out wall rss created failures
    log "$b $label: plain query (warm-up)"
    p1="$(time_query "$PLAIN_SQL" $((subs * 2)))"
    r1="$(time_query "$RUN_SQL" $((subs * 2)))"
    # The run is repeated (its drafts removed before each repeat, so each starts with none);
    # the median wall time and the largest peak RSS are reported.
    local i walls=() rsses=()
    for i in $(seq "$RUNS"); do
        [[ "$i" == 1 ]] || reset_invoices
        log "$b $label: billing run --period $PERIOD ($i of $RUNS)"
        /usr/bin/time -v -o "$WORK/time-$b-$label.txt" \
            env MARKETPLACE_DATABASE_URL="$DB_URL" MARKETPLACE_DATA_DIR="$DATA_DIR" RUST_LOG=warn \
            "$MARKETPLACE" billing run --period "$PERIOD" >"$WORK/run-$b-$label.json" 2>"$WORK/run-$b-$label.err" ||
            { cat "$WORK/run-$b-$label.err" >&2; die "the billing run failed"; }
        walls+=("$(awk -F': ' '/Elapsed \(wall clock\)/ { n = split($2, p, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + p[i]; print s }' "$WORK/time-$b-$label.txt")")
        rsses+=("$(awk -F': ' '/Maximum resident set size/ { printf "%.0f", $2 / 1024 }' "$WORK/time-$b-$label.txt")")
    done
    wall="$(printf '%s\n' "${walls[@]}" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }')"
    rss="$(printf '%s\n' "${rsses[@]}" | sort -g | tail -1)"
    log "$b $label: run wall times ${walls[*]} s"
    created="$(jq .invoices_created "$WORK/run-$b-$label.json")"
    failures="$(jq '.failures | length' "$WORK/run-$b-$label.json")"
    p2="$(time_query "$PLAIN_SQL" $((subs * 2)))"
    r2="$(time_query "$RUN_SQL" $((subs * 2)))"
    local lines
    lines="$(db_value 'SELECT count(*) FROM invoice_lines')"
    echo "$b $label $subs $events $wall $rss $(min "$p1" "$p2") $(min "$r1" "$r2") $created $lines $failures $(cut -d' ' -f1 /proc/loadavg)" >>"$WORK/results"
    log "$b $label: run ${wall} s, peak RSS ${rss} MiB, plain query $(min "$p1" "$p2") s," \
        "run's usage query as SQL $(min "$r1" "$r2") s; $created invoices, $lines lines, $failures failures"
}

# Removes the run's drafts, and on PostgreSQL vacuums their tables, so a repeated run starts
# as the first did (not on tables and indexes holding the dead rows of the last run).
reset_invoices() {
    local vacuum=""
    [[ "$DB_URL" == sqlite://* ]] || vacuum="VACUUM invoice_lines, invoices, billing_runs;"
    db_sql <<SQL >/dev/null
DELETE FROM invoice_lines; DELETE FROM invoices; DELETE FROM billing_runs;
$vacuum
SQL
}

run_backend() { # backend
    local b="$1" t0
    new_database "$b" "billing"
    mkt migrate >/dev/null
    t0="$(date +%s.%N)"
    log "$b: loading half the data ($HALF_SUBS subscriptions, $HALF_EVENTS events)"
    load_half "$b" 0
    log "$b: loaded in $(calc '%.0f' "$(date +%s.%N) - $t0") s"
    measure "$b" half "$HALF_SUBS" "$HALF_EVENTS"
    reset_invoices
    t0="$(date +%s.%N)"
    log "$b: loading the other half"
    load_half "$b" 1
    log "$b: loaded in $(calc '%.0f' "$(date +%s.%N) - $t0") s;" \
        "$(db_value 'SELECT count(*) FROM subscriptions') subscriptions," \
        "$(db_value 'SELECT count(*) FROM usage_events') events"
    measure "$b" full $((HALF_SUBS * 2)) $((HALF_EVENTS * 2))
    if [[ "$b" == postgres ]]; then PG_OK=1; fi
    # Free the disk before the next backend.
    if [[ -z "${BENCH_KEEP:-}" ]]; then
        if [[ "$b" == sqlite ]]; then rm -rf "$DATA_DIR"; else pg_drop_last; fi
    fi
}

LOAD_START="$(loadavg)"
log "billing run: $((HALF_SUBS * 2)) subscriptions, $((HALF_EVENTS * 2)) events; loadavg $LOAD_START"
for b in $BACKENDS; do
    if [[ "$b" == postgres ]] && ! pg_available; then
        log "warning: PostgreSQL not reachable at $PG_URL; no PostgreSQL rows"
        continue
    fi
    run_backend "$b"
done
LOAD_END="$(loadavg)"

# ---------- report ----------

report_header "Billing run (marketplace billing run --period $PERIOD)"
cat <<EOF
Load average before/after: $LOAD_START / $LOAD_END (1-min load average after each run in the last column).
"plain query": SUM(quantity) GROUP BY subscription, metric over the month, as one SQL statement;
"run's usage query": what \`usage_totals\` reads for subscriptions billed since before the month (their sums in \`usage_monthly\`, kept as events are stored).

| backend | data | subscriptions | usage events | run wall s (median of $RUNS) | peak RSS MiB | plain query s | run / plain | run's usage query s | invoices | lines | failures | load |
| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |
EOF
while read -r b label subs events wall rss plain runq created lines failures load; do
    printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$b" "$label" "$subs" "$events" \
        "$wall" "$rss" "$plain" "$(calc '%.1f×' "$wall / $plain")" "$runq" "$created" "$lines" "$failures" "$load"
done <"$WORK/results"
echo
for b in $BACKENDS; do
    half="$(awk -v b="$b" '$1 == b && $2 == "half" { print $5 }' "$WORK/results")"
    full="$(awk -v b="$b" '$1 == b && $2 == "full" { print $5 }' "$WORK/results")"
    [[ -n "$half" && -n "$full" ]] && echo "$b: full / half run time = $(calc '%.2f' "$full / $half")."
done
echo "Targets: run <= 60 s, peak RSS <= 512 MiB, run <= 3x the plain query over the events, full/half <= 2."
exit 0
