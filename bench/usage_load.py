#!/usr/bin/env python3
"""Load generator for bench/usage_ingest.sh: usage-event batches over HTTP, and the same
rows as plain SQL for the direct-insert limit.

    usage_load.py prepare DIR --subscriptions S1,S2,.. --clients 8 --batches 50 [--batch 1000]
                  [--duplicates 0.1] [--metric queries] [--direct-org ORG]
    usage_load.py send DIR --url http://127.0.0.1:PORT --token TOKEN --clients 8
    usage_load.py direct DIR --clients 8 [--writers 1] (--sqlite FILE | --postgres URL)

`prepare` writes, per client, its request bodies (`client-N.jsonl`, one batch a line) and the
same events as SQL (`direct-N.sql`: per batch, BEGIN; one multi-row INSERT ... ON CONFLICT
DO NOTHING; COMMIT), with organization_id set to --direct-org so the direct rows never
collide with the ones sent over HTTP. In each batch a fraction (--duplicates) of the events
repeat, with the same content, events the same client sent in its previous batch (in the
first batch: earlier events of that batch), so the server counts them as duplicates.
Timestamps start at the moment of `prepare` (after the subscriptions became active) and step
by one microsecond, so they fall inside the subscriptions' active windows.

`send` runs one process per client, each posting its batches one after another over one
keep-alive connection, all released at once; prints a JSON summary (wall seconds, events
sent, accepted, duplicates, errors, request latency percentiles).

`direct` runs one `sqlite3` or `psql` process per client over its SQL file, all at once;
prints a JSON summary (wall seconds, events).
"""

import argparse
import http.client
import json
import multiprocessing
import os
import random
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from urllib.parse import urlparse


def prepare(a):
    os.makedirs(a.dir, exist_ok=True)
    subs = a.subscriptions.split(",")
    rng = random.Random(42)
    t0 = datetime.now(timezone.utc).replace(tzinfo=None)
    tick = 0
    received = t0.strftime("%Y-%m-%d %H:%M:%S.%f")
    total = 0
    for c in range(a.clients):
        previous = []
        with open(f"{a.dir}/client-{c}.jsonl", "w") as fb, open(f"{a.dir}/direct-{c}.sql", "w") as fs:
            for b in range(a.batches):
                dup_count = int(a.batch * a.duplicates)
                fresh = []
                for i in range(a.batch - dup_count):
                    at = t0 + timedelta(microseconds=tick)
                    tick += 1
                    fresh.append({
                        "id": f"ev-{c}-{b}-{i}",
                        "subscription_id": rng.choice(subs),
                        "metric": a.metric,
                        "quantity": rng.randint(1, 1000),
                        "timestamp": at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                    })
                pool = previous if previous else fresh
                dups = [pool[rng.randrange(len(pool))] for _ in range(dup_count)]
                events = fresh + dups
                rng.shuffle(events)
                previous = fresh
                total += len(events)
                fb.write(json.dumps({"events": events}, separators=(",", ":")) + "\n")
                rows = ",\n".join(
                    "('{}','{}','{}','{}',{},'{}','{}','{}')".format(
                        a.direct_org, e["id"], e["subscription_id"], e["metric"], e["quantity"],
                        e["timestamp"][:-1].replace("T", " "), e["timestamp"][:10], received)
                    for e in events)
                fs.write("BEGIN;\nINSERT INTO usage_events (organization_id, id, subscription_id, "
                         "metric, quantity, occurred_at, day, received_at) VALUES\n" + rows +
                         "\nON CONFLICT (organization_id, id) DO NOTHING;\nCOMMIT;\n")
    print(json.dumps({"events": total}))


def percentile(values, p):
    if not values:
        return 0.0
    values = sorted(values)
    k = min(len(values) - 1, max(0, int(round(p / 100.0 * len(values) + 0.5)) - 1))
    return values[k]


def client(args):
    path, url, token, barrier, results = args
    bodies = [line.encode() for line in open(path) if line.strip()]
    u = urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=120)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    sent = accepted = duplicates = errors = 0
    latencies = []
    first_error = None
    conn.connect()
    barrier.wait()
    for body in bodies:
        t = time.perf_counter()
        conn.request("POST", "/v1/usage-events", body, headers)
        r = conn.getresponse()
        data = r.read()
        latencies.append(time.perf_counter() - t)
        n = body.count(b'"id":')
        sent += n
        if r.status == 200:
            doc = json.loads(data)
            accepted += doc["accepted"]
            duplicates += doc["duplicates"]
        else:
            errors += 1
            if first_error is None:
                first_error = f"{r.status} {data[:300]!r}"
    conn.close()
    results.put({"sent": sent, "accepted": accepted, "duplicates": duplicates,
                 "errors": errors, "latencies": latencies, "first_error": first_error})


