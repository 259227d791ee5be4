#!/usr/bin/env bash
# Contract fuzzing: starts the release binary on a scratch database and runs Schemathesis
# against the served /openapi.yaml with every check on. Exits non-zero on any failure.
#
#   bash .ci/schemathesis.sh [schemathesis run options...]
#
# Environment:
#   CI_CACHE_DIR               where the Schemathesis virtualenv is kept
#                              (default ~/.cache/marketplace-ci)
#   MARKETPLACE_DATABASE_URL   passed through to the server if set (default: SQLite in a temp dir)
#   MARKETPLACE_BIN            the server binary to test as it is; by default the script runs
#                              `cargo build --release --bin marketplace` and tests
#                              ${CARGO_TARGET_DIR:-target}/release/marketplace
#   SCHEMATHESIS_MAX_EXAMPLES  test cases per operation and phase (default 300: a few minutes)
#   SCHEMATHESIS_SEED          the random seed (default fixed, so runs are reproducible)
#   SCHEMATHESIS_REPORT_DIR    if set, reports are written there, in the formats of
#   SCHEMATHESIS_REPORT        (default junit; e.g. junit,ndjson,har)
# Further arguments go to `schemathesis run` as they are.
set -euo pipefail

SCHEMATHESIS_VERSION=4.32.5

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

cache_dir="${CI_CACHE_DIR:-$HOME/.cache/marketplace-ci}"
venv="$cache_dir/venv"
max_examples="${SCHEMATHESIS_MAX_EXAMPLES:-300}"
seed="${SCHEMATHESIS_SEED:-20260101}"

log() { printf '[schemathesis.sh] %s\n' "$*" >&2; }

# ---------------------------------------------------------------- Schemathesis, pinned

if [[ "$("$venv/bin/schemathesis" --version 2>/dev/null || true)" != *"$SCHEMATHESIS_VERSION"* ]]; then
    log "installing schemathesis $SCHEMATHESIS_VERSION into $venv"
    mkdir -p "$cache_dir"
    [[ -x "$venv/bin/python" ]] || python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        "schemathesis==$SCHEMATHESIS_VERSION"
fi
st="$venv/bin/schemathesis"

# ---------------------------------------------------------------- the server

# The binary embeds openapi.yaml, so a stale one would be tested against an old contract:
# build it (a no-op when it is up to date), unless told to take a given binary as it is.
if [[ -n "${MARKETPLACE_BIN:-}" ]]; then
    binary="$MARKETPLACE_BIN"
else
    binary="${CARGO_TARGET_DIR:-$root/target}/release/marketplace"
    log "cargo build --release --bin marketplace"
    cargo build --release --bin marketplace
fi
if [[ ! -x "$binary" ]]; then
    log "no executable at $binary"
    exit 1
fi

work="$(mktemp -d)"
server_pid=""
cleanup() {
    local status=$?
    if [[ -n "$server_pid" ]] && kill -0 "$server_pid" 2>/dev/null; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    if [[ $status -ne 0 && -s "$work/server.log" ]]; then
        log "server log (last 40 lines):"
        tail -n 40 "$work/server.log" >&2 || true
    fi
    rm -rf "$work"
    exit "$status"
}
trap cleanup EXIT INT TERM

port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')"
base="http://127.0.0.1:$port"

server_env=(
    MARKETPLACE_AUTH_RATE_LIMIT=1000000
    # Outlive the run: an access token expiring mid-run would turn every case into a 401.
    MARKETPLACE_ACCESS_TOKEN_TTL=7200
    MARKETPLACE_LOG_FORMAT=text
    RUST_LOG="${RUST_LOG:-warn}"
    # The hooks sign Stripe webhook bodies with this secret, as Stripe would.
    MARKETPLACE_STRIPE_WEBHOOK_SECRETS=whsec_schemathesis
)
if [[ -n "${MARKETPLACE_DATABASE_URL:-}" ]]; then
    server_env+=(MARKETPLACE_DATABASE_URL="$MARKETPLACE_DATABASE_URL")
fi

log "starting $binary on $base (data in $work/data)"
env "${server_env[@]}" "$binary" serve --listen "127.0.0.1:$port" --data-dir "$work/data" \
    >"$work/server.log" 2>&1 &
server_pid=$!

for _ in $(seq 1 300); do
    if curl -fsS "$base/healthz" >/dev/null 2>&1; then
        break
    fi
    if ! kill -0 "$server_pid" 2>/dev/null; then
        log "the server exited before answering /healthz"
        exit 1
    fi
    sleep 0.2
done
curl -fsS "$base/healthz" >/dev/null

