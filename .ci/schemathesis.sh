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
#   SCHEMATHESIS_MAX_EXAMPLES  test cases per operation and phase (default 50)
#   SCHEMATHESIS_SEED          the random seed (default fixed, so runs are reproducible)
#   SCHEMATHESIS_REPORT        report formats (default junit), written to
#   SCHEMATHESIS_REPORT_DIR    (default: a temporary directory, removed at the end)
# Further arguments go to `schemathesis run` as they are.
set -euo pipefail

SCHEMATHESIS_VERSION=4.32.5

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

cache_dir="${CI_CACHE_DIR:-$HOME/.cache/marketplace-ci}"
venv="$cache_dir/venv"
max_examples="${SCHEMATHESIS_MAX_EXAMPLES:-50}"
seed="${SCHEMATHESIS_SEED:-20260101}"

log() { printf '[schemathesis.sh] %s\n' "$*" >&2; }

# ---------------------------------------------------------------- Schemathesis, pinned

if [[ "$("$venv/bin/schemathesis" --version 2>/dev/null || true)" != *"$SCHEMATHESIS_VERSION"* ]]; then
    log "installing schemathesis $SCHEMATHESIS_VERSION into $venv"
    mkdir -p "$cache_dir"
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        "schemathesis==$SCHEMATHESIS_VERSION"
fi
st="$venv/bin/schemathesis"

# ---------------------------------------------------------------- the server

binary="$root/target/release/marketplace"
if [[ ! -x "$binary" ]]; then
    log "building $binary"
    cargo build --release --bin marketplace
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
)
if [[ -n "${MARKETPLACE_DATABASE_URL:-}" ]]; then
    server_env+=(MARKETPLACE_DATABASE_URL="$MARKETPLACE_DATABASE_URL")
fi

log "starting $binary on $base (data in $work/data)"
env "${server_env[@]}" "$binary" serve --listen "127.0.0.1:$port" --data-dir "$work/data" \
    >"$work/server.log" 2>&1 &
server_pid=$!

for _ in $(seq 1 100); do
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

# ---------------------------------------------------------------- a caller

api() { curl -fsS -H 'Content-Type: application/json' "$@"; }
json_field() { python3 -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }

# The caller: an organization admin, the one role every documented operation may succeed
# for. The fuzzer cannot remove this user (removing yourself is 409 `cannot_remove_self`),
# and revoking API keys leaves its access token alone.
token="$(api -X POST "$base/v1/auth/signup" -d '{"email": "fuzz-admin@example.com",
    "password": "a long fuzzing password", "name": "Fuzz Admin",
    "organization_name": "Fuzzing Ltd"}' | json_field access_token)"
# A second member, so that a one-item page has a next page: a cursor the server issued.
api -X POST "$base/v1/organization/members" -H "Authorization: Bearer $token" \
    -d '{"email": "fuzz-member@example.com", "password": "another fuzzing password",
         "name": "Fuzz Member", "role": "member"}' >/dev/null
cursor="$(api "$base/v1/organization/members?limit=1" -H "Authorization: Bearer $token" \
    | json_field next_cursor)"
# The user of the spec's examples, so that its sign-in example signs in.
api -X POST "$base/v1/auth/signup" -d '{"email": "ada@example.com",
    "password": "correct horse battery staple", "name": "Ada Lovelace",
    "organization_name": "Analytical Engines Ltd"}' >/dev/null

# ---------------------------------------------------------------- hooks

# Some rules of the contract make a request valid or not by what was sent before, which no
# schema can say; without these hooks `positive_data_acceptance` would flag schema-valid
# requests that the contract itself calls client errors, and success paths would go untested:
# - an Idempotency-Key reused on the same path with a different request is 422
#   `idempotency_key_reused`: when a generated key would be such a reuse, it gets a unique
#   suffix (a key reused with the same request still goes out as is, and is replayed);
# - `cursor` is opaque, and only a cursor the server issued is valid (422 otherwise): a
#   non-empty cursor in schema-valid query parameters becomes one the server issued;
# - a refresh token is valid once, and only if the server issued it: one shaped like a
#   refresh token (`mkt_rt_…`, as the spec's example) that the server never issued becomes
#   an unspent one the server issued during the run (spent ones are left alone: reusing
#   one must be 401);
# - an e-mail address can be registered once (409 `email_taken`), and generated requests
#   repeat a few addresses (the spec's examples above all): an address is sent as is twice
#   (the second time meets 409), after that it gets a unique `+tag`, so that sign-up and
#   new members mostly succeed and their success responses are checked.
# Negative (schema-invalid) cases are left alone, so their rejection is still checked.
mkdir -p "$work/hooks"
cat >"$work/hooks/marketplace_hooks.py" <<'PY'
import itertools
import json
import os
import re

import schemathesis

VALID_KEY = re.compile(r"[\x21-\x7E]{1,255}")
ISSUED_CURSOR = os.environ["MARKETPLACE_ISSUED_CURSOR"]
SESSION_PATHS = {"/v1/auth/signup", "/v1/auth/token", "/v1/auth/refresh"}

_first_use = {}  # (path, Idempotency-Key) -> the request it was first sent with
_suffixes = itertools.count()
_issued_refresh = set()  # every refresh token the server issued during the run
_emails_sent = {}  # e-mail address -> how often a new user was requested with it
_unspent_refresh = []  # those not sent back yet


def _positive(case):
    """Whether the whole case is schema-valid. Only those are touched: editing a negative
    case makes Schemathesis revalidate it, and an auth-less probe could turn positive and
    get the session's Authorization header back."""
    return case.meta is None or case.meta.generation.mode.is_positive


def _fix_cursor(case):
    query = case.query
    if query and query.get("cursor"):
        query["cursor"] = ISSUED_CURSOR


def _fix_refresh_token(case):
    body = case.body
    if case.path != "/v1/auth/refresh" or not isinstance(body, dict):
        return
    token = body.get("refresh_token")
    if not isinstance(token, str) or not token.startswith("mkt_rt_") or token in _issued_refresh:
        return
    if _unspent_refresh:
        body["refresh_token"] = _unspent_refresh.pop()


def _fix_email(case):
    body = case.body
    if case.path not in {"/v1/auth/signup", "/v1/organization/members"} or not isinstance(body, dict):
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


@schemathesis.hook
def before_call(context, case, kwargs):
    if _positive(case):
        _fix_cursor(case)
        _fix_refresh_token(case)
        _fix_email(case)
        _fix_idempotency_key(case)
    if case.path == "/v1/auth/refresh" and isinstance(case.body, dict):
        token = case.body.get("refresh_token")
        if token in _unspent_refresh:
            _unspent_refresh.remove(token)


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

log "schemathesis $SCHEMATHESIS_VERSION: --checks all, seed $seed, $max_examples examples per operation"
# `--include-path-regex .` selects every operation; without an explicit filter Schemathesis
# leaves out the one serving the schema document (GET /openapi.yaml).
PYTHONPATH="$work/hooks${PYTHONPATH:+:$PYTHONPATH}" \
SCHEMATHESIS_HOOKS=marketplace_hooks \
MARKETPLACE_ISSUED_CURSOR="$cursor" \
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
    --report "${SCHEMATHESIS_REPORT:-junit}" \
    --report-dir "${SCHEMATHESIS_REPORT_DIR:-$work/report}" \
    "$@"
