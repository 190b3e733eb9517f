"""The delivery dashboard: an admin page (MessageAdmin.dashboard_view, linked from the admin
index) drawn with the vendored Chart.js from figures computed by aggregate queries in
messaging.selectors."""

from messaging import selectors
from messaging.admin.display import error_meaning
from messaging.models import Client

PERIOD_LABELS = {"24h": "Last 24 hours", "7d": "Last 7 days", "30d": "Last 30 days"}
DASHBOARD_PERMISSION = "messaging.view_dashboard"


def chart_data(figures: dict) -> dict:
    """What the page's script draws, as plain JSON (rendered with json_script)."""
    return {
        "deliveryRate": figures["delivery_rate"],
        "byStatus": {
            "labels": [row["status"] for row in figures["by_status"]],
            "counts": [row["count"] for row in figures["by_status"]],
        },
        "latency": {
            "labels": [row["provider"] for row in figures["latency"]],
            "median": [_round(row["median"]) for row in figures["latency"]],
            "p95": [_round(row["p95"]) for row in figures["latency"]],
        },
    }


def _round(value):
    return None if value is None else round(float(value), 3)


def dashboard_context(request) -> dict:
    """The page's figures for the period and client asked for in the query string."""
    period = request.GET.get("period", selectors.DEFAULT_PERIOD)
    if period not in selectors.PERIODS:
        period = selectors.DEFAULT_PERIOD
    clients = list(Client.objects.only("id", "name", "slug").order_by("name"))
    client = next((c for c in clients if c.slug == request.GET.get("client")), None)
    figures = selectors.dashboard(period, client=client)
    for row in figures["top_errors"]:
        row["meaning"] = error_meaning(row["provider"], row["error_code"])
    return {
        "title": "Delivery dashboard",
        "figures": figures,
        "charts": chart_data(figures),
        "period": period,
        "periods": [(key, PERIOD_LABELS[key]) for key in selectors.PERIODS],
        "period_label": PERIOD_LABELS[period],
        "clients": clients,
        "client": client,
    }
