"""Admin: minimal registration; expanded in messaging/admin_site (issue 4)."""

from django.contrib import admin

from messaging.models import Message, WebhookRequest

admin.site.register(Message)
admin.site.register(WebhookRequest)