def run_parallel(target, argsets):
    """Starts one process per argument set, releases them together, returns (wall, results)."""
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(len(argsets) + 1)
    results = ctx.Queue()
    procs = [ctx.Process(target=target, args=((*a, barrier, results),)) for a in argsets]
    for p in procs:
        p.start()
    barrier.wait()
    t = time.perf_counter()
    out = [results.get() for _ in procs]
    wall = time.perf_counter() - t
    for p in procs:
        p.join()
    return wall, out


def send(a):
    argsets = [(f"{a.dir}/client-{c}.jsonl", a.url, a.token) for c in range(a.clients)]
    wall, out = run_parallel(client, argsets)
    lat = [x for r in out for x in r["latencies"]]
    summary = {
        "wall_s": wall,
        "sent": sum(r["sent"] for r in out),
        "accepted": sum(r["accepted"] for r in out),
        "duplicates": sum(r["duplicates"] for r in out),
        "errors": sum(r["errors"] for r in out),
        "first_error": next((r["first_error"] for r in out if r["first_error"]), None),
        "requests": len(lat),
        "p50_ms": percentile(lat, 50) * 1000,
        "p95_ms": percentile(lat, 95) * 1000,
        "max_ms": max(lat) * 1000 if lat else 0,
    }
    summary["events_per_s"] = summary["sent"] / wall
    print(json.dumps(summary))


def direct_client(args):
    path, command, barrier, results = args
    with open(path, "rb") as f:
        sql = f.read()
    barrier.wait()
    p = subprocess.run(command, input=sql, capture_output=True)
    results.put({"rc": p.returncode, "stderr": p.stderr.decode()[-500:]})


def direct(a):
    if a.sqlite:
        # The server's settings: WAL (kept in the file), synchronous NORMAL, foreign keys.
        command = ["sqlite3", "-bail", "-cmd", "PRAGMA busy_timeout = 60000",
                   "-cmd", "PRAGMA synchronous = NORMAL", "-cmd", "PRAGMA foreign_keys = ON",
                   a.sqlite]
    else:
        command = ["psql", a.postgres, "-q", "-X", "-v", "ON_ERROR_STOP=1", "-o", "/dev/null"]
    files = [f"{a.dir}/direct-{c}.sql" for c in range(a.clients)]
    if a.writers == 1:
        # One writer: every client's batches, one after another, in one session.
        with open(f"{a.dir}/direct-all.sql", "wb") as out:
            for f in files:
                with open(f, "rb") as inp:
                    out.write(inp.read())
        files = [f"{a.dir}/direct-all.sql"]
    wall, out = run_parallel(direct_client, [(f, command) for f in files])
    bad = [r for r in out if r["rc"] != 0]
    print(json.dumps({"wall_s": wall, "writers": len(files), "errors": len(bad),
                      "first_error": bad[0]["stderr"] if bad else None}))


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="mode", required=True)
    pp = sub.add_parser("prepare")
    pp.add_argument("dir")
    pp.add_argument("--subscriptions", required=True)
    pp.add_argument("--clients", type=int, default=8)
    pp.add_argument("--batches", type=int, default=50)
    pp.add_argument("--batch", type=int, default=1000)
    pp.add_argument("--duplicates", type=float, default=0.1)
    pp.add_argument("--metric", default="queries")
    pp.add_argument("--direct-org", default="org_direct_insert_bench")
    ps = sub.add_parser("send")
    ps.add_argument("dir")
    ps.add_argument("--url", required=True)
    ps.add_argument("--token", required=True)
    ps.add_argument("--clients", type=int, default=8)
    pd = sub.add_parser("direct")
    pd.add_argument("dir")
    pd.add_argument("--clients", type=int, default=8)
    pd.add_argument("--writers", type=int, default=8, help="8: one per client; 1: all in one")
    pd.add_argument("--sqlite")
    pd.add_argument("--postgres")
    a = p.parse_args()
    {"prepare": prepare, "send": send, "direct": direct}[a.mode](a)


if __name__ == "__main__":
    sys.exit(main())
