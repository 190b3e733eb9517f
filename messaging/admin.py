"""The staff admin: message history at scale, the audit timeline, send / resend / cancel, webhook
evidence with replay, and the delivery dashboard.

Messages, events and webhook requests are never edited here: every change goes through a service
(messaging.services) with the acting user, so it is recorded in the message's timeline.
StatusEvent and WebhookRequest are evidence: nobody may add, change or delete them, superusers
included.
"""

from django.contrib import admin
from django.contrib.admin.utils import unquote
from django.contrib.admin.views.main import ChangeList
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

from messaging import admin_views, selectors
from messaging.admin_display import error_meaning, pretty_body, pretty_json
from messaging.admin_filters import (
    CreatedRangeFilter,
    ErrorCodeFilter,
    ProviderFilter,
    WebhookKindFilter,
)
from messaging.admin_pagination import EstimatedCountPaginator
from messaging.dashboard import DASHBOARD_PERMISSION, dashboard_view
from messaging.models import Message, StatusEvent, WebhookRequest
from messaging.status import CANCELLABLE, RESENDABLE

STATUS_COLOURS = {
    "queued": "#6c757d",
    "sending": "#0d6efd",
    "sent": "#0aa2c0",
    "delivered": "#198754",
    "failed": "#dc3545",
    "expired": "#fd7e14",
    "rejected": "#b02a37",
    "unknown": "#6f42c1",
    "received": "#20c997",
}


def status_badge(status: str):
    return format_html(
        '<span class="herald-status" style="background:{}">{}</span>',
        STATUS_COLOURS.get(status, "#6c757d"),
        status,
    )


