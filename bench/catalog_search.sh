#!/usr/bin/env bash
# Benchmark: catalog search (`GET /v1/listings`) over 100,000 published public listings, on
# SQLite and on PostgreSQL: p50 and p95 latency at 32 concurrent clients.
#
#   bench/catalog_search.sh
#
# Needs: a Rust toolchain, python3, sqlite3, psql, curl, jq, wrk (installed with apt-get if
# missing), and for PostgreSQL a server at $BENCH_PG_URL whose user may create databases.
#
# The listings (with their category/tag rows and one offer each, 100 providers) are generated
# by bench/gen_catalog.py (words drawn by a Zipf law from 5,000, so some query words match
# nearly every listing and most a few hundred) and written straight into the database after
# `marketplace migrate`: on SQLite the FTS5 triggers fill `listings_fts`, on PostgreSQL
# `search_vector` is a generated column. PostgreSQL is then ANALYZEd (autovacuum would do it);
# SQLite is left as the server would have it (no ANALYZE).
#
# Each variant is a wrk run (-t2 -c32, after a warm-up) whose Lua script (bench/rotate.lua)
# rotates over many query paths:
#   mixed     q=<one word or two> over all frequencies (default sort: relevance)
#   common    q=<one of the 10 most frequent words> (relevance over most of the catalog)
#   category  q=<word>&category=<category>
#   newest    q=<word>&sort=newest
#   tag_title tag=<tag>&sort=title (no search)
#   browse    no search: the catalog's first page, newest or by title, or one category
#   zipf      20,000 searches drawn by the Zipf law of the listings' words (one word or two,
#             a quarter with a category, a fifth sorted by date, a tenth by title): a few
#             recur often, most are rare, as in a search log
#   mixed, signed in   the mixed paths with a user's access token (the visibility rule for a
#             signed-in reader adds the listings shared with its organization)
#
# Each variant runs on a freshly started server, so slow requests a variant leaves behind do
# not weigh on the next; requests unanswered after BENCH_TIMEOUT count as timeouts. Each runs
# twice: with the catalog page cache as configured by default, and with it off
# (MARKETPLACE_CATALOG_CACHE_MS=0), when every request runs its search. The server's
# catalog_pages_total metric tells how the pages were served (searched for the request, from
# the cache, or from the cache while searched anew). Before the
# variants, one request at a time for words of five frequencies (relevance), at most
# BENCH_SINGLE_MAX seconds each.
#
# Knobs: BENCH_LISTINGS (100000), BENCH_DURATION (15s), BENCH_WARMUP (3s), BENCH_CONNECTIONS
# (32), BENCH_THREADS (2), BENCH_VARIANTS (all), BENCH_CACHE ("on off"), BENCH_TIMEOUT (10s),
# BENCH_SINGLE_MAX (60), and those of bench/lib.sh. A benchmark, not a test: exits 0 whatever
# the numbers. wrk shares the machine's cores with the server.

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

LISTINGS="${BENCH_LISTINGS:-100000}"
DURATION="${BENCH_DURATION:-15s}"
WARMUP="${BENCH_WARMUP:-3s}"
CONNECTIONS="${BENCH_CONNECTIONS:-32}"
THREADS="${BENCH_THREADS:-2}"
VARIANTS="${BENCH_VARIANTS:-mixed common category newest tag_title browse mixed_signed_in zipf}"
TIMEOUT="${BENCH_TIMEOUT:-10s}"
SINGLE_MAX="${BENCH_SINGLE_MAX:-60}"
CACHE_MODES="${BENCH_CACHE:-on off}"

apt_install wrk wrk
for tool in python3 sqlite3 psql curl jq; do command -v "$tool" >/dev/null || die "$tool is required"; done
build_marketplace

log "generating $LISTINGS listings"
python3 "$BENCH_ROOT/bench/gen_catalog.py" "$WORK/catalog" "$LISTINGS"
CAT="$WORK/catalog"

