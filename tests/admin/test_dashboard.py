"""The dashboard's figures against a small dataset whose answers are worked out by hand, and
the page that draws them."""

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone

from messaging import selectors
from messaging.models import OptOut, OptOutChange, WebhookRequest
from tests.admin.conftest import make_message

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)
AN_HOUR_AGO = NOW - timedelta(hours=1)  # 2026-01-15 11:00, the 15th's bucket
TEN_DAYS_AGO = NOW - timedelta(days=10)


def delivered(provider, latency, price=None, currency="", created_at=AN_HOUR_AGO):
    sent = created_at + timedelta(seconds=1)
    return make_message(
        provider=provider, status="delivered", created_at=created_at, sent_at=sent,
        completed_at=sent + timedelta(seconds=latency), price=price, currency=currency,
    )  # fmt: skip


@pytest.fixture
def dataset():
    for latency in (1, 2, 3, 10):
        delivered("sandbox", latency, price=Decimal("0.01"), currency="EUR")
    make_message(provider="sandbox", status="failed", error_code="absent-subscriber",
                 created_at=AN_HOUR_AGO)  # fmt: skip
    make_message(provider="sandbox", status="expired", error_code="ttl-expired",
                 created_at=AN_HOUR_AGO)  # fmt: skip
    make_message(provider="sandbox", status="queued", created_at=AN_HOUR_AGO)
    for latency in (5, 7):
        delivered("twilio", latency, price=Decimal("0.0075"), currency="USD")
    for _ in range(2):
        make_message(provider="twilio", status="failed", error_code="30003",
                     price=Decimal("0.0075"), currency="USD", created_at=AN_HOUR_AGO)  # fmt: skip
    make_message(provider="twilio", status="sent", created_at=AN_HOUR_AGO)
    make_message(direction="inbound", status="received", from_number="+447911123457",
                 created_at=AN_HOUR_AGO)  # fmt: skip
    # Outside 7 days, inside 30: only the 30-day view counts it.
    delivered("sandbox", 100, created_at=TEN_DAYS_AGO)
    # Opt-outs: two on the list now; three opt-outs and one opt-in in the period, one older.
    OptOut.objects.create(phone_number="+447911000001")
    OptOut.objects.create(phone_number="+447911000002")
    for number, action in (("1", "opt_out"), ("2", "opt_out"), ("3", "opt_out"), ("3", "opt_in")):
        change = OptOutChange.objects.create(phone_number=f"+44791100000{number}", action=action)
        OptOutChange.objects.filter(pk=change.pk).update(created_at=AN_HOUR_AGO)
    old = OptOutChange.objects.create(phone_number="+447911000009", action="opt_out")
    OptOutChange.objects.filter(pk=old.pk).update(created_at=TEN_DAYS_AGO)
    for received in (AN_HOUR_AGO, AN_HOUR_AGO, TEN_DAYS_AGO):
        hook = WebhookRequest.objects.create(
            provider="sandbox", kind="status", method="POST", path="/w/",
            authenticated=False, state="unauthenticated",
        )  # fmt: skip
        WebhookRequest.objects.filter(pk=hook.pk).update(received_at=received)


def test_seven_day_figures(dataset):
    figures = selectors.dashboard("7d", now=NOW)
    assert figures["total"] == 13
    assert {r["status"]: r["count"] for r in figures["by_status"]} == {
        "queued": 1, "sent": 1, "delivered": 6, "failed": 3, "expired": 1, "received": 1,
    }  # fmt: skip
    assert [r["status"] for r in figures["by_status"]][:3] == ["queued", "sent", "delivered"]
    rates = {
        r["provider"]: (r["delivered"], r["outcomes"]) for r in figures["delivery_by_provider"]
    }
    assert rates == {"sandbox": (4, 6), "twilio": (2, 4)}

    series = figures["delivery_rate"]
    assert len(series["labels"]) == 8 and series["labels"][-1] == "2026-01-15"
    assert series["series"]["sandbox"][-1] == 66.67
    assert series["series"]["twilio"][-1] == 50.0
    assert series["series"]["sandbox"][:-1] == [None] * 7  # no outcome those days: gaps

    latency = {r["provider"]: r for r in figures["latency"]}
    assert latency["sandbox"]["n"] == 4
    assert latency["sandbox"]["median"] == pytest.approx(2.5)
    assert latency["sandbox"]["p95"] == pytest.approx(8.95)  # 3 + (10 - 3) * 0.85
    assert latency["twilio"]["median"] == pytest.approx(6.0)
    assert latency["twilio"]["p95"] == pytest.approx(6.9)

    assert figures["top_errors"] == [
        {"provider": "twilio", "error_code": "30003", "n": 2},
        {"provider": "sandbox", "error_code": "absent-subscriber", "n": 1},
        {"provider": "sandbox", "error_code": "ttl-expired", "n": 1},
    ]
    assert figures["spend"] == [
        {"provider": "sandbox", "currency": "EUR", "amount": Decimal("0.04")},
        {"provider": "twilio", "currency": "USD", "amount": Decimal("0.03")},
    ]
    assert figures["optouts"] == {"current": 2, "opted_out": 3, "opted_in": 1}
    assert figures["failed_auth"] == {"sandbox": 2}


