"""API key authentication: does a 401 take the same time whatever the key, and what does a key
check cost? In one process on PostgreSQL (the bench database), through Django's test client and
the whole middleware and DRF stack, GET /api/v1/messages/ with:

  near-miss  a real key with its last character changed  (401)
  unknown    a well-formed key never issued                (401)
  revoked    a real, revoked key                           (401)
  no-key     no Authorization header                       (401)
  valid      a live key of a client with no messages        (200, an empty page)

and clients.authenticate() alone for a valid key. Kinds take turns, in a shuffled order, inside
every round (so load from other processes falls on all of them alike); each round reports the
median per kind and the 1-minute load average. Results: bench/RESULTS-clients.md.

    BENCH_DB=herald_clients_bench .venv/bin/python bench/api_key_auth.py [--rounds 5] [--n 300]
"""

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--n", type=int, default=300, help="requests per kind per round")
    args = parser.parse_args()
    os.environ.setdefault("LOG_LEVEL", "WARNING")  # no request line per call
    common.setup(common.free_port())
    common.reset_tables()

    from django.test import Client as Browser

    from messaging.models import Client
    from messaging.services import clients

    client = Client.objects.create(name="bench", slug="bench-auth")
    valid = clients.create_api_key(client, name="valid").key
    revoked = clients.create_api_key(client, name="revoked")
    clients.revoke_api_key(revoked.api_key)
    near_miss = valid[:-1] + ("A" if valid[-1] != "A" else "B")
    unknown = "hk_live_" + "Q" * 43
    headers = {
        "near-miss": {"HTTP_AUTHORIZATION": f"Bearer {near_miss}"},
        "unknown": {"HTTP_AUTHORIZATION": f"Bearer {unknown}"},
        "revoked": {"HTTP_AUTHORIZATION": f"Bearer {revoked.key}"},
        "no-key": {},
        "valid": {"HTTP_AUTHORIZATION": f"Bearer {valid}"},
    }
    browser = Browser(HTTP_HOST="127.0.0.1")
    expected = {"valid": 200}

    def request(kind):
        started = time.perf_counter()
        r = browser.get("/api/v1/messages/", **headers[kind])
        elapsed = time.perf_counter() - started
        assert r.status_code == expected.get(kind, 401), (kind, r.status_code)
        return elapsed

    def auth_only(_):
        started = time.perf_counter()
        assert clients.authenticate(valid) is not None
        return time.perf_counter() - started

    kinds = [*headers, "authenticate()"]
    for kind in headers:  # warm up connections, caches, code paths
        request(kind)
    print(f"{'round':>5} {'load':>5} " + " ".join(f"{k:>15}" for k in kinds) + "   (median µs)")
    for rnd in range(1, args.rounds + 1):
        samples = {k: [] for k in kinds}
        for _ in range(args.n):
            order = list(headers)
            random.shuffle(order)  # no kind always first (or last) after another's query
            for kind in order:
                samples[kind].append(request(kind))
            samples["authenticate()"].append(auth_only(None))
        load = os.getloadavg()[0]
        medians = {k: statistics.median(v) * 1e6 for k, v in samples.items()}
        print(f"{rnd:>5} {load:>5.2f} " + " ".join(f"{medians[k]:>15.0f}" for k in kinds))


if __name__ == "__main__":
    main()