load_sqlite() {
    db_sql <<SQL
CREATE TABLE s_org (id, name, kind, tax, fee, created_at);
CREATE TABLE s_lst (id, organization_id, title, summary, description, categories, tags,
    visibility, state, search_document, created_at, updated_at, published_at, archived_at,
    search_labels);
CREATE TABLE s_lbl (listing_id, organization_id, kind, value);
CREATE TABLE s_ofr (id, listing_id, organization_id, name, currency, billing_interval,
    recurring_amount, term_months, usage_prices, free_metrics, trial_days, requires_approval,
    auto_renew_default, private, state, created_at, archived_at);
.import --csv $CAT/organizations.csv s_org
.import --csv $CAT/listings.csv s_lst
.import --csv $CAT/labels.csv s_lbl
.import --csv $CAT/offers.csv s_ofr
BEGIN;
INSERT INTO organizations (id, name, kind, tax_rate_bps, fee_bps, created_at)
    SELECT id, name, kind, NULL, NULL, created_at FROM s_org;
INSERT INTO listings (id, organization_id, title, summary, description, categories, tags,
    visibility, state, search_document, created_at, updated_at, published_at, archived_at,
    search_labels)
    SELECT id, organization_id, title, summary, description, categories, tags, visibility,
        state, search_document, created_at, updated_at, published_at, NULLIF(archived_at, ''),
        search_labels
    FROM s_lst;
INSERT INTO listing_labels (listing_id, organization_id, kind, value) SELECT * FROM s_lbl;
INSERT INTO offers (id, listing_id, organization_id, name, currency, billing_interval,
    recurring_amount, term_months, usage_prices, free_metrics, trial_days, requires_approval,
    auto_renew_default, private, state, created_at, archived_at)
    SELECT id, listing_id, organization_id, name, currency, billing_interval,
        CAST(recurring_amount AS INTEGER), CAST(term_months AS INTEGER), usage_prices,
        free_metrics, CAST(trial_days AS INTEGER), CAST(requires_approval AS INTEGER),
        CAST(auto_renew_default AS INTEGER), CAST(private AS INTEGER), state, created_at,
        NULLIF(archived_at, '')
    FROM s_ofr;
COMMIT;
DROP TABLE s_org; DROP TABLE s_lst; DROP TABLE s_lbl; DROP TABLE s_ofr;
SQL
}

load_postgres() {
    db_sql <<SQL
BEGIN;
\copy organizations (id, name, kind, tax_rate_bps, fee_bps, created_at) from '$CAT/organizations.csv' with (format csv)
\copy listings (id, organization_id, title, summary, description, categories, tags, visibility, state, search_document, created_at, updated_at, published_at, archived_at, search_labels) from '$CAT/listings.csv' with (format csv)
\copy listing_labels (listing_id, organization_id, kind, value) from '$CAT/labels.csv' with (format csv)
\copy offers (id, listing_id, organization_id, name, currency, billing_interval, recurring_amount, term_months, usage_prices, free_metrics, trial_days, requires_approval, auto_renew_default, private, state, created_at, archived_at) from '$CAT/offers.csv' with (format csv)
COMMIT;
VACUUM ANALYZE;
SQL
}