def test_thirty_days_include_the_older_message(dataset):
    figures = selectors.dashboard("30d", now=NOW)
    assert figures["total"] == 14
    latency = {r["provider"]: r for r in figures["latency"]}
    assert latency["sandbox"]["n"] == 5
    assert latency["sandbox"]["median"] == pytest.approx(3.0)
    assert figures["optouts"]["opted_out"] == 4
    assert figures["failed_auth"] == {"sandbox": 3}
    day = TEN_DAYS_AGO.strftime("%Y-%m-%d")
    index = figures["delivery_rate"]["labels"].index(day)
    assert figures["delivery_rate"]["series"]["sandbox"][index] == 100.0


def test_twenty_four_hours_are_bucketed_by_hour(dataset):
    figures = selectors.dashboard("24h", now=NOW)
    assert figures["bucket"] == "hour"
    labels = figures["delivery_rate"]["labels"]
    assert labels[0] == "2026-01-14 12:00" and labels[-1] == "2026-01-15 12:00"
    assert figures["delivery_rate"]["series"]["sandbox"][labels.index("2026-01-15 11:00")] == 66.67


def test_an_empty_period():
    figures = selectors.dashboard("24h", now=NOW)
    assert figures["total"] == 0 and figures["latency"] == [] and figures["by_status"] == []


def test_percentile_matches_percentile_cont():
    assert selectors.percentile([], 0.5) is None
    assert selectors.percentile([4.0], 0.95) == 4.0
    assert selectors.percentile([1, 2, 3, 4], 0.5) == 2.5
    assert selectors.percentile([10, 20, 30, 40, 50], 0.95) == pytest.approx(48.0)


@pytest.mark.postgres
def test_postgres_percentiles_agree_with_the_python_fallback(on_postgres, dataset, monkeypatch):
    on_pg = selectors.dashboard("7d", now=NOW)["latency"]
    monkeypatch.setattr(selectors.connection, "vendor", "sqlite")
    in_python = selectors.dashboard("7d", now=NOW)["latency"]
    for a, b in zip(on_pg, in_python, strict=True):
        assert a["provider"] == b["provider"] and a["n"] == b["n"]
        assert a["median"] == pytest.approx(b["median"]) and a["p95"] == pytest.approx(b["p95"])


def test_dashboard_page(superuser_client):
    for latency in (1, 3):
        delivered("sandbox", latency, price=Decimal("0.5"), currency="EUR",
                  created_at=timezone.now() - timedelta(minutes=5))  # fmt: skip
    make_message(status="failed", error_code="absent-subscriber")
    response = superuser_client.get(reverse("admin:messaging_dashboard"), {"period": "24h"})
    assert response.status_code == 200
    html = response.content.decode()
    for canvas in ("chart-delivery-rate", "chart-status", "chart-latency"):
        assert f'<canvas id="{canvas}"' in html
    assert "herald/vendor/chart.umd.js" in html and "herald/dashboard.js" in html
    assert "cdn" not in html.lower()
    charts = json.loads(html.split('id="herald-charts" type="application/json">')[1].split("<")[0])
    assert charts["byStatus"] == {"labels": ["delivered", "failed"], "counts": [2, 1]}
    assert charts["latency"]["median"] == [2.0]
    # The figures are estimates (exact for two values, but the page says what they are).
    assert "within 2 % of the exact values" in html and "≈ 2.0 s" in html
    assert "The handset was off or out of coverage" in html
    assert 'aria-current="true">Last 24 hours' in html


def test_unknown_period_falls_back_to_the_default(superuser_client):
    response = superuser_client.get(reverse("admin:messaging_dashboard"), {"period": "1y"})
    assert response.status_code == 200 and response.context["period"] == "7d"


def test_chart_library_is_shipped_in_static():
    from django.contrib.staticfiles import finders

    path = finders.find("herald/vendor/chart.umd.js")
    assert path, "static/herald/vendor/chart.umd.js is missing"
    with open(path, encoding="utf-8") as handle:
        head = handle.read(200)
    assert "Chart.js v4" in head
    assert finders.find("herald/vendor/chart.js-LICENSE.md")


# --- The latency histogram: estimates against exact percentile_cont ------------------------------


def _histogram(values):
    """(bucket, count, min, max) rows, as the PostgreSQL pass returns them."""
    buckets = {}
    for value in values:
        bucket = selectors.latency_bucket(value)
        count, low, high = buckets.get(bucket, (0, value, value))
        buckets[bucket] = (count + 1, min(low, value), max(high, value))
    return [(bucket, *figures) for bucket, figures in buckets.items()]


