"""The admin's status callbacks: every callback with its attempts, a replay action, the endpoints'
circuits and each client's endpoint health. Read-only evidence, like the webhook requests:
replay and closing a circuit go through messaging/services/callbacks.py."""

from django.contrib import admin, messages
from django.urls import reverse
from django.utils.html import format_html

from messaging import callback_selectors
from messaging.admin import display
from messaging.models import Callback, CallbackAttempt, CallbackEndpoint, CallbackHealth
from messaging.services import callbacks


class _ReadOnly(admin.ModelAdmin):
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class CallbackAttemptInline(admin.TabularInline):
    model = CallbackAttempt
    extra = 0
    can_delete = False
    fields = ("started_at", "http_status", "latency_ms", "response_excerpt", "error",
              "replayed_by")  # fmt: skip
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_view_permission(self, request, obj=None):
        # The attempts are part of the callback: whoever may see it sees them.
        return request.user.has_perm("messaging.view_callback")


@admin.register(Callback)
class CallbackAdmin(_ReadOnly):
    # Fits 1366 px (tests/browser/test_layout.py): the event id shortened (the page and the
    # search take it whole), times on two lines, the sequence beside its message.
    list_display = ("event", "occurred", "event_type", "client", "message_link", "state",
                    "attempts", "delivered", "short_error")  # fmt: skip
    list_display_links = ("event",)
    list_filter = ("client", "state", "event_type")
    list_select_related = ("client",)
    search_fields = ("=event_id", "=message__id")
    search_help_text = "Exact match: an event id (webhook-id) or a message id."
    show_full_result_count = False
    actions = ["replay_selected"]
    inlines = [CallbackAttemptInline]
    fields = (("event_id", "event_type", "occurred_at"), ("client", "message", "sequence"),
              "url", ("state", "attempts", "next_attempt_at", "give_up_at"),
              ("delivered_at", "lease_owner", "lease_until"), "last_error", "payload")  # fmt: skip
    readonly_fields = [f for row in fields for f in (row if isinstance(row, tuple) else (row,))]

    @admin.display(description="event", ordering="event_id")
    def event(self, obj):
        return format_html('<span title="{}">{}…</span>', obj.event_id, obj.event_id[:12])

    @admin.display(description="occurred at", ordering="occurred_at")
    def occurred(self, obj):
        return display.when(obj.occurred_at, two_lines=True)

    @admin.display(description="delivered at", ordering="delivered_at")
    def delivered(self, obj):
        return display.when(obj.delivered_at, two_lines=True) if obj.delivered_at else "-"

    @admin.display(description="message · seq")
    def message_link(self, obj):
        if not obj.message_id:
            return "-"
        url = reverse("admin:messaging_message_change", args=[obj.message_id])
        return format_html('<a href="{}">{}</a> · {}', url, str(obj.message_id)[:8], obj.sequence)

    @admin.display(description="last error")
    def short_error(self, obj):
        return (obj.last_error[:60] + "…") if len(obj.last_error) > 60 else obj.last_error

    def has_replay_permission(self, request, obj=None):
        return request.user.has_perm("messaging.replay_callback")

    @admin.action(description="Replay selected callbacks (same event, same webhook-id)",
                  permissions=["replay"])  # fmt: skip
    def replay_selected(self, request, queryset):
        count = 0
        for callback in queryset[:1000]:
            callbacks.replay(callback, actor=request.user)
            count += 1
        self.message_user(request, f"{count} callback(s) queued for a new delivery.",
                          messages.SUCCESS)  # fmt: skip


@admin.register(CallbackEndpoint)
class CallbackEndpointAdmin(_ReadOnly):
    list_display = ("url", "circuit", "consecutive_failures", "opened_at", "retry_at",
                    "last_success_at", "last_failure_at", "last_error")  # fmt: skip
    list_filter = ("circuit",)
    actions = ["close_circuits"]

    def has_reset_permission(self, request, obj=None):
        return request.user.has_perm("messaging.replay_callback")

    @admin.action(description="Close the circuit of selected endpoints", permissions=["reset"])
    def close_circuits(self, request, queryset):
        for endpoint in queryset:
            callbacks.reset_circuit(endpoint)
        self.message_user(request, "Circuits closed.", messages.SUCCESS)


@admin.register(CallbackHealth)
class CallbackHealthAdmin(_ReadOnly):
    list_display = ("name", "slug", "callback_url", "circuit_display", "success_rate_display",
                    "attempts", "pending", "failed")  # fmt: skip
    fields = ("name", "slug", "callback_url")
    readonly_fields = fields

    def get_queryset(self, request):
        return callback_selectors.with_endpoint_health(super().get_queryset(request))

    @admin.display(description="attempts, last 24 h")
    def attempts(self, obj):
        return obj.attempts_24h

    @admin.display(description="pending")
    def pending(self, obj):
        return obj.pending_count

    @admin.display(description="failed")
    def failed(self, obj):
        return obj.failed_count

    @admin.display(description="circuit")
    def circuit_display(self, obj):
        return obj.circuit or CallbackEndpoint.Circuit.CLOSED

    @admin.display(description="success, last 24 h")
    def success_rate_display(self, obj):
        rate = callback_selectors.success_rate(obj)
        return "-" if rate is None else f"{rate:.0%} of {obj.attempts_24h}"