# Runs one variant on a freshly started server (so requests a previous variant left running
# cannot slow it), with the page cache on (the default settings) or off; appends a result
# line to $WORK/results, with how the server says it served the catalog pages (searched,
# from the cache, from the cache while searched anew) and how many searches it ran (warm-up
# included).
measure() { # backend variant cache(on|off) paths-file [wrk args...]
    local backend="$1" variant="$2" cache="$3" paths="$4" out line served
    shift 4
    if [[ "$cache" == off ]]; then
        start_marketplace MARKETPLACE_CATALOG_CACHE_MS=0
    else
        start_marketplace
    fi
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"$WARMUP" --timeout "$TIMEOUT" \
        -s "$BENCH_ROOT/bench/rotate.lua" "$@" "$BASE" -- "$paths" >/dev/null
    out="$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --timeout "$TIMEOUT" --latency \
        -s "$BENCH_ROOT/bench/rotate.lua" "$@" "$BASE" -- "$paths")"
    line="$(grep '^BENCH ' <<<"$out")" || { echo "$out" >&2; die "wrk gave no summary"; }
    val() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<" ${line#BENCH }"; }
    local timeouts
    timeouts="$(sed -n 's/.*timeout:\([0-9]*\).*/\1/p' <<<"$line")"
    served="$(curl -sS "$BASE/metrics" | awk '
        /^catalog_pages_total\{source="search"\}/ { s = $2 }
        /^catalog_pages_total\{source="cache"\}/ { c = $2 }
        /^catalog_pages_total\{source="stale"\}/ { t = $2 }
        /^catalog_searches_total/ { r = $2 }
        END { printf "%d/%d/%d/%d", s, c, t, r }')"
    echo "$backend $variant $cache $(val rps) $(val p50_us) $(val p95_us) $(val p99_us) $(val requests) $(val errors) $timeouts $served $(cut -d' ' -f1 /proc/loadavg)" \
        >>"$WORK/results"
    log "  $backend $variant (cache $cache): $(printf '%.0f' "$(val rps)") req/s, p50 $(val p50_us) us," \
        "p95 $(val p95_us) us, p99 $(val p99_us) us, errors $(val errors) ($(val detail));" \
        "pages searched/cached/stale, searches run: $served"
    RSS_AFTER["$backend"]="$(awk '/^VmHWM:/ { printf "%.0f", $2 / 1024 }' "/proc/$SERVER_PID/status")"
    ANON_AFTER["$backend"]="$(awk '/^RssAnon:/ { printf "%.0f", $2 / 1024 }' "/proc/$SERVER_PID/status")"
    stop_marketplace
}

# One request at a time for a word of each frequency: seconds (or >MAX), and matches.
single_requests() { # backend
    local backend="$1" word t matches
    start_marketplace
    for word in $(cat "$CAT/single-words.txt"); do
        if [[ "$backend" == sqlite ]]; then
            matches="$(db_value "SELECT count(*) FROM listings_fts WHERE listings_fts MATCH '\"$word\"'")"
        else
            matches="$(db_value "SELECT count(*) FROM listings WHERE search_vector @@ plainto_tsquery('simple', '$word')")"
        fi
        t="$(curl -sS -o /dev/null --max-time "$SINGLE_MAX" -w '%{time_total}' "$BASE/v1/listings?q=$word" 2>/dev/null)" ||
            t=">$SINGLE_MAX"
        echo "$backend $word $matches $t" >>"$WORK/single"
        log "  $backend single q=$word ($matches listings contain it): $t s"
    done
    stop_marketplace
}

run_backend() { # backend
    local backend="$1" t0 variant token=""
    new_database "$backend" "catalog"
    mkt migrate >/dev/null
    log "$backend: loading $LISTINGS listings"
    t0="$(date +%s.%N)"
    "load_$backend" >/dev/null
    log "$backend: loaded in $(calc '%.1f' "$(date +%s.%N) - $t0") s" \
        "($(db_value "SELECT count(*) FROM listings WHERE state = 'published'") listings," \
        "$(db_value 'SELECT count(*) FROM listing_labels') labels)"
    start_marketplace
    [[ "$(api GET "/v1/listings?limit=1" | jq '.data | length')" == 1 ]] ||
        die "$backend: the catalog lists nothing"
    signup "Bench Reader"
    token="$TOKEN"
    stop_marketplace
    single_requests "$backend"
    for variant in $VARIANTS; do
        for cache in $CACHE_MODES; do
            case "$variant" in
                mixed_signed_in)
                    measure "$backend" "$variant" "$cache" "$CAT/paths-mixed.txt" \
                        -H "Authorization: Bearer $token"
                    ;;
                *) measure "$backend" "$variant" "$cache" "$CAT/paths-$variant.txt" ;;
            esac
        done
    done
}

