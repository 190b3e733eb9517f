"""The message changelist: exact search, filters, a count that never scans the table, a constant
number of queries whatever the rows shown, and the streamed CSV export."""

import csv
import io
import types
from datetime import timedelta

import pytest
from django.db import connection
from django.http import StreamingHttpResponse
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from messaging import selectors
from messaging.admin import pagination as admin_pagination
from messaging.admin.export import _cell
from messaging.models import Message, StatusEvent, WebhookRequest
from tests.admin.conftest import make_message

pytestmark = pytest.mark.django_db
URL = reverse("admin:messaging_message_changelist")


def shown(response):
    return {m.pk for m in response.context["cl"].result_list}


# --- search ------------------------------------------------------------------------------------


@pytest.fixture
def searchable():
    return {
        "number": make_message(to_number="+447911123457"),
        "inbound": make_message(
            direction="inbound",
            status="received",
            from_number="+447911123457",
            to_number="+447700900001",
        ),  # fmt: skip
        "provider_id": make_message(provider_message_id="SM-abc-1"),
        "part": make_message(provider_message_id="vn-1", parts=["vn-1", "vn-2-part"]),
        "reference": make_message(client_reference="order-42"),
        "other": make_message(to_number="+447911123458", client_reference="order-421"),
    }


@pytest.mark.parametrize("typed", ["+447911123457", "+44 7911 123457", "447911123457",
                                   "0044 7911 123457"])  # fmt: skip
def test_search_by_number_in_any_format_matches_to_and_from(superuser_client, searchable, typed):
    response = superuser_client.get(URL, {"q": typed})
    assert shown(response) == {searchable["number"].pk, searchable["inbound"].pk}


@pytest.mark.parametrize(
    "term,key",
    [("SM-abc-1", "provider_id"), ("vn-2-part", "part"), ("order-42", "reference")],
)
def test_search_by_provider_id_part_id_and_reference(superuser_client, searchable, term, key):
    assert shown(superuser_client.get(URL, {"q": term})) == {searchable[key].pk}


def test_search_by_our_id(superuser_client, searchable):
    target = searchable["other"]
    assert shown(superuser_client.get(URL, {"q": str(target.pk)})) == {target.pk}


def test_search_is_exact_not_a_substring(superuser_client, searchable):
    assert shown(superuser_client.get(URL, {"q": "order-4"})) == set()
    assert shown(superuser_client.get(URL, {"q": "7911123"})) == set()


# --- filters -----------------------------------------------------------------------------------


@pytest.fixture
def mixed(settings):
    return {
        "old_failed": make_message(
            status="failed", error_code="absent-subscriber", created_ago=timedelta(days=10)
        ),
        "failed": make_message(status="failed", error_code="30003", provider="twilio"),
        "delivered": make_message(status="delivered"),
        "inbound": make_message(direction="inbound", status="received", from_number="+4479"),
    }


@pytest.mark.parametrize(
    "params,expected",
    [
        ({"status__exact": "failed"}, {"old_failed", "failed"}),
        ({"provider": "twilio"}, {"failed"}),
        ({"direction__exact": "inbound"}, {"inbound"}),
        ({"error_code": "__any__"}, {"old_failed", "failed"}),
        ({"error_code": "__none__"}, {"delivered", "inbound"}),
        ({"error_code": "30003"}, {"failed"}),
        ({"status__exact": "failed", "provider": "sandbox"}, {"old_failed"}),
    ],
)
def test_filters(superuser_client, mixed, params, expected):
    assert shown(superuser_client.get(URL, params)) == {mixed[k].pk for k in expected}


def test_date_range_filter_includes_the_whole_end_day(superuser_client, mixed):
    today = timezone.localdate()
    old_day = today - timedelta(days=10)
    response = superuser_client.get(URL, {"created_from": old_day, "created_to": old_day})
    assert shown(response) == {mixed["old_failed"].pk}
    response = superuser_client.get(URL, {"created_from": today - timedelta(days=1)})
    assert shown(response) == {mixed[k].pk for k in ("failed", "delivered", "inbound")}
    # the form keeps the other filters as hidden inputs
    response = superuser_client.get(URL, {"status__exact": "failed", "created_to": today})
    assert b'type="hidden" name="status__exact" value="failed"' in response.content