# ---------------------------------------------------------------- fixtures

# The server must serve the spec in the work tree (it embeds the file at build time).
if ! curl -fsS "$base/openapi.yaml" | cmp -s - "$root/openapi.yaml"; then
    log "$binary serves another openapi.yaml than the work tree's: rebuild it"
    exit 1
fi

# - the caller: an organization admin, the one role every documented operation may succeed
#   for. The fuzzer cannot remove this user (removing yourself is 409 `cannot_remove_self`),
#   and revoking API keys leaves its access token alone;
# - a second member, so that a one-item page has a next page: a cursor the server issued;
# - the user of the spec's examples (ada@example.com), so that its sign-in example signs in;
#   its organization is the "other organization" that private listings and offers name;
# - a published listing of the caller's with a per-unit priced metric, and an active
#   subscription of Ada's organization to it, for which the caller reports usage;
# - an open revision of a dataset of that listing, holding one file.
# Addresses are unique per run: a database passed in through MARKETPLACE_DATABASE_URL may
# be reused.
fixtures="$(python3 - "$base" "$(date +%s)-$$" <<'PY'
import json
import shlex
import sys
import urllib.error
import urllib.request

base, run_id = sys.argv[1], sys.argv[2]


def call(method, path, body=None, token=None, expect=(200, 201)):
    request = urllib.request.Request(base + path, method=method)
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    data = None if body is None else json.dumps(body).encode()
    try:
        with urllib.request.urlopen(request, data) as response:
            status, text = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, text = error.code, error.read()
    if status not in expect:
        sys.exit(f"fixture {method} {path}: HTTP {status}: {text[:500]!r}")
    return status, json.loads(text)


def sign_up(email, password, name, organization):
    body = {"email": email, "password": password, "name": name, "organization_name": organization}
    status, session = call("POST", "/v1/auth/signup", body, expect=(201, 409))
    if status == 409:
        _, session = call("POST", "/v1/auth/token", {"email": email, "password": password})
    return session


admin = sign_up(f"fuzz-admin-{run_id}@example.com", "a long fuzzing password", "Fuzz Admin", "Fuzzing Ltd")
token = admin["access_token"]
call("POST", "/v1/organization/members", {
    "email": f"fuzz-member-{run_id}@example.com", "password": "another fuzzing password",
    "name": "Fuzz Member", "role": "member"}, token)
_, page = call("GET", "/v1/organization/members?limit=1", token=token)
ada = sign_up("ada@example.com", "correct horse battery staple", "Ada Lovelace", "Analytical Engines Ltd")

_, listing = call("POST", "/v1/listings", {
    "title": "Fuzzing fixture", "summary": "A listing with a subscriber, to report usage for.",
    "visibility": "public"}, token)
_, offer = call("POST", f"/v1/listings/{listing['id']}/offers", {
    "name": "Per row", "currency": "USD", "billing_interval": "monthly", "recurring_amount": 0,
    "term_months": 12, "usage_prices": [{"metric": "rows", "model": "per_unit", "unit_amount_decimal": "0.01"}]},
    token)
call("POST", f"/v1/listings/{listing['id']}/publish", token=token)
_, subscription = call("POST", "/v1/subscriptions", {"offer_id": offer["id"]}, ada["access_token"])
_, dataset = call("POST", f"/v1/listings/{listing['id']}/datasets", {"name": "Rows"}, token)
_, revision = call("POST", f"/v1/datasets/{dataset['id']}/revisions", {}, token)
upload = urllib.request.Request(
    f"{base}/v1/revisions/{revision['id']}/assets/rows.csv", data=b"a,b\n1,2\n3,4\n", method="PUT")
upload.add_header("Content-Type", "text/csv")
upload.add_header("Authorization", f"Bearer {token}")
with urllib.request.urlopen(upload) as response:
    asset = json.loads(response.read())

for name, value in [
    ("token", token),
    ("issued_cursor", page["next_cursor"]),
    ("other_organization", ada["organization"]["id"]),
    ("usage_subscription", subscription["id"]),
    ("usage_metric", "rows"),
    ("open_revision", revision["id"]),
    ("asset", asset["id"]),
]:
    print(f"{name}={shlex.quote(value)}")
PY
)"
eval "$fixtures"

# ---------------------------------------------------------------- hooks

