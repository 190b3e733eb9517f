"""Evidence: status events and stored webhook requests. Nobody may add, change or delete them from
the admin, superusers included; stored requests can be replayed (messaging.admin.actions)."""

import uuid

from django.contrib import admin
from django.contrib.admin.utils import unquote
from django.urls import path, reverse
from django.utils.html import format_html

from messaging import selectors
from messaging.admin import actions, display
from messaging.admin.filters import ProviderFilter, WebhookKindFilter
from messaging.admin.messages import HeraldMedia
from messaging.admin.pagination import EstimatedCountPaginator
from messaging.models import StatusEvent, WebhookRequest


class ReadOnlyEvidenceAdmin(admin.ModelAdmin):
    """Evidence rows: viewable by staff with the view permission, never written from here."""

    paginator = EstimatedCountPaginator
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    sortable_by = ()  # the default order is the indexed one; other sorts would scan the table
    Media = HeraldMedia

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def changelist_view(self, request, extra_context=None):
        extra = {"time_zone": display.zone_name()}
        return super().changelist_view(request, {**extra, **(extra_context or {})})


@admin.register(StatusEvent)
class StatusEventAdmin(ReadOnlyEvidenceAdmin):
    list_display = (
        "received",
        "message_link",
        "status_display",
        "provider_status",
        "error_code",
        "source",
        "actor",
        "outcome",
        "note",
    )
    list_filter = ("source", "applied", "status")
    list_select_related = ("actor",)
    # Newest first by primary key (rows are appended in time order): an index scan at any size.
    ordering = ("-id",)
    search_fields = ("message__id",)
    search_help_text = "Exact Herald message id."
    fields = (
        ("message_link", "status_display", "outcome"),
        ("provider_status", "error_code", "error_text"),
        ("provider_time", "received"),
        ("source", "actor", "webhook_link"),
        "part_id",
        "note",
        "dedupe_key",
        "payload_display",
    )
    readonly_fields = (
        "message_link",
        "status_display",
        "outcome",
        "provider_time",
        "received",
        "webhook_link",
        "payload_display",
    )
    change_list_template = "admin/messaging/statusevent/change_list.html"

    def get_search_results(self, request, queryset, search_term):
        term = (search_term or "").strip()
        if not term:
            return queryset, False
        try:
            return queryset.filter(message_id=uuid.UUID(term)), False
        except ValueError:
            return queryset.none(), False

    @admin.display(description="received", ordering="received_at")
    def received(self, obj):
        return display.when(obj.received_at)

    @admin.display(description="provider time")
    def provider_time(self, obj):
        return display.when(obj.provider_timestamp)

    @admin.display(description="message")
    def message_link(self, obj):
        url = reverse("admin:messaging_message_change", args=[obj.message_id])
        return format_html('<a href="{}">{}</a>', url, str(obj.message_id)[:8])

    @admin.display(description="status")
    def status_display(self, obj):
        return display.status_badge(obj.status)

    @admin.display(description="outcome")
    def outcome(self, obj):
        kind, label = display.describe_event(obj)
        return format_html('<span class="herald-kind herald-kind-{}">{}</span>', kind, label)

    @admin.display(description="webhook request")
    def webhook_link(self, obj):
        if not obj.webhook_request_id:
            return "-"
        url = reverse("admin:messaging_webhookrequest_change", args=[obj.webhook_request_id])
        return format_html('<a href="{}">#{}</a>', url, obj.webhook_request_id)

    @admin.display(description="raw payload")
    def payload_display(self, obj):
        return format_html(
            '<pre class="herald-json">{}</pre>', display.pretty_json(obj.raw_payload)
        )


@admin.register(WebhookRequest)
class WebhookRequestAdmin(ReadOnlyEvidenceAdmin):
    list_display = (
        "id",
        "received",
        "provider",
        "kind",
        "authenticated",
        "state",
        "response_status",
        "report_count",
        "short_error",
    )
    list_filter = (ProviderFilter, WebhookKindFilter, "authenticated", "state")
    actions = ["replay_selected"]
    change_form_template = "admin/messaging/webhookrequest/change_form.html"
    change_list_template = "admin/messaging/webhookrequest/change_list.html"
    fields = (
        ("provider", "kind", "received"),
        ("method", "path", "query_string"),
        ("remote_addr", "response_status"),
        ("authenticated", "auth_error"),
        ("state", "report_count", "processed"),
        "error",
        "traceback_display",
        "headers_display",
        "body_display",
    )
    readonly_fields = (
        "received",
        "processed",
        "traceback_display",
        "headers_display",
        "body_display",
    )

    def has_replay_permission(self, request, obj=None):
        return request.user.has_perm("messaging.replay_webhookrequest")

    def get_queryset(self, request):
        # The list never shows the body; it is the bulk of each row.
        queryset = super().get_queryset(request)
        if request.resolver_match and request.resolver_match.url_name.endswith("changelist"):
            queryset = queryset.defer("body", "headers", "traceback")
        return queryset

    @admin.display(description="received", ordering="received_at")
    def received(self, obj):
        return display.when(obj.received_at)

    @admin.display(description="processed")
    def processed(self, obj):
        return display.when(obj.processed_at)

    @admin.display(description="error")
    def short_error(self, obj):
        text = obj.error or obj.auth_error
        return (text[:80] + "…") if len(text) > 80 else text

    @admin.display(description="traceback")
    def traceback_display(self, obj):
        if not obj.traceback:
            return "-"
        return format_html('<pre class="herald-json">{}</pre>', obj.traceback)

    @admin.display(description="headers kept")
    def headers_display(self, obj):
        return format_html('<pre class="herald-json">{}</pre>', display.pretty_json(obj.headers))

    @admin.display(description="body (as received; shown formatted)")
    def body_display(self, obj):
        content_type = (obj.headers or {}).get("content-type", "")
        return format_html(
            '<pre class="herald-json">{}</pre>', display.pretty_body(obj.body, content_type) or "-"
        )

    @admin.action(description="Replay selected webhook requests", permissions=["replay"])
    def replay_selected(self, request, queryset):
        actions.replay_requests(self, request, queryset)

    def changelist_view(self, request, extra_context=None):
        extra = {"failed_auth": sorted(selectors.failed_auth_counts().items())}
        return super().changelist_view(request, {**extra, **(extra_context or {})})

    def change_view(self, request, object_id, form_url="", extra_context=None):
        extra = dict(extra_context or {})
        stored = self.get_object(request, unquote(object_id))
        if stored is not None:
            events = list(stored.events.select_related("actor").order_by("received_at", "id"))
            for event in events:
                event.kind, event.outcome = display.describe_event(event)
            extra.update(
                linked_events=events,
                can_replay=self.has_replay_permission(request) and stored.authenticated,
                time_zone=display.zone_name(),
            )
        return super().change_view(request, object_id, form_url, extra)

    def replay_view(self, request, object_id):
        return actions.replay_one(self, request, unquote(object_id))

    def get_urls(self):
        return [
            path(
                "<path:object_id>/replay/",
                self.admin_site.admin_view(self.replay_view),
                name="messaging_webhookrequest_replay",
            )
        ] + super().get_urls()