def _assert_within_bound(values, fractions=(0.5, 0.95, 0.99, 0.0, 1.0)):
    exact = sorted(values)
    estimates = selectors.percentiles_from_histogram(_histogram(values), fractions)
    for fraction, estimate in zip(fractions, estimates, strict=True):
        truth = selectors.percentile(exact, fraction)
        assert abs(estimate - truth) <= selectors.LATENCY_ERROR_BOUND * abs(truth) + 1e-12, (
            fraction,
            estimate,
            truth,
        )


@pytest.mark.parametrize("seed", range(5))
def test_histogram_percentiles_stay_within_the_documented_bound(seed):
    import random

    rng = random.Random(seed)
    # Skewed like real receipts: mostly seconds, a long tail to minutes, plus ties.
    values = [rng.lognormvariate(1.2, 1.0) for _ in range(20_000)]
    values += [rng.uniform(60, 600) for _ in range(1_000)]
    values += [2.0] * 500
    _assert_within_bound(values)


def test_histogram_percentiles_handle_zero_and_negative_latencies():
    import random

    rng = random.Random(7)
    # A provider whose clock runs behind ours reports receipts "before" we sent.
    values = [rng.uniform(-5, 30) for _ in range(5_000)] + [0.0] * 50
    _assert_within_bound(values, fractions=(0.05, 0.5, 0.95))
    ordered = sorted({*values})
    buckets = [selectors.latency_bucket(v) for v in ordered]
    assert buckets == sorted(buckets)  # bucket ids sort like the values they hold


def test_histogram_is_exact_when_buckets_hold_at_most_two_values():
    # The first and last rank of a bucket are its min and max: small samples are exact.
    values = [1.0, 2.0, 3.0, 10.0, 10.01]
    estimate = selectors.percentiles_from_histogram(_histogram(values), (0.5, 0.95))
    assert estimate == [selectors.percentile(values, 0.5), selectors.percentile(values, 0.95)]
    assert selectors.percentiles_from_histogram([], (0.5,)) == [None]


def test_histogram_estimate_is_not_exact_inside_a_crowded_bucket():
    # Proves the tolerance above is doing work: 1,000 values inside one 2 % bucket, spread
    # unevenly, are interpolated linearly between its min and max, not read back exactly.
    values = [10.0 + 0.14 * (i / 999) ** 4 for i in range(1000)]  # bucket [9.945, 10.144)
    assert len({selectors.latency_bucket(v) for v in values}) == 1
    (median,) = selectors.percentiles_from_histogram(_histogram(values), (0.5,))
    truth = selectors.percentile(sorted(values), 0.5)
    assert median != pytest.approx(truth, rel=1e-4)
    assert abs(median - truth) <= selectors.LATENCY_ERROR_BOUND * truth


@pytest.mark.postgres
def test_postgres_histogram_matches_exact_percentiles(on_postgres):
    import random

    rng = random.Random(11)
    exact = {"sandbox": [], "twilio": []}
    for i in range(600):
        provider = "sandbox" if i % 3 else "twilio"
        latency = round(rng.lognormvariate(1.0, 1.2), 6)  # microsecond resolution, as stored
        delivered(provider, latency)
        exact[provider].append(latency)
    figures = {r["provider"]: r for r in selectors.dashboard("7d", now=NOW)["latency"]}
    for provider, values in exact.items():
        values.sort()
        assert figures[provider]["n"] == len(values)
        for key, fraction in (("median", 0.5), ("p95", 0.95)):
            truth = selectors.percentile(values, fraction)
            bound = selectors.LATENCY_ERROR_BOUND * truth
            assert abs(figures[provider][key] - truth) <= bound, (provider, key)


@pytest.fixture
def two_clients():
    from messaging.models import Client

    other = Client.objects.create(name="Shop", slug="shop")
    recently = timezone.now() - timedelta(hours=1)
    make_message(status="delivered", created_at=recently)
    make_message(status="failed", error_code="x1", client=other, created_at=recently)
    make_message(status="failed", error_code="x1", client=other, created_at=recently)
    return other


def _client_figures(client):
    figures = selectors.dashboard("7d", client=client)
    return figures["total"], {r["status"]: r["count"] for r in figures["by_status"]}


def test_dashboard_per_client(two_clients):
    assert _client_figures(None) == (3, {"delivered": 1, "failed": 2})
    assert _client_figures(two_clients) == (2, {"failed": 2})


def test_dashboard_per_client_on_postgres(on_postgres, two_clients):
    test_dashboard_per_client(two_clients)


def test_dashboard_page_client_filter(superuser_client, two_clients):
    response = superuser_client.get(
        reverse("admin:messaging_dashboard"), {"period": "30d", "client": "shop"}
    )
    assert response.context["client"] == two_clients
    assert response.context["figures"]["total"] == 2
    assert b'<option value="shop" selected>' in response.content
    assert b"period=7d&amp;client=shop" in response.content  # the period links keep it
    unknown = superuser_client.get(reverse("admin:messaging_dashboard"), {"client": "nope"})
    assert unknown.context["client"] is None
