#!/usr/bin/env bash
# Benchmark: a 1 GiB asset over loopback. Upload (`PUT /v1/revisions/{id}/assets/{name}`,
# stored as local files, sha256 computed on the way) in MiB/s; download (`GET
# /v1/assets/{id}/content` with the provider's token) with curl to /dev/null, against nginx
# (Debian's package, installed if missing) serving the same file (a hard link to the stored
# object, so the same page-cache pages) from a temporary root, in the same run.
#
#   bench/transfer.sh
#
# Needs: a Rust toolchain, curl, jq, openssl, nginx (apt-get). Uses SQLite (the database is
# touched once per request; the bytes never go through it). About 3 GiB in $TMPDIR.
#
# Each round uploads the file again under the same name (replacing the asset), then
# downloads it from the marketplace and from nginx; the table gives medians over the rounds,
# and "% of nginx" is the median of the rounds' ratios (each pair measured back to back).
# For reference the run also times `openssl dgst -sha256` over the file (the hashing an
# upload cannot avoid) and `cp` of it (the write), both from the page cache.
#
# Knobs: BENCH_ROUNDS (5), BENCH_SIZE_MIB (1024), BENCH_PROFILE=1 (perf record of the server
# during the last round's upload and download, kept with BENCH_KEEP=1), and those of
# bench/lib.sh. A benchmark, not a test: exits 0 whatever the numbers. curl, nginx and the
# server share the machine's cores.

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ROUNDS="${BENCH_ROUNDS:-5}"
SIZE_MIB="${BENCH_SIZE_MIB:-1024}"
SIZE=$((SIZE_MIB * 1024 * 1024))

apt_install nginx nginx
for tool in curl jq openssl; do command -v "$tool" >/dev/null || die "$tool is required"; done
build_marketplace

FILE="$WORK/asset.bin"
log "writing $SIZE_MIB MiB of random bytes"
openssl rand -out "$FILE" "$SIZE" 2>/dev/null || head -c "$SIZE" /dev/urandom >"$FILE"
SHA="$(sha256sum "$FILE" | cut -d' ' -f1)"

mib_s() { calc '%.0f' "$SIZE / 1048576 / $1"; }
elapsed() { # command... -> seconds
    local t0
    t0="$(date +%s.%N)"
    "$@" >/dev/null
    calc '%.3f' "$(date +%s.%N) - $t0"
}
HASH_S="$(elapsed openssl dgst -sha256 "$FILE")"
CP_S="$(elapsed cp "$FILE" "$WORK/copy.bin")"
rm -f "$WORK/copy.bin"

# ---------- the marketplace ----------

new_database sqlite transfer
start_marketplace MARKETPLACE_ACCESS_TOKEN_TTL=3600
signup "Bench Provider"
LISTING="$(api POST /v1/listings "$TOKEN" '{"title":"Transfer benchmark","summary":"One big file","visibility":"public"}' | jq -r .id)"
DATASET="$(api POST "/v1/listings/$LISTING/datasets" "$TOKEN" '{"name":"files"}' | jq -r .id)"
REVISION="$(api POST "/v1/datasets/$DATASET/revisions" "$TOKEN" '{"comment":"benchmark"}' | jq -r .id)"

profile_start() { # name
    PERF_PID=""
    if [[ -n "${BENCH_PROFILE:-}" ]]; then
        perf record -F 999 -g -p "$SERVER_PID" -o "$WORK/perf-$1.data" >/dev/null 2>&1 &
        PERF_PID=$!
        EXTRA_PIDS+=("$PERF_PID")
        sleep 0.5
    fi
}
profile_stop() {
    if [[ -n "$PERF_PID" ]]; then kill -INT "$PERF_PID"; wait "$PERF_PID" 2>/dev/null || true; fi
}

upload() { # sets UPLOAD_S (seconds) and ASSET
    local out code t
    out="$(curl -sS -X PUT -T "$FILE" -H 'Expect:' -H "Authorization: Bearer $TOKEN" \
        -H 'Content-Type: application/octet-stream' -o "$WORK/upload.json" \
        -w '%{http_code} %{time_total}' "$BASE/v1/revisions/$REVISION/assets/data.bin")"
    read -r code t <<<"$out"
    [[ "$code" == 201 ]] || die "upload: $code $(cat "$WORK/upload.json")"
    [[ "$(jq -r .sha256 "$WORK/upload.json")" == "$SHA" ]] || die "upload: wrong sha256 $(cat "$WORK/upload.json")"
    [[ "$(jq -r .size "$WORK/upload.json")" == "$SIZE" ]] || die "upload: wrong size"
    ASSET="$(jq -r .id "$WORK/upload.json")"
    UPLOAD_S="$t"
}