class ReadOnlyEvidenceAdmin(admin.ModelAdmin):
    """Evidence rows: viewable by staff with the view permission, never written from here."""

    paginator = EstimatedCountPaginator
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    sortable_by = ()  # the default order is the indexed one; other sorts would scan the table

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class MessageChangeList(ChangeList):
    def get_queryset(self, request, exclude_parameters=None):
        # The list never shows these; at 1M rows they are most of the bytes read.
        return (
            super()
            .get_queryset(request, exclude_parameters)
            .defer("body", "metadata", "error_text")
        )


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = (
        "short_id",
        "created",
        "direction",
        "to_number",
        "from_number",
        "provider",
        "status_display",
        "error_code",
        "price_display",
        "lineage",
    )
    list_display_links = ("short_id",)
    list_filter = ("status", ProviderFilter, "direction", CreatedRangeFilter, ErrorCodeFilter)
    # search_fields only makes the admin show its search box: get_search_results does the work.
    search_fields = ("to_number",)
    search_help_text = (
        "Exact match: a phone number in any format, a Herald message id, the provider's "
        "message or part id, or your client reference."
    )
    paginator = EstimatedCountPaginator
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    list_per_page = 50
    # Newest first is an index scan; sorting by other columns would sort the whole table.
    sortable_by = ("created",)
    ordering = ("-created_at",)
    actions = ["resend_messages", "cancel_messages"]
    change_form_template = "admin/messaging/message/change_form.html"
    change_list_template = "admin/messaging/message/change_list.html"
    fieldsets = (
        (
            None,
            {
                "fields": (
                    ("id", "direction"),
                    ("status_display", "error_display"),
                    ("to_number", "from_number"),
                    "body",
                    ("provider", "provider_message_id"),
                    ("client_reference", "created_by"),
                )
            },
        ),
        (
            "Sending",
            {
                "fields": (
                    ("segments", "encoding"),
                    ("price", "currency"),
                    ("attempts", "next_attempt_at"),
                    ("send_at", "sent_at", "completed_at"),
                    ("created_at", "updated_at"),
                )
            },
        ),
        ("Metadata", {"fields": ("metadata_display",), "classes": ("collapse",)}),
    )
    readonly_fields = ("status_display", "error_display", "metadata_display")

    # --- permissions: sending and repairs go through the services, never a model form ---

    def has_add_permission(self, request):
        return False  # the "Send SMS" page replaces the model's add form

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def has_send_permission(self, request):
        return request.user.has_perm("messaging.add_message")

    def has_resend_permission(self, request, obj=None):
        return request.user.has_perm("messaging.resend_message")

    def has_cancel_permission(self, request, obj=None):
        return request.user.has_perm("messaging.cancel_message")

    # --- the changelist ---

    def get_changelist(self, request, **kwargs):
        return MessageChangeList

    def get_search_results(self, request, queryset, search_term):
        return selectors.search_messages(queryset, search_term), False

    @admin.display(description="id")
    def short_id(self, obj):
        return str(obj.pk)[:8]

    @admin.display(description="created", ordering="created_at")
    def created(self, obj):
        return timezone.localtime(obj.created_at).strftime("%Y-%m-%d %H:%M:%S")

    @admin.display(description="status")
    def status_display(self, obj):
        return status_badge(obj.status)

    @admin.display(description="error")
    def error_display(self, obj):
        if not obj.error_code and not obj.error_text:
            return "-"
        meaning = error_meaning(obj.provider, obj.error_code, obj.error_text)
        return format_html("<code>{}</code> {}", obj.error_code or "-", meaning)

    @admin.display(description="price")
    def price_display(self, obj):
        if obj.price is None:
            return "-"
        return f"{obj.price.normalize():f} {obj.currency}".strip()

    @admin.display(description="lineage")
    def lineage(self, obj):
        # From the foreign key column alone: no query per row.
        if not obj.resend_of_id:
            return ""
        url = reverse("admin:messaging_message_change", args=[obj.resend_of_id])
        return format_html('resend of <a href="{}">{}</a>', url, str(obj.resend_of_id)[:8])

    @admin.display(description="metadata")
    def metadata_display(self, obj):
        return format_html('<pre class="herald-json">{}</pre>', pretty_json(obj.metadata))

    def changelist_view(self, request, extra_context=None):
        extra = {
            "has_send_permission": self.has_send_permission(request),
            "has_dashboard_permission": request.user.has_perm(DASHBOARD_PERMISSION),
        }
        return super().changelist_view(request, {**extra, **(extra_context or {})})

    # --- actions ---

    @admin.action(description="Resend selected messages…", permissions=["resend"])
    def resend_messages(self, request, queryset):
        return admin_views.resend_flow(self, request, queryset)

    @admin.action(description="Cancel selected queued messages…", permissions=["cancel"])
    def cancel_messages(self, request, queryset):
        return admin_views.cancel_flow(self, request, queryset)

    # --- the message page ---

    def change_view(self, request, object_id, form_url="", extra_context=None):
        extra = dict(extra_context or {})
        message = self.get_object(request, unquote(object_id))
        if message is not None:
            events = selectors.message_timeline(message)
            for event in events:
                event.meaning = error_meaning(message.provider, event.error_code, event.error_text)
                event.payload = pretty_json(event.raw_payload)
            extra.update(
                events=events,
                parts=list(message.parts.order_by("index")),
                can_resend=self.has_resend_permission(request)
                and message.direction == "outbound"
                and message.status in RESENDABLE,
                can_cancel=self.has_cancel_permission(request)
                and message.direction == "outbound"
                and message.status in CANCELLABLE,
                **selectors.message_lineage(message),
            )
        return super().change_view(request, object_id, form_url, extra)

    # --- extra pages ---

    def get_urls(self):
        def wrap(view):
            def wrapper(request, *args, **kwargs):
                return view(self, request, *args, **kwargs)

            return self.admin_site.admin_view(wrapper)

        name = f"{self.opts.app_label}_{self.opts.model_name}"
        return [
            path("send/", wrap(admin_views.send_view), name=f"{name}_send"),
            path("export.csv", wrap(admin_views.export_view), name=f"{name}_export"),
            path("dashboard/", wrap(dashboard_view), name="messaging_dashboard"),
            path(
                "<path:object_id>/resend/",
                wrap(admin_views.resend_one_view),
                name=f"{name}_resend",
            ),
            path(
                "<path:object_id>/cancel/",
                wrap(admin_views.cancel_one_view),
                name=f"{name}_cancel",
            ),
        ] + super().get_urls()


