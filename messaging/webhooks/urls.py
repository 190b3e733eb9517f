"""One explicit pair of URLs per provider, all served by the same view class."""

from django.urls import path

from messaging.webhooks.views import WebhookView

PROVIDER_WEBHOOKS = ["sandbox", "vonage-sms", "vonage-messages", "sinch", "infobip", "twilio"]

urlpatterns = [
    path(
        f"{name}/{kind}/",
        WebhookView.as_view(provider_name=name, kind=kind),
        name=f"webhook-{name}-{kind}",
    )
    for name in PROVIDER_WEBHOOKS
    for kind in ("status", "inbound")
]