download() { # url [curl args] -> seconds
    local url="$1" out code t size
    shift
    out="$(curl -sS -o /dev/null -w '%{http_code} %{time_total} %{size_download}' "$@" "$url")"
    read -r code t size <<<"$out"
    [[ "$code" == 200 && "$size" == "$SIZE" ]] || die "download $url: $code, $size bytes"
    echo "$t"
}

# ---------- nginx ----------

NGX="$WORK/nginx"
mkdir -p "$NGX/root" "$NGX/tmp"
NGX_PORT="$(free_port)"
cat >"$NGX/nginx.conf" <<EOF
# Debian's defaults for what matters here (worker_processes auto, sendfile, tcp_nopush).
user root;
worker_processes auto;
daemon off;
pid $NGX/nginx.pid;
error_log $NGX/error.log;
events { worker_connections 768; }
http {
    sendfile on;
    tcp_nopush on;
    access_log off;
    default_type application/octet-stream;
    client_body_temp_path $NGX/tmp/body;
    proxy_temp_path $NGX/tmp/proxy;
    fastcgi_temp_path $NGX/tmp/fastcgi;
    uwsgi_temp_path $NGX/tmp/uwsgi;
    scgi_temp_path $NGX/tmp/scgi;
    server {
        listen 127.0.0.1:$NGX_PORT;
        root $NGX/root;
    }
}
EOF
nginx -c "$NGX/nginx.conf" -p "$NGX" &
NGINX_PID=$!
EXTRA_PIDS+=("$NGINX_PID")
NGINX_URL="http://127.0.0.1:$NGX_PORT/data.bin"

LOAD_START="$(loadavg)"
log "$ROUNDS rounds; loadavg $LOAD_START"
for round in $(seq "$ROUNDS"); do
    [[ "$round" == "$ROUNDS" ]] && profile_start upload
    upload
    up="$UPLOAD_S"
    [[ "$round" == "$ROUNDS" ]] && profile_stop
    # The stored object, linked into nginx's root (same inode, same cached pages).
    object="$(find "$DATA_DIR/objects" -type f -name "$ASSET")"
    [[ -n "$object" ]] || die "cannot find the stored object of $ASSET"
    ln -f "$object" "$NGX/root/data.bin"
    [[ "$round" == 1 ]] && wait_http "$NGINX_URL" "$NGINX_PID" "$NGX/error.log"
    [[ "$round" == "$ROUNDS" ]] && profile_start download
    mk="$(download "$BASE/v1/assets/$ASSET/content" -H "Authorization: Bearer $TOKEN")"
    [[ "$round" == "$ROUNDS" ]] && profile_stop
    ng="$(download "$NGINX_URL")"
    echo "$up $mk $ng" >>"$WORK/results"
    log "round $round: upload $(mib_s "$up") MiB/s, download marketplace $(mib_s "$mk") MiB/s," \
        "nginx $(mib_s "$ng") MiB/s"
done
LOAD_END="$(loadavg)"
RSS="$(awk '/^VmHWM:/ { printf "%.0f", $2 / 1024 }' "/proc/$SERVER_PID/status")"

median() { # column
    cut -d' ' -f"$1" "$WORK/results" | sort -g |
        awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
UP="$(median 1)" MK="$(median 2)" NG="$(median 3)"
awk '{ print 100 * $3 / $2 }' "$WORK/results" >"$WORK/ratios"
PCT="$(sort -g "$WORK/ratios" | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }')"
RANGE="$(sort -g "$WORK/ratios" | awk 'NR == 1 { lo = $1 } { hi = $1 } END { printf "%.0f-%.0f %%", lo, hi }')"

report_header "Transfer of a $SIZE_MIB MiB asset over loopback"
cat <<EOF
Load: $ROUNDS rounds of upload (curl -T, PUT), download from the marketplace (curl to /dev/null, provider's
token) and from nginx $(nginx -v 2>&1 | sed 's/.*\///') (sendfile on, Debian defaults) serving the same file; medians.
Load average before/after: $LOAD_START / $LOAD_END. Server peak RSS: $RSS MiB.
Reference on this machine, from the page cache: openssl dgst -sha256 $(mib_s "$HASH_S") MiB/s, cp $(mib_s "$CP_S") MiB/s.

| transfer | seconds | MiB/s | % of nginx |
| --- | ---: | ---: | ---: |
| upload to the marketplace (sha256 checked) | $UP | $(mib_s "$UP") | |
| download from the marketplace | $MK | $(mib_s "$MK") | $(calc '%.1f' "$PCT") % (rounds: $RANGE) |
| download from nginx | $NG | $(mib_s "$NG") | 100.0 % |

Targets: upload >= 300 MiB/s with sha256; download >= 80 % of nginx's throughput.
EOF
exit 0