declare -A RSS_AFTER ANON_AFTER
LOAD_START="$(loadavg)"
log "catalog search: $LISTINGS listings; wrk -t$THREADS -c$CONNECTIONS -d$DURATION per variant; loadavg $LOAD_START"
run_backend sqlite
if pg_available; then
    run_backend postgres
    PG_OK=1
else
    log "warning: PostgreSQL not reachable at $PG_URL; no PostgreSQL rows"
fi
LOAD_END="$(loadavg)"

# ---------- report ----------

label() {
    case "$1" in
        mixed) echo 'q=word (mixed frequencies), relevance' ;;
        common) echo 'q=very frequent word, relevance' ;;
        category) echo 'q=word & category, relevance' ;;
        newest) echo 'q=word, sort=newest' ;;
        tag_title) echo 'tag, sort=title (no q)' ;;
        browse) echo 'no q: first page / one category' ;;
        zipf) echo "search log: $(sort -u "$CAT/paths-zipf.txt" | wc -l) distinct in 20,000" ;;
        mixed_signed_in) echo 'q=word (mixed), signed-in reader' ;;
    esac
}

report_header "Catalog search over $LISTINGS published listings"
cat <<EOF
Load: per variant a freshly started server, wrk -t$THREADS -c$CONNECTIONS -d$DURATION --timeout $TIMEOUT --latency after a
$WARMUP warm-up, rotating over the variant's query paths (bench/rotate.lua); default page size (50),
default workers and pool. Percentiles are over the requests that completed; "timeouts" are
requests still unanswered after $TIMEOUT (wrk leaves them out of the percentiles). "page cache":
on is the default settings (MARKETPLACE_CATALOG_CACHE_MS=5000), off is
MARKETPLACE_CATALOG_CACHE_MS=0; "pages searched / cached / stale" counts how the server served
the catalog pages of the run and its warm-up (catalog_pages_total), and "searches run" all
searches, those run to refresh cached pages included (catalog_searches_total).
Load average before/after: $LOAD_START / $LOAD_END (1-min load average at the end of each run in the last column).

| backend | query | page cache | req/s | p50 ms | p95 ms | p99 ms | requests | timeouts | other errors | pages searched / cached / stale / searches run | load |
| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |
EOF
while read -r backend variant cache rps p50 p95 p99 requests errors timeouts served load; do
    if [[ "$requests" == 0 ]]; then
        printf '| %s | %s | %s | 0 | no request completed | | | 0 | %s | %s | %s | %s |\n' "$backend" \
            "$(label "$variant")" "$cache" "$timeouts" "$((errors - timeouts))" "${served//\// \/ }" "$load"
        continue
    fi
    printf '| %s | %s | %s | %.1f | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$backend" "$(label "$variant")" \
        "$cache" "$rps" "$(calc '%.1f' "$p50 / 1000")" "$(calc '%.1f' "$p95 / 1000")" \
        "$(calc '%.1f' "$p99 / 1000")" "$requests" "$timeouts" "$((errors - timeouts))" "${served//\// \/ }" "$load"
done <"$WORK/results"
cat <<EOF

One request at a time (curl, nothing else running against the server), \`GET /v1/listings?q=WORD\`
(relevance), by how many listings contain the word (at most $SINGLE_MAX s waited):

| backend | word | listings containing it | seconds |
| --- | --- | ---: | ---: |
EOF
while read -r backend word matches t; do
    printf '| %s | %s | %s | %s |\n' "$backend" "$word" "$matches" "$t"
done <"$WORK/single"
echo
echo "Peak server RSS (of the last variant): SQLite ${RSS_AFTER[sqlite]} MiB${PG_OK:+, PostgreSQL ${RSS_AFTER[postgres]:-?} MiB}."
echo "Its anonymous memory at the end (RssAnon): SQLite ${ANON_AFTER[sqlite]} MiB${PG_OK:+, PostgreSQL ${ANON_AFTER[postgres]:-?} MiB}."
echo "The SQLite server maps the database file once per connection, so its RSS counts the file's"
echo "pages it touched once per connection; they are the kernel's page cache, not the server's."
echo "Target: p95 <= 20 ms."
exit 0