# Some rules of the contract make a request valid or not by the server's state or by what
# was sent before, which no schema can say. Without these hooks `positive_data_acceptance`
# would flag schema-valid requests that the contract itself calls client errors, and the
# success paths behind them would go untested. Only schema-valid (positive) cases are
# touched, and only as far as the rule needs; negative cases go out as generated, so their
# rejection is still checked.
# - Idempotency-Key: reused on the same path with another request it is 422
#   `idempotency_key_reused`; such a reuse gets a unique suffix (a key reused with the same
#   request goes out as is, and is replayed).
# - `cursor` is opaque; only one the server issued is valid (422 otherwise). A non-empty one
#   becomes an issued one; the catalog's (sorted) cursors are dropped instead.
# - `sort=relevance` needs words to search for in `q`.
# - JSON Schema counts 6.0 as an integer, serde's integers do not: integral floats in
#   bodies become integers (the server's 422 for them is strict, not wrong).
# - A usage window (`from`, `to`, or one of them and the current month) runs forwards and
#   spans at most 366 days, both ends included.
# - A refresh token is valid once, and only if the server issued it: one shaped like one
#   (`mkt_rt_…`, as the spec's example) that the server never issued becomes an unspent
#   one issued during the run (spent ones go out as they are: reusing one must be 401).
# - An e-mail address can be registered once (409 `email_taken`), and generated requests
#   repeat a few (the spec's examples above all): one is sent as is twice (the second time
#   meets 409), after that it gets a unique `+tag`.
# - A customer organization's admin cannot give the platform role `operator` (422): a new
#   member asked with it gets `member`.
# - Organization ids in `allowed_organization_ids` and `private_to_organization_ids` must
#   name existing organizations: they become the fixture's other organization.
# - An offer prices each metric once, lists as free only metrics it does not price, and its
#   tiers' bounds rise strictly with only the last one unbounded.
# - Usage is reported for a subscription to one of the caller's listings, for a metric its
#   offer prices, inside its active window: events go to the fixture's subscription and
#   metric, timed now.
# - Files: every other upload goes to the fixture's open revision and every other read
#   (and download URL) to its file, so that success responses and byte ranges get checked
#   too, not only 404s. A range of that file that starts past its end (416 by the contract)
#   starts inside it instead, modulo its 12 bytes.
mkdir -p "$work/hooks"
cat >"$work/hooks/marketplace_hooks.py" <<'PY'
import itertools
import json
import os
import re
from datetime import date, datetime, timedelta, timezone

import schemathesis

VALID_KEY = re.compile(r"[\x21-\x7E]{1,255}")
ISSUED_CURSOR = os.environ["FUZZ_ISSUED_CURSOR"]
OTHER_ORGANIZATION = os.environ["FUZZ_OTHER_ORGANIZATION"]
USAGE_SUBSCRIPTION = os.environ["FUZZ_USAGE_SUBSCRIPTION"]
USAGE_METRIC = os.environ["FUZZ_USAGE_METRIC"]
OPEN_REVISION = os.environ["FUZZ_OPEN_REVISION"]
ASSET = os.environ["FUZZ_ASSET"]
SESSION_PATHS = {"/v1/auth/signup", "/v1/auth/token", "/v1/auth/refresh"}
STRIPE_SECRET = b"whsec_schemathesis"
NEW_USER_PATHS = {"/v1/auth/signup", "/v1/organization/members"}

_suffixes = itertools.count()
_first_use = {}  # (path, Idempotency-Key) -> the request it was first sent with
_issued_refresh = set()  # every refresh token the server issued during the run
_unspent_refresh = []  # those not sent back yet
_emails_sent = {}  # e-mail address -> how often a new user was requested with it
_file_cases = itertools.count()


def _positive(case):
    """Whether the whole case is schema-valid. Editing a negative case would make
    Schemathesis revalidate it, and an auth-less probe could turn positive and get the
    session's Authorization header back."""
    return case.meta is None or case.meta.generation.mode.is_positive


def _body(case):
    return case.body if isinstance(case.body, dict) else None


def _fix_query(case):
    query = case.query
    if not query:
        return
    if query.get("cursor"):
        if case.path == "/v1/listings" and query.get("mine") != "true":
            del query["cursor"]
        else:
            query["cursor"] = ISSUED_CURSOR
    if query.get("sort") == "relevance" and not any(c.isalnum() for c in str(query.get("q") or "")):
        query["q"] = "data"
    if case.path.endswith("/usage") and (query.get("from") or query.get("to")):
        first, last = sorted([query.get("from") or query["to"], query.get("to") or query["from"]])
        # Both ends count: 366 days run from `first` to `first` + 365.
        if date.fromisoformat(last) - date.fromisoformat(first) > timedelta(days=365):
            last = (date.fromisoformat(first) + timedelta(days=365)).isoformat()
        query["from"], query["to"] = first, last


