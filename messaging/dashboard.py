"""The delivery dashboard: an admin page (linked from the admin index) drawn with the vendored
Chart.js from figures computed by aggregate queries in messaging.selectors."""

from django.core.exceptions import PermissionDenied
from django.template.response import TemplateResponse

from messaging import selectors
from messaging.admin_display import error_meaning

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


def dashboard_view(model_admin, request):
    if not request.user.has_perm(DASHBOARD_PERMISSION):
        raise PermissionDenied
    period = request.GET.get("period", selectors.DEFAULT_PERIOD)
    if period not in selectors.PERIODS:
        period = selectors.DEFAULT_PERIOD
    figures = selectors.dashboard(period)
    for row in figures["top_errors"]:
        row["meaning"] = error_meaning(row["provider"], row["error_code"])
    context = {
        **model_admin.admin_site.each_context(request),
        "opts": model_admin.model._meta,
        "title": "Delivery dashboard",
        "figures": figures,
        "charts": chart_data(figures),
        "period": period,
        "periods": [(key, PERIOD_LABELS[key]) for key in selectors.PERIODS],
        "period_label": PERIOD_LABELS[period],
    }
    return TemplateResponse(request, "herald/dashboard.html", context)