@admin.register(StatusEvent)
class StatusEventAdmin(ReadOnlyEvidenceAdmin):
    list_display = (
        "received_at",
        "message_link",
        "status_display",
        "provider_status",
        "error_code",
        "source",
        "actor",
        "applied",
        "note",
    )
    list_filter = ("source", "applied", "status")
    list_select_related = ("actor",)
    search_fields = ("message__id",)
    search_help_text = "Exact Herald message id."
    fields = (
        ("message_link", "status_display", "applied"),
        ("provider_status", "error_code", "error_text"),
        ("provider_timestamp", "received_at"),
        ("source", "actor", "webhook_link"),
        "part_id",
        "note",
        "dedupe_key",
        "payload_display",
    )
    readonly_fields = ("message_link", "status_display", "webhook_link", "payload_display")

    def get_search_results(self, request, queryset, search_term):
        import uuid

        term = (search_term or "").strip()
        if not term:
            return queryset, False
        try:
            return queryset.filter(message_id=uuid.UUID(term)), False
        except ValueError:
            return queryset.none(), False

    @admin.display(description="message")
    def message_link(self, obj):
        url = reverse("admin:messaging_message_change", args=[obj.message_id])
        return format_html('<a href="{}">{}</a>', url, str(obj.message_id)[:8])

    @admin.display(description="status")
    def status_display(self, obj):
        return status_badge(obj.status)

    @admin.display(description="webhook request")
    def webhook_link(self, obj):
        if not obj.webhook_request_id:
            return "-"
        url = reverse("admin:messaging_webhookrequest_change", args=[obj.webhook_request_id])
        return format_html('<a href="{}">#{}</a>', url, obj.webhook_request_id)

    @admin.display(description="raw payload")
    def payload_display(self, obj):
        return format_html('<pre class="herald-json">{}</pre>', pretty_json(obj.raw_payload))


@admin.register(WebhookRequest)
class WebhookRequestAdmin(ReadOnlyEvidenceAdmin):
    list_display = (
        "id",
        "received_at",
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
        ("provider", "kind", "received_at"),
        ("method", "path", "query_string"),
        ("remote_addr", "response_status"),
        ("authenticated", "auth_error"),
        ("state", "report_count", "processed_at"),
        "error",
        "traceback_display",
        "headers_display",
        "body_display",
    )
    readonly_fields = ("traceback_display", "headers_display", "body_display")

    def has_replay_permission(self, request, obj=None):
        return request.user.has_perm("messaging.replay_webhookrequest")

    def get_queryset(self, request):
        # The list never shows the body; it is the bulk of each row.
        queryset = super().get_queryset(request)
        if request.resolver_match and request.resolver_match.url_name.endswith("changelist"):
            queryset = queryset.defer("body", "headers", "traceback")
        return queryset

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
        return format_html('<pre class="herald-json">{}</pre>', pretty_json(obj.headers))

    @admin.display(description="body (as received; shown formatted)")
    def body_display(self, obj):
        content_type = (obj.headers or {}).get("content-type", "")
        return format_html(
            '<pre class="herald-json">{}</pre>', pretty_body(obj.body, content_type) or "-"
        )

    @admin.action(description="Replay selected webhook requests", permissions=["replay"])
    def replay_selected(self, request, queryset):
        admin_views.replay_requests(self, request, queryset)

    def changelist_view(self, request, extra_context=None):
        extra = {"failed_auth": sorted(selectors.failed_auth_counts().items())}
        return super().changelist_view(request, {**extra, **(extra_context or {})})

    def change_view(self, request, object_id, form_url="", extra_context=None):
        extra = dict(extra_context or {})
        stored = self.get_object(request, unquote(object_id))
        if stored is not None:
            extra.update(
                linked_events=list(
                    stored.events.select_related("actor").order_by("received_at", "id")
                ),
                can_replay=self.has_replay_permission(request) and stored.authenticated,
            )
        return super().change_view(request, object_id, form_url, extra)

    def get_urls(self):
        def replay(request, object_id):
            return admin_views.replay_one_view(self, request, object_id)

        return [
            path(
                "<path:object_id>/replay/",
                self.admin_site.admin_view(replay),
                name="messaging_webhookrequest_replay",
            )
        ] + super().get_urls()


from messaging import admin_routing  # noqa: E402,F401  (Route, routing page, health events)
