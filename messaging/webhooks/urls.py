"""One explicit pair of URLs per provider, all served by the same view class; the providers
come from the registry (config.providers.PROVIDER_SPECS), so a new provider module gets its
webhook URLs from its one settings line."""

from django.urls import path

from messaging.providers import known_names
from messaging.webhooks.views import WebhookView

PROVIDER_WEBHOOKS = known_names()

urlpatterns = [
    path(
        f"{name}/{kind}/",
        WebhookView.as_view(provider_name=name, kind=kind),
        name=f"webhook-{name}-{kind}",
    )
    for name in PROVIDER_WEBHOOKS
    for kind in ("status", "inbound")
]
