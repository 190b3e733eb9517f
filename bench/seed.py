"""Seed the bench database with N realistic messages in SQL (generate_series), not the ORM: a
million rows take seconds this way, minutes through model instances.

The rows look like production's: created evenly over the last DAYS days (90 by default, the
raw-payload retention period) in insertion order,
2% inbound, five providers, mostly delivered with a tail of failures carrying provider error
codes, prices in two currencies, sent_at/completed_at for receipt latency, one part per sent
message, plus some webhook requests that failed authentication and opt-out history.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/herald_bench_admin \\
        .venv/bin/python bench/seed.py --messages 1000000
"""

import argparse
import time

DAYS = 90
PROVIDERS = ["sandbox", "twilio", "sinch", "vonage-sms", "infobip"]

# One statement: i -> one message. `r` is one random draw per row for the status, `h` a
# deterministic hash of i for everything that must not depend on the draw.
MESSAGES_SQL = """
WITH rows AS (
    SELECT i,
           random() AS r,
           (hashtext(i::text)::bigint & 2147483647) AS h,
           now() - (%(span)s::interval) * ((%(n)s - i)::float / %(n)s) AS created
    FROM generate_series(1, %(n)s) AS i
), shaped AS (
    SELECT *,
           CASE WHEN h %% 50 = 0 THEN 'inbound' ELSE 'outbound' END AS direction,
           (ARRAY['sandbox','twilio','sinch','vonage-sms','infobip'])[1 + (h / 7) %% 5] AS provider,
           CASE
               WHEN h %% 50 = 0 THEN 'received'
               WHEN r < 0.80 THEN 'delivered'
               WHEN r < 0.86 THEN 'failed'
               WHEN r < 0.88 THEN 'expired'
               WHEN r < 0.89 THEN 'rejected'
               WHEN r < 0.90 THEN 'unknown'
               WHEN r < 0.96 THEN 'sent'
               WHEN r < 0.99 THEN 'queued'
               ELSE 'sending'
           END AS status
    FROM rows
)
INSERT INTO messaging_message (
    id, direction, to_number, from_number, body, provider, provider_message_id,
    client_reference, metadata, status, error_code, error_text, segments, encoding, price,
    currency, attempts, next_attempt_at, lease_until, lease_owner, send_at, sent_at,
    completed_at, resend_of_id, resend_reason, created_by_id, created_at, updated_at,
    client_id, callback_url, routed
)
SELECT
    gen_random_uuid(),
    direction,
    CASE WHEN direction = 'inbound' THEN '+447700900000'
         ELSE '+447911' || lpad((i %% 500000)::text, 6, '0') END,
    CASE WHEN direction = 'inbound' THEN '+447911' || lpad((i %% 500000)::text, 6, '0')
         ELSE '' END,
    'Benchmark message ' || i,
    provider,
    CASE WHEN status IN ('queued', 'sending') THEN NULL ELSE md5(i::text) END,
    CASE WHEN h %% 3 = 0 THEN 'ref-' || i ELSE '' END,
    '{}'::jsonb,
    status,
    CASE WHEN status IN ('failed', 'expired', 'rejected')
         THEN (ARRAY['absent-subscriber','ttl-expired','invalid-destination','30003','30005',
                     '30006','30007','EC_UNKNOWN_SUBSCRIBER','EC_ABSENT_SUBSCRIBER','1','5',
                     '402','8','22','12'])[1 + (h / 11) %% 15]
         ELSE '' END,
    '',
    1 + (h %% 10 = 0)::int,
    'GSM-7',
    CASE WHEN status IN ('delivered', 'sent', 'failed', 'expired') AND h %% 4 <> 0
         THEN 0.0075 * (1 + (h %% 10 = 0)::int) END,
    CASE WHEN status IN ('delivered', 'sent', 'failed', 'expired') AND h %% 4 <> 0
         THEN CASE WHEN provider = 'twilio' THEN 'USD' ELSE 'EUR' END ELSE '' END,
    CASE WHEN status = 'queued' THEN 0 ELSE 1 END,
    CASE WHEN status = 'queued' THEN created END,
    NULL,
    '',
    NULL,
    CASE WHEN status IN ('queued', 'sending', 'received') THEN NULL
         ELSE created + interval '200 milliseconds' END,
    CASE WHEN status IN ('delivered', 'failed', 'expired', 'rejected', 'unknown')
         -- a skewed latency: mostly a few seconds, a long tail up to minutes
         THEN created + interval '200 milliseconds'
              + make_interval(secs => 0.5 + 4 * r + 120 * power(((h / 13) %% 1000) / 1000.0, 8))
         WHEN status = 'received' THEN created END,
    NULL,
    '',
    NULL,
    created,
    created,
    CASE WHEN direction = 'outbound'
         THEN (SELECT id FROM messaging_client WHERE slug = 'default') END,
    '',
    false
FROM shaped
"""

