"""Retention at scale: `purge_payloads`' body erasure over many expired messages on PostgreSQL.

    BENCH_DB=herald_ops_bench .venv/bin/python bench/retention.py --rows 200000

Seeds --rows delivered messages created 40 days ago, each with two events carrying a raw
payload (as a send response and a receipt do), plus 10% recent ones that must be kept; then
runs the erasure with RETENTION_BODY_DAYS=30 and prints rows per second, the batch count, and
the plan of the batch query (it must use msg_body_kept_idx). Then a second run, which must find
nothing and take about no time (it does not rescan erased rows).
"""

import argparse
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench import common  # noqa: E402


def seed(rows: int):
    from django.db import connection

    from messaging.models import Client

    client_id = Client.objects.default().pk
    with connection.cursor() as cursor:
        for start in range(0, rows, 20000):
            n = min(20000, rows - start)
            ids = [str(uuid.uuid4()) for _ in range(n)]
            cursor.execute(
                """
                INSERT INTO messaging_message (id, client_id, direction, to_number, from_number,
                  body, provider, client_reference, metadata, status, error_code, error_text,
                  segments, encoding, currency, attempts, lease_owner, resend_reason,
                  created_at, updated_at, sent_at, completed_at)
                SELECT u::uuid, %s, 'outbound', '+447911123457', '', 'your code is 918273',
                  'sandbox', '', '{}', 'delivered', '', '', 1, 'GSM-7', '', 1, '', '',
                  now() - CASE WHEN random() < 0.1 THEN interval '5 days'
                               ELSE interval '40 days' END,
                  now(), now() - interval '40 days', now() - interval '40 days'
                FROM unnest(%s::text[]) AS u
                """,
                [client_id, ids],
            )
            cursor.execute(
                """
                INSERT INTO messaging_statusevent (message_id, status, provider_status, error_code,
                  error_text, part_id, received_at, source, applied, note, raw_payload)
                SELECT u::uuid, s, '', '', '', '', now(), 'webhook', true, '',
                  '{"text": "your code is 918273", "status": "DELIVERED"}'::jsonb
                FROM unnest(%s::text[]) AS u, unnest(array['sent', 'delivered']) AS s
                """,
                [ids],
            )
        cursor.execute("ANALYZE messaging_message; ANALYZE messaging_statusevent")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--batch-size", type=int, default=2000)
    args = parser.parse_args()
    common.setup(common.free_port(), RETENTION_BODY_DAYS="30")
    common.reset_tables()
    from django.db import connection
    from django.utils import timezone

    from messaging.services import retention

    started = time.perf_counter()
    seed(args.rows)
    print(f"seeded {args.rows} messages and {2 * args.rows} events in "
          f"{time.perf_counter() - started:.1f} s")  # fmt: skip
    cutoff = timezone.now() - timezone.timedelta(days=30)
    query = retention._expired(cutoff, [None, *retention.retention_groups()[30]])
    sql, params = query.order_by("created_at").values_list("id")[:2000].query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN " + sql, params)
        print("plan:", " | ".join(row[0].strip() for row in cursor.fetchall()[:4]))
    batches = []
    started = time.perf_counter()
    done = retention.erase_bodies(batch_size=args.batch_size, progress=batches.append)
    elapsed = time.perf_counter() - started
    print(f"erased {done['bodies_erased']} bodies, {done['event_payloads_erased']} event "
          f"payloads in {len(batches)} batches: {elapsed:.1f} s, "
          f"{done['bodies_erased'] / elapsed:.0f} messages/s")  # fmt: skip
    started = time.perf_counter()
    again = retention.erase_bodies(batch_size=args.batch_size)
    print(f"second run: {again['bodies_erased']} erased in {time.perf_counter() - started:.2f} s")
    common.reset_tables()


if __name__ == "__main__":
    main()
