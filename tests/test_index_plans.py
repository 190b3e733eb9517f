"""The index diet (migration 0013, docs/indexes.md): each partial or reordered index is still
the one PostgreSQL chooses for the query it exists for. A partial index only serves a query
whose WHERE clause the planner can prove implies the index's predicate; these plans fail if a
query or a predicate drifts apart."""

import uuid

import pytest
from django.db import connection

from messaging.models import Client, Message, MessagePart, StatusEvent

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("on_postgres")]


@pytest.fixture
def rows():
    """Mostly outbound messages without an error or a client reference, as in production."""
    client = Client.objects.default()
    messages = []
    for n in range(3000):
        rare = n % 100 == 0
        messages.append(
            Message(
                client=client,
                direction="inbound" if rare else "outbound",
                to_number=f"+4477009{n:05d}",
                body="x",
                provider="sandbox",
                provider_message_id=f"pid-{n}",
                status="failed" if rare else "delivered",
                error_code="E1" if rare else "",
                client_reference=f"ref-{n}" if rare else "",
            )
        )
    Message.objects.bulk_create(messages)
    MessagePart.objects.bulk_create(
        MessagePart(message=m, index=0, provider="sandbox", provider_message_id=f"part-{n}")
        for n, m in enumerate(messages)
    )
    StatusEvent.objects.bulk_create(
        StatusEvent(message=m, status="delivered", source="webhook", dedupe_key=f"k-{n}")
        for n, m in enumerate(messages)
    )
    with connection.cursor() as cursor:
        for table in ("messaging_message", "messaging_messagepart", "messaging_statusevent"):
            cursor.execute(f"ANALYZE {table}")
        # Judge the indexes, not the table's size: a sequential scan of 3,000 rows would win.
        cursor.execute("SET LOCAL enable_seqscan = off")
    return messages


def plan(queryset) -> str:
    return queryset.explain()


@pytest.mark.parametrize(
    "name, queryset",
    [
        ("msg_error_created_idx", lambda: Message.objects.filter(error_code="E1")),
        ("msg_error_created_idx", lambda: Message.objects.exclude(error_code="")),
        ("msg_inbound_created_idx", lambda: Message.objects.filter(direction="inbound")),
        ("msg_client_ref_idx", lambda: Message.objects.filter(client_reference="ref-100")),
        ("msg_provider_id_unique", lambda: Message.objects.filter(provider_message_id="pid-7")),
        (
            "msg_provider_id_unique",
            lambda: Message.objects.filter(
                provider="sandbox", direction="outbound", provider_message_id__in=["pid-1", "x"]
            ).order_by(),
        ),
        ("msg_resend_of_idx", lambda: Message.objects.filter(resend_of_id=uuid.uuid4())),
        ("msg_api_key_idx", lambda: Message.objects.filter(api_key_id=1)),
        ("msg_created_by_idx", lambda: Message.objects.filter(created_by_id=1)),
        ("part_provider_id_unique", lambda: MessagePart.objects.filter(provider_message_id="p")),
        (
            "part_provider_id_unique",
            lambda: MessagePart.objects.filter(
                provider="sandbox", provider_message_id__in=["part-1", "part-2"]
            ).order_by(),
        ),
        ("event_dedupe_key_unique", lambda: StatusEvent.objects.filter(dedupe_key__in=["k-1"])),
        ("event_actor_idx", lambda: StatusEvent.objects.filter(actor_id=1)),
        ("event_message_idx", lambda: StatusEvent.objects.filter(message_id=uuid.uuid4())),
    ],
)
def test_the_query_uses_its_index(rows, name, queryset):
    assert name in plan(queryset())


def test_the_error_code_list_reads_the_partial_index(rows):
    """selectors.distinct_error_codes: a loose index scan, `error_code > ''` each step."""
    from messaging import selectors

    assert selectors.distinct_error_codes() == ["E1"]
    with connection.cursor() as cursor:
        cursor.execute(
            "EXPLAIN SELECT error_code FROM messaging_message WHERE error_code > '' "
            "ORDER BY error_code LIMIT 1"
        )
        assert "msg_error_created_idx" in "\n".join(row[0] for row in cursor.fetchall())


def test_dropped_indexes_are_gone(rows):
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT indexname FROM pg_indexes WHERE tablename IN "
            "('messaging_message', 'messaging_messagepart', 'messaging_statusevent')"
        )
        names = {row[0] for row in cursor.fetchall()}
    assert not names & {"msg_provider_msgid_idx", "part_provider_msgid_idx",
                        "msg_direction_created_idx"}  # fmt: skip
    assert not [n for n in names if n.endswith("_like")]  # no LIKE index on dedupe_key
    assert len([n for n in names if n.startswith("messaging_message_")]) == 2  # pkey, client_id


def test_parts_leave_room_for_hot_updates(rows):
    with connection.cursor() as cursor:
        cursor.execute("SELECT reloptions FROM pg_class WHERE relname = 'messaging_messagepart'")
        assert cursor.fetchone()[0] == ["fillfactor=50"]
