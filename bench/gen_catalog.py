#!/usr/bin/env python3
"""Generates a catalog for bench/catalog_search.sh: CSV files of organizations, published
public listings (title, summary, Markdown description, categories, tags, search document as
`api::domain::catalog::listing::search_document` builds it, and `search_labels`), their labels and one active
offer each, plus the query paths for wrk.

    gen_catalog.py OUT_DIR [LISTINGS]

Words follow a Zipf law over a 5,000-word vocabulary (a few real words first, then
pronounceable made-up ones), so some query words match nearly every listing and most match
a few hundred: the mix a real catalog's search sees. Deterministic (fixed seed).
"""

import bisect
import csv
import itertools
import json
import os
import random
import sys
from datetime import datetime, timedelta

SEED = 20261125
VOCABULARY = 5000
PROVIDERS = 100
CATEGORIES = [
    "finance", "weather", "geospatial", "retail", "health", "energy", "transport",
    "telecom", "agriculture", "media", "government", "sports",
]
REAL_WORDS = """data daily market prices weather global hourly historical records sales
stock energy traffic retail satellite images sensor climate health open survey census
trade shipping airline flights hotel crypto bond equity fund index forecast demand supply
power grid solar wind rainfall temperature soil crop yield farm water river ocean port
vessel container freight road rail transit mobility footfall store product catalog
reviews sentiment news social media web search clicks ads campaign audience consumer
household income employment jobs salary housing rent mortgage property land parcel
building permit zoning address postal boundary population migration election vote
court patent company filings earnings revenue invoice payments fraud risk credit
insurance claims hospital clinic drug trial genome protein chemical emissions carbon
""".split()

SYLLABLES = ["ka", "lo", "mi", "ta", "re", "su", "no", "vi", "pe", "da", "zu", "ro",
             "bi", "fa", "ne", "go", "shi", "tor", "lan", "mek", "quo", "ber", "sen", "dal"]


def vocabulary(rng):
    words, seen = list(REAL_WORDS), set(REAL_WORDS)
    while len(words) < VOCABULARY:
        w = "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 4)))
        if w not in seen:
            seen.add(w)
            words.append(w)
    return words


def new_id(rng, prefix):
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
    return prefix + "_" + "".join(rng.choices(alphabet, k=22))


def ts(t):
    return t.strftime("%Y-%m-%d %H:%M:%S.%f")


