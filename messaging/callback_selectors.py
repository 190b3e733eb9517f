"""Reads about status callbacks, for the admin and the message page."""

from datetime import timedelta

from django.db.models import Count, Exists, IntegerField, OuterRef, Prefetch, Q, Subquery, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from messaging.models import Callback, CallbackAttempt, CallbackEndpoint

HEALTH_WINDOW = timedelta(hours=24)


def callbacks_of_message(message, limit: int = 100) -> list:
    """The callbacks a message caused, in sequence order, each with its attempts."""
    return list(
        Callback.objects.filter(message=message)
        .prefetch_related(
            Prefetch("attempts_log", queryset=CallbackAttempt.objects.select_related("replayed_by"))
        )
        .order_by("sequence", "created_at", "id")[:limit]
    )


def with_endpoint_health(clients, now=None):
    """Clients annotated with their endpoint's health: attempts and successful attempts in the
    last 24 hours, callbacks pending and failed, and the circuit of their callback URL."""
    since = (now or timezone.now()) - HEALTH_WINDOW
    attempts = CallbackAttempt.objects.filter(
        callback__client=OuterRef("pk"), started_at__gte=since
    )
    callbacks = Callback.objects.filter(client=OuterRef("pk"))

    def count(queryset, group):
        grouped = queryset.order_by().values(group).annotate(n=Count("id")).values("n")
        return Coalesce(Subquery(grouped, output_field=IntegerField()), Value(0))

    return clients.annotate(
        attempts_24h=count(attempts, "callback__client"),
        ok_24h=count(attempts.filter(ok=True), "callback__client"),
        pending_count=count(callbacks.filter(state=Callback.State.PENDING), "client"),
        failed_count=count(callbacks.filter(state=Callback.State.FAILED), "client"),
        circuit=Subquery(
            CallbackEndpoint.objects.filter(url=OuterRef("callback_url")).values("circuit")[:1]
        ),
    ).filter(Q(callback_url__gt="") | Exists(callbacks))


def success_rate(client) -> float | None:
    """Share of the last 24 hours' attempts that got a 2xx (None without attempts)."""
    if not getattr(client, "attempts_24h", 0):
        return None
    return client.ok_24h / client.attempts_24h