def test_bad_date_is_refused_not_a_crash(superuser_client, mixed):
    response = superuser_client.get(URL, {"created_from": "yesterday"})
    assert response.status_code == 302 and "e=1" in response["Location"]


def test_error_code_choices_come_from_the_data(superuser_client, mixed):
    response = superuser_client.get(URL)
    assert b"?error_code=30003" in response.content
    assert b"?error_code=absent-subscriber" in response.content


# --- counting ------------------------------------------------------------------------------------


def test_count_is_capped_and_pages_past_the_cap_still_work(superuser_client, monkeypatch):
    monkeypatch.setattr(admin_pagination.EstimatedCountPaginator, "count_cap", 5)
    rows = [make_message(status="failed") for _ in range(12)]
    with CaptureQueriesContext(connection) as queries:
        response = superuser_client.get(URL, {"status__exact": "failed"})
    assert "more than 5 messages" in response.content.decode()
    counts = [q["sql"] for q in queries if "COUNT(" in q["sql"].upper()]
    assert counts and all("LIMIT 6" in sql for sql in counts), counts
    # four per page: page 3 holds rows 9-12 although the capped count only promises 6 rows
    monkeypatch.setattr(type(response.context["cl"].model_admin), "list_per_page", 4)
    page3 = superuser_client.get(URL, {"status__exact": "failed", "p": 3})
    assert page3.status_code == 200
    assert len(shown(page3)) == 4
    assert shown(page3) <= {m.pk for m in rows}
    page4 = superuser_client.get(URL, {"status__exact": "failed", "p": 4})
    assert page4.status_code == 200 and shown(page4) == set()  # past the end: empty, no error


def test_unfiltered_count_uses_the_estimate(superuser_client, monkeypatch):
    monkeypatch.setattr(selectors, "estimated_row_count", lambda model: 1_000_000)
    make_message()
    with CaptureQueriesContext(connection) as queries:
        response = superuser_client.get(URL)
    assert "about 1,000,000 messages" in response.content.decode()
    assert not [
        q for q in queries if "COUNT(" in q["sql"].upper() and "messaging_message" in q["sql"]
    ]


def test_small_table_is_counted_exactly(superuser_client):
    for _ in range(3):
        make_message()
    response = superuser_client.get(URL)
    assert response.context["cl"].paginator.display_count == "3"


@pytest.mark.postgres
def test_postgres_estimate_is_read_from_pg_class(on_postgres):
    for _ in range(3):
        make_message()
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE messaging_message")
    assert selectors.estimated_row_count(Message) == 3


# --- no N+1 ----------------------------------------------------------------------------------


def _query_count(client, url, params=None):
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url, params or {})
    assert response.status_code == 200
    return len(queries), response


def _rows(n, staff):
    original = make_message(status="failed")
    for i in range(n):
        make_message(
            status=["failed", "delivered", "queued"][i % 3],
            resend_of=original if i % 2 else None,
            created_by=staff,
            price="0.0075",
            currency="EUR",
            parts=[f"p-{n}-{i}"],
            error_code="x" if i % 3 == 0 else "",
        )


@pytest.mark.parametrize("params", [{}, {"status__exact": "failed"}, {"q": "+447911100101"}])
def test_changelist_query_count_is_constant_in_rows_shown(superuser_client, staff, params):
    _rows(3, staff)
    few, response = _query_count(superuser_client, URL, params)
    shown_few = len(response.context["cl"].result_list)
    _rows(30, staff)
    many, response = _query_count(superuser_client, URL, params)
    if not params.get("q"):
        assert len(response.context["cl"].result_list) > shown_few
    assert few == many


def test_evidence_changelists_query_count_is_constant(superuser_client, staff):
    def add(n):
        for _ in range(n):
            message = make_message()
            stored = WebhookRequest.objects.create(
                provider="sandbox", kind="status", method="POST", path="/w/", authenticated=True
            )
            StatusEvent.objects.create(
                message=message, status="delivered", source="admin", actor=staff,
                webhook_request=stored,
            )  # fmt: skip

    add(2)
    events_few, _ = _query_count(
        superuser_client, reverse("admin:messaging_statusevent_changelist")
    )
    hooks_few, _ = _query_count(
        superuser_client, reverse("admin:messaging_webhookrequest_changelist")
    )
    add(25)
    events_many, _ = _query_count(
        superuser_client, reverse("admin:messaging_statusevent_changelist")
    )
    hooks_many, _ = _query_count(
        superuser_client, reverse("admin:messaging_webhookrequest_changelist")
    )
    assert (events_few, hooks_few) == (events_many, hooks_many)