def main():
    out = sys.argv[1]
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 100_000
    os.makedirs(out, exist_ok=True)
    rng = random.Random(SEED)
    words = vocabulary(rng)
    cum = list(itertools.accumulate(1.0 / (r + 1) for r in range(len(words))))

    def sample(k):
        return rng.choices(words, cum_weights=cum, k=k)

    tag_words = words[:400]
    tag_cum = cum[:400]
    start = datetime(2025, 1, 1)
    orgs = [(new_id(rng, "org"), f"Provider {i:03d}") for i in range(PROVIDERS)]
    with open(f"{out}/organizations.csv", "w", newline="") as f:
        w = csv.writer(f)
        for oid, name in orgs:
            w.writerow([oid, name, "customer", "", "", ts(start)])

    with open(f"{out}/listings.csv", "w", newline="") as fl, \
            open(f"{out}/labels.csv", "w", newline="") as fb, \
            open(f"{out}/offers.csv", "w", newline="") as fo:
        wl, wb, wo = csv.writer(fl), csv.writer(fb), csv.writer(fo)
        for n in range(count):
            lid = new_id(rng, "lst")
            org = orgs[n % PROVIDERS][0]
            title = " ".join(sample(rng.randint(3, 6))).capitalize()
            summary = " ".join(sample(rng.randint(10, 20))).capitalize() + "."
            paragraphs = []
            for _ in range(rng.randint(2, 4)):
                paragraphs.append(" ".join(sample(rng.randint(15, 30))).capitalize() + ".")
            description = "## Overview\n\n" + "\n\n".join(paragraphs) + \
                "\n\n- updated " + rng.choice(["daily", "hourly", "weekly", "monthly"]) + \
                "\n- format: **csv** and *parquet*\n"
            cats = sorted(set(rng.sample(CATEGORIES, rng.randint(1, 2))))
            tags = []
            for t in rng.choices(tag_words, cum_weights=tag_cum, k=rng.randint(2, 5)):
                if t not in tags:
                    tags.append(t)
            created = start + timedelta(seconds=n * 250 + rng.randint(0, 200))
            published = created + timedelta(hours=1)
            document = f"{title}\n{summary}\n{description}\n{' '.join(tags)}"
            # As `schema::search::labels_document` writes them.
            labels = " ".join([f"c{c.encode().hex()}" for c in cats] + [f"t{t.encode().hex()}" for t in tags])
            wl.writerow([lid, org, title, summary, description, json.dumps(cats, separators=(",", ":")),
                         json.dumps(tags, separators=(",", ":")), "public", "published", document, ts(created),
                         ts(published), ts(published), "", labels])
            for c in cats:
                wb.writerow([lid, org, "category", c])
            for t in tags:
                wb.writerow([lid, org, "tag", t])
            wo.writerow([new_id(rng, "ofr"), lid, org, "Standard", "USD", "monthly",
                         rng.choice([0, 1000, 4900, 9900, 25000]), 12, "[]", "[]", 0, 0, 1,
                         0, "active", ts(created), ""])

    # Query paths, one file per variant.
    def q(ws):
        return "+".join(ws)
    qrng = random.Random(SEED + 1)
    common = words[:10]
    mixed = ([words[qrng.randrange(0, 20)] for _ in range(8)]
             + [words[qrng.randrange(20, 200)] for _ in range(12)]
             + [words[qrng.randrange(200, 1000)] for _ in range(12)]
             + [words[qrng.randrange(1000, VOCABULARY)] for _ in range(12)])
    pairs = [[words[qrng.randrange(0, 200)], words[qrng.randrange(0, 1000)]] for _ in range(8)]
    variants = {
        "mixed": [f"/v1/listings?q={w}" for w in mixed] + [f"/v1/listings?q={q(p)}" for p in pairs],
        "common": [f"/v1/listings?q={w}" for w in common],
        "category": [f"/v1/listings?q={w}&category={qrng.choice(CATEGORIES)}" for w in mixed],
        "newest": [f"/v1/listings?q={w}&sort=newest" for w in mixed],
        "tag_title": [f"/v1/listings?tag={t}&sort=title" for t in
                      [words[qrng.randrange(0, 400)] for _ in range(40)]],
        "browse": ["/v1/listings", "/v1/listings?sort=title"]
                  + [f"/v1/listings?category={c}" for c in CATEGORIES],
    }
    # A stream of 20,000 searches, as a search log would have them: words drawn by the same
    # Zipf law as the listings' text (so a few queries recur often and most are rare), one
    # word or two, some with a category, some sorted by date or title.
    zrng = random.Random(SEED + 2)
    zipf = []
    for _ in range(20_000):
        ws = zrng.choices(words, cum_weights=cum, k=1 if zrng.random() < 0.7 else 2)
        path = f"/v1/listings?q={q(ws)}"
        if zrng.random() < 0.25:
            path += f"&category={zrng.choice(CATEGORIES)}"
        r = zrng.random()
        path += "&sort=newest" if r < 0.2 else "&sort=title" if r < 0.3 else ""
        zipf.append(path)
    variants["zipf"] = zipf
    # Words for one-at-a-time requests, from very frequent to rare.
    with open(f"{out}/single-words.txt", "w") as f:
        f.write("\n".join([words[r] for r in (2000, 400, 100, 30, 5)]) + "\n")
    for name, paths in variants.items():
        with open(f"{out}/paths-{name}.txt", "w") as f:
            f.write("\n".join(paths) + "\n")


if __name__ == "__main__":
    main()