PARTS_SQL = """
INSERT INTO messaging_messagepart (message_id, index, provider, provider_message_id, status,
                                   error_code)
SELECT id, 0, provider, provider_message_id,
       CASE WHEN status = 'unknown' THEN 'sent' ELSE status END, error_code
FROM messaging_message
WHERE direction = 'outbound' AND provider_message_id IS NOT NULL
"""

WEBHOOKS_SQL = """
INSERT INTO messaging_webhookrequest (provider, kind, received_at, method, path, query_string,
    headers, body, remote_addr, authenticated, auth_error, state, error, traceback,
    report_count, response_status, processed_at)
SELECT (ARRAY['sandbox','twilio','sinch','vonage-sms','infobip'])[1 + i %% 5], 'status',
       now() - (%(span)s::interval) * random(), 'POST', '/webhooks/x/status/', '', '{}'::jsonb,
       convert_to('{"status":"delivered"}', 'UTF8'), '203.0.113.7',
       i %% 10 <> 0, CASE WHEN i %% 10 = 0 THEN 'signature mismatch' ELSE '' END,
       CASE WHEN i %% 10 = 0 THEN 'unauthenticated' ELSE 'processed' END, '', '',
       CASE WHEN i %% 10 = 0 THEN 0 ELSE 1 END, CASE WHEN i %% 10 = 0 THEN 401 ELSE 200 END,
       now()
FROM generate_series(1, %(webhooks)s) AS i
"""

OPTOUTS_SQL = """
INSERT INTO messaging_optoutchange (phone_number, action, keyword, reason, created_at)
SELECT '+447911' || lpad((i * 7 %% 500000)::text, 6, '0'),
       CASE WHEN i %% 5 = 0 THEN 'opt_in' ELSE 'opt_out' END, 'STOP', 'inbound keyword',
       now() - (%(span)s::interval) * random()
FROM generate_series(1, %(optouts)s) AS i;
INSERT INTO messaging_optout (phone_number, keyword, created_at)
SELECT DISTINCT phone_number, 'STOP', now() FROM messaging_optoutchange WHERE action = 'opt_out'
"""

TABLES = (
    "messaging_messagepart",
    "messaging_statusevent",
    "messaging_unmatchedreport",
    "messaging_idempotencykey",
    "messaging_optoutchange",
    "messaging_optout",
    "messaging_webhookrequest",
    "messaging_message",
)


def reset(cursor):
    cursor.execute("TRUNCATE " + ", ".join(TABLES) + " CASCADE")


def seed(n: int, *, days: int = DAYS, parts: bool = True, log=print) -> dict:
    """Replace the messaging tables' contents with n messages (and their side tables), then
    VACUUM ANALYZE so the planner's statistics and the visibility map match the data, as
    autovacuum would leave them in production. Returns the seconds each step took."""
    from django.db import connection

    params = {
        "n": n,
        "span": f"{days} days",
        "webhooks": max(100, n // 100),
        "optouts": max(50, n // 200),
    }
    from messaging.models import Client

    Client.objects.default()  # outbound rows belong to it (MESSAGES_SQL looks it up)
    timings = {}
    with connection.cursor() as cursor:
        for name, sql in (
            ("reset", None),
            ("messages", MESSAGES_SQL),
            ("parts", PARTS_SQL if parts else ""),
            ("webhooks", WEBHOOKS_SQL),
            ("optouts", OPTOUTS_SQL),
        ):
            started = time.perf_counter()
            if sql is None:
                reset(cursor)
            elif sql:
                cursor.execute(sql, params)
            timings[name] = round(time.perf_counter() - started, 2)
            log(f"  seed {name}: {timings[name]} s")
    started = time.perf_counter()
    with connection.cursor() as cursor:
        for table in TABLES:
            cursor.execute(f"VACUUM ANALYZE {table}")
    timings["vacuum_analyze"] = round(time.perf_counter() - started, 2)
    log(f"  vacuum analyze: {timings['vacuum_analyze']} s")
    return timings


def main():
    import os
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from bench.admin_changelist import configure

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=DAYS)
    args = parser.parse_args()
    configure(os.environ.get("DATABASE_URL", ""))
    seed(args.messages, days=args.days)


if __name__ == "__main__":
    main()