# --- CSV export ------------------------------------------------------------------------------


def test_csv_export_streams_the_filtered_changelist(superuser_client, mixed):
    response = superuser_client.get(
        reverse("admin:messaging_message_export"), {"status__exact": "failed"}
    )
    assert isinstance(response, StreamingHttpResponse)
    assert response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert {r["id"] for r in rows} == {str(mixed["failed"].pk), str(mixed["old_failed"].pk)}
    assert rows[0]["id"] == str(mixed["failed"].pk)  # the changelist's order: newest first
    assert {r["error_code"] for r in rows} == {"30003", "absent-subscriber"}


def export(client, params=None):
    response = client.get(reverse("admin:messaging_message_export"), params or {})
    assert isinstance(response, StreamingHttpResponse)
    return list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))


def test_csv_export_has_error_text_username_and_client(make_staff):
    viewer = make_staff("view_message", username="exporter")
    make_message(
        status="failed", error_code="30003", error_text="=Unreachable handset",
        created_by=viewer.user, client_reference="exp-1",
    )  # fmt: skip
    [row] = export(viewer, {"q": "exp-1"})
    assert row["error_text"] == "'=Unreachable handset"  # formula-escaped like every cell
    assert row["created_by"] == "exporter"  # the username, not a user id
    assert row["client"] == "default"
    assert "body" not in row  # the text needs its own permission


def test_csv_export_body_behind_its_own_permission(make_staff):
    make_message(body="@secret text", client_reference="exp-2")
    with_body = make_staff("view_message", "export_message_body")
    [row] = export(with_body, {"q": "exp-2"})
    assert row["body"] == "'@secret text"
    [row] = export(make_staff("view_message"), {"q": "exp-2"})
    assert "body" not in row


def test_csv_export_honours_search(superuser_client, searchable):
    response = superuser_client.get(reverse("admin:messaging_message_export"), {"q": "order-42"})
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert [r["client_reference"] for r in rows] == ["order-42"]


def test_export_rows_are_plain_tuples_from_an_iterator():
    make_message()
    rows = selectors.export_rows(Message.objects.all(), chunk_size=10)
    assert isinstance(rows, types.GeneratorType)  # .iterator(): nothing is loaded up front
    row = next(rows)
    assert isinstance(row, tuple) and len(row) == len(selectors.EXPORT_COLUMNS)
    rows = selectors.export_rows(Message.objects.all(), selectors.export_columns(with_body=True))
    assert next(rows)[-1] == "Hello"


def test_export_link_carries_the_current_filters(superuser_client, mixed):
    response = superuser_client.get(URL, {"status__exact": "failed", "provider": "twilio"})
    assert b"export.csv?provider=twilio&amp;status__exact=failed" in response.content


def test_csv_cells_are_safe_from_formula_injection():
    assert _cell("+447911123457") == "+447911123457"  # a number stays a number
    assert _cell("=HYPERLINK(1)") == "'=HYPERLINK(1)"
    assert _cell("+SUM(A1)") == "'+SUM(A1)"
    assert _cell("@cmd") == "'@cmd"
    assert _cell(None) == ""


def test_export_needs_view_permission(make_staff):
    assert make_staff().get(reverse("admin:messaging_message_export")).status_code == 403


def test_client_column_filter_and_search(superuser_client):
    from messaging.models import Client

    shop = Client.objects.create(name="Shop", slug="shop")
    mine = make_message(client=shop)
    make_message()
    response = superuser_client.get(URL, {"client": "shop"})
    assert shown(response) == {mine.pk}
    assert shown(superuser_client.get(URL, {"q": "shop"})) == {mine.pk}
    html = superuser_client.get(URL).content.decode()
    assert "column-client_name" in html and ">shop<" in html