def _integral(value):
    """JSON Schema counts 6.0 as an integer; the server's integer fields take 6 only."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [_integral(v) for v in value]
    if isinstance(value, dict):
        return {k: _integral(v) for k, v in value.items()}
    return value


def _fix_integers(case):
    if isinstance(case.body, (dict, list)):
        case.body = _integral(case.body)


def _fix_refresh_token(case):
    body = _body(case)
    if case.path != "/v1/auth/refresh" or body is None:
        return
    token = body.get("refresh_token")
    if isinstance(token, str) and token.startswith("mkt_rt_") and token not in _issued_refresh:
        if _unspent_refresh:
            body["refresh_token"] = _unspent_refresh.pop()


def _note_spent_refresh_token(case):
    body = _body(case)
    if case.path == "/v1/auth/refresh" and body is not None:
        token = body.get("refresh_token")
        if token in _unspent_refresh:
            _unspent_refresh.remove(token)


def _fix_email(case):
    body = _body(case)
    if case.path not in NEW_USER_PATHS or body is None:
        return
    email = body.get("email")
    if not isinstance(email, str) or "@" not in email:
        return
    if _emails_sent.get(email.strip().lower(), 0) >= 2:
        local, domain = email.rsplit("@", 1)
        tag = f"+{next(_suffixes)}"
        fresh = f"{local[:64 - len(tag)]}{tag}@{domain}"
        if len(fresh) <= 254:
            body["email"] = email = fresh
    key = email.strip().lower()
    _emails_sent[key] = _emails_sent.get(key, 0) + 1


def _fix_organization_ids(case):
    body = _body(case)
    if body is None:
        return
    for field in ("allowed_organization_ids", "private_to_organization_ids"):
        if isinstance(body.get(field), list) and body[field]:
            body[field] = [OTHER_ORGANIZATION]


def _fix_offer(case):
    body = _body(case)
    if not case.path.endswith("/offers") or body is None:
        return
    priced = []
    for i, price in enumerate(body.get("usage_prices") or []):
        if not isinstance(price, dict):
            continue
        if price.get("metric") in priced:
            price["metric"] = f"{price['metric'][:56]}-{i}"
        priced.append(price.get("metric"))
        tiers = price.get("tiers")
        if price.get("model") != "per_unit" and isinstance(tiers, list) and tiers:
            bound = 0
            for tier in (t for t in tiers[:-1] if isinstance(t, dict)):
                up_to = tier.get("up_to")
                bound = max(bound + 1, min(up_to, 2**62) if isinstance(up_to, int) else 0)
                tier["up_to"] = bound
            if isinstance(tiers[-1], dict):
                tiers[-1]["up_to"] = None
    if isinstance(body.get("free_metrics"), list):
        body["free_metrics"] = [m for m in body["free_metrics"] if m not in priced]


def _fix_usage_events(case):
    body = _body(case)
    if case.path != "/v1/usage-events" or body is None or not isinstance(body.get("events"), list):
        return
    now = datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")
    for event in body["events"]:
        if isinstance(event, dict):
            event.update(subscription_id=USAGE_SUBSCRIPTION, metric=USAGE_METRIC, timestamp=now)


def _fix_file_ids(case):
    """Every other upload goes to the open revision, every other read to the file."""
    params = case.path_parameters
    if not params or "id" not in params:
        return
    if case.path == "/v1/revisions/{id}/assets/{name}" or case.path.startswith("/v1/assets/{id}/"):
        if next(_file_cases) % 2 == 0:
            params["id"] = OPEN_REVISION if case.path.startswith("/v1/revisions/") else ASSET


ASSET_SIZE = 12  # the fixture's file, `a,b\n1,2\n3,4\n`
SINGLE_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


def _fix_range(case):
    """A range of the fixture's file that starts past its end is unsatisfiable (416, as the
    contract says): its first byte is brought inside the file."""
    headers = case.headers or {}
    name = next((h for h in headers if h.lower() == "range"), None)
    if case.path != "/v1/assets/{id}/content" or name is None:
        return
    if (case.path_parameters or {}).get("id") != ASSET:
        return
    found = SINGLE_RANGE.fullmatch(str(headers[name]).strip())
    if not found:
        return
    first, last = found.groups()
    if first and int(first) >= ASSET_SIZE:
        headers[name] = f"bytes={int(first) % ASSET_SIZE}-{last}"
    elif not first and last and int(last) == 0:
        headers[name] = "bytes=-1"


def _fix_idempotency_key(case):
    headers = case.headers or {}
    name = next((h for h in headers if h.lower() == "idempotency-key"), None)
    if case.method.upper() != "POST" or name is None:
        return
    key = headers[name]
    if not isinstance(key, str) or not VALID_KEY.fullmatch(key):
        return
    request = (repr(case.query), case.media_type, repr(case.body))
    first = _first_use.setdefault((case.path, key), request)
    if first != request:
        headers[name] = f"{key[:240]}-{next(_suffixes)}"
        _first_use[(case.path, headers[name])] = request


def _fix_webhook_url(case):
    """Webhook endpoints must point at public addresses; a generated URL may name this
    machine (the server refuses it, rightly). Keep its path, move it to a public host."""
    body = _body(case)
    if case.path == "/v1/webhook-endpoints" and body and isinstance(body.get("url"), str):
        path = re.sub(r"^[a-zA-Z][a-zA-Z0-9+.-]*://[^/]*", "", body["url"])
        body["url"] = "https://hooks.example.com" + (path if path.startswith("/") else "/" + path)


def _fix_member_role(case):
    """The caller is a customer organization's admin: `operator` is a role only the platform
    organization's admins give (422 for a customer's, rightly)."""
    body = _body(case)
    if case.path == "/v1/organization/members" and body and body.get("role") == "operator":
        body["role"] = "member"


def _sign_stripe_webhook(case, kwargs):
    """Sign the exact body sent, as Stripe does: HMAC-SHA256 over "<t>.<body>"."""
    if case.path != "/v1/webhooks/stripe":
        return
    import hashlib
    import hmac
    import time

    # Send the body as these exact bytes (a body in kwargs replaces the generated one).
    body = kwargs.get("data")
    if body is None:
        if not isinstance(case.body, (dict, list, str, int, float, bool)):
            return
        body = json.dumps(case.body).encode()
        kwargs["data"] = body
    if isinstance(body, str):
        body = body.encode()
    if not isinstance(body, bytes):
        return
    t = str(int(time.time()))
    signature = hmac.new(STRIPE_SECRET, t.encode() + b"." + body, hashlib.sha256).hexdigest()
    # On the case, not in kwargs: the transport passes its own `headers` keyword.
    if case.headers is None:
        case.headers = {}
    case.headers["Stripe-Signature"] = f"t={t},v1={signature}"


@schemathesis.hook
def before_call(context, case, kwargs):
    if _positive(case):
        _fix_webhook_url(case)
        _fix_member_role(case)
        _sign_stripe_webhook(case, kwargs)
        _fix_integers(case)
        _fix_query(case)
        _fix_refresh_token(case)
        _fix_email(case)
        _fix_organization_ids(case)
        _fix_offer(case)
        _fix_usage_events(case)
        _fix_file_ids(case)
        _fix_range(case)
        # Last: it compares whole requests, after the fixes above.
        _fix_idempotency_key(case)
    _note_spent_refresh_token(case)


@schemathesis.hook
def after_call(context, case, response):
    if case.path not in SESSION_PATHS or not 200 <= response.status_code < 300:
        return
    try:
        token = json.loads(response.content)["refresh_token"]
    except (ValueError, KeyError, TypeError):
        return
    if isinstance(token, str) and token not in _issued_refresh:
        _issued_refresh.add(token)
        _unspent_refresh.append(token)
PY

# ---------------------------------------------------------------- the run

report=()
if [[ -n "${SCHEMATHESIS_REPORT_DIR:-}" ]]; then
    report=(--report "${SCHEMATHESIS_REPORT:-junit}" --report-dir "$SCHEMATHESIS_REPORT_DIR")
fi

log "schemathesis $SCHEMATHESIS_VERSION: --checks all, seed $seed, $max_examples examples per operation"
# `--include-path-regex .` selects every operation; without an explicit filter Schemathesis
# leaves out the one serving the schema document (GET /openapi.yaml).
PYTHONPATH="$work/hooks${PYTHONPATH:+:$PYTHONPATH}" \
SCHEMATHESIS_HOOKS=marketplace_hooks \
FUZZ_ISSUED_CURSOR="$issued_cursor" \
FUZZ_OTHER_ORGANIZATION="$other_organization" \
FUZZ_USAGE_SUBSCRIPTION="$usage_subscription" \
FUZZ_USAGE_METRIC="$usage_metric" \
FUZZ_OPEN_REVISION="$open_revision" \
FUZZ_ASSET="$asset" \
"$st" run "$base/openapi.yaml" \
    --checks all \
    --include-path-regex . \
    --header "Authorization: Bearer $token" \
    --seed "$seed" \
    --max-examples "$max_examples" \
    --generation-database none \
    --workers 1 \
    --request-timeout 30 \
    --no-color \
    "${report[@]}" \
    "$@"
