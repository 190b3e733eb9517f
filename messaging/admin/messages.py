"""The message admin: history at scale, the message page with its audit timeline (updating itself
while the message is in flight), Send SMS, resend / cancel, CSV export and the dashboard. Every
extra page is a method of MessageAdmin, wired in get_urls."""

from django.contrib import admin
from django.contrib import messages as flash
from django.contrib.admin.utils import unquote
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponseRedirect, JsonResponse
from django.template.loader import render_to_string
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from messaging import selectors, status
from messaging.admin import actions, display, export
from messaging.admin.dashboard import DASHBOARD_PERMISSION, dashboard_context
from messaging.admin.filters import (
    ClientFilter,
    CreatedRangeFilter,
    ErrorCodeFilter,
    ProviderFilter,
)
from messaging.admin.forms import QuoteForm, SendSmsForm
from messaging.admin.pagination import EstimatedCountPaginator
from messaging.errors import OptedOut, ProviderNotEnabled
from messaging.models import Client, Message, Source
from messaging.services import messages as message_service
from messaging.services import quotes

# How often the message page asks for news while the message is not final (milliseconds).
LIVE_INTERVAL_MS = 3000


class HeraldMedia:
    """The one static script of Herald's admin pages (time zone cookie, live updates): a file,
    never inline, so the pages work under a Content-Security-Policy without 'unsafe-inline'."""

    js = ("herald/admin.js",)
    css = {"all": ("herald/admin.css",)}


class MessageChangeList(ChangeList):
    def get_queryset(self, request, exclude_parameters=None):
        # The list never shows these; at 1M rows they are most of the bytes read.
        return (
            super()
            .get_queryset(request, exclude_parameters)
            .defer("body", "metadata", "error_text")
        )


def message_link(message) -> str:
    url = reverse("admin:messaging_message_change", args=[message.pk])
    return format_html('<a href="{}">{}</a>', url, str(message.pk)[:8])


def summary(message) -> list:
    """(name, label, html) of the message's facts that apply to it now: no "next attempt" once
    the sender is done with it, no completion time before it is final, no price nobody sent."""
    final = status.is_terminal(message.status)
    outbound = message.direction == "outbound"
    rows = [
        ("status", "Status", display.status_badge(message.status)),
        ("direction", "Direction", message.get_direction_display()),
        ("client", "Client", message.client.name if message.client_id else "-"),
        ("to_number", "To", message.to_number),
        ("from_number", "From", message.from_number or "provider's default"),
        ("provider", "Provider", message.provider),
    ]
    if message.error_code or message.error_text:
        meaning = display.error_meaning(message.provider, message.error_code, message.error_text)
        rows.append(
            (
                "error",
                "Error",
                format_html("<code>{}</code> {}", message.error_code or "-", meaning),
            )
        )
    if message.provider_message_id:
        rows.append(
            (
                "provider_message_id",
                "Provider id",
                format_html("<code>{}</code>", message.provider_message_id),
            )
        )
    if message.client_reference:
        rows.append(("client_reference", "Client reference", message.client_reference))
    rows.append(("segments", "Segments", f"{message.segments} ({message.encoding})"))
    if message.price is not None:
        rows.append(("price", "Price", f"{message.price.normalize():f} {message.currency}".strip()))
    if outbound:
        rows.append(("attempts", "Attempts", str(message.attempts)))
    if outbound and message.status == status.Status.QUEUED and message.next_attempt_at:
        rows.append(("next_attempt_at", "Next attempt at", display.when(message.next_attempt_at)))
    if message.send_at:
        rows.append(("send_at", "Scheduled for", display.when(message.send_at)))
    rows.append(("created_at", "Created", display.when(message.created_at)))
    if message.created_by_id:
        rows.append(("created_by", "Created by", message.created_by.get_username()))
    if message.sent_at:
        rows.append(("sent_at", "Sent", display.when(message.sent_at)))
    if final and message.completed_at:
        label = (
            "Received" if message.direction == "inbound" else f"{message.status.capitalize()} at"
        )
        rows.append(("completed_at", label, display.when(message.completed_at)))
    rows.append(("updated_at", "Last change", display.when(message.updated_at)))
    return rows


def timeline(message) -> dict:
    """The timeline's rows with what each event did (display.describe_event), and the parts."""
    events = selectors.message_timeline(message)
    parts = list(message.parts.order_by("index"))
    # A part by its place ("part 2/3"); the provider's id (up to 34 characters) is the tooltip.
    place = {p.provider_message_id: f"part {p.index + 1}/{len(parts)}" for p in parts}
    for event in events:
        event.meaning = display.error_meaning(message.provider, event.error_code, event.error_text)
        event.payload = display.pretty_json(event.raw_payload)
        event.kind, event.outcome = display.describe_event(event)
        event.part_label = place.get(event.part_id, "") if len(parts) > 1 else ""
    return {
        "events": events,
        "parts": parts,
        "event_kinds": display.EVENT_KINDS,
    }


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = (
        "short_id",
        "created",
        "client_name",
        "to_from",
        "provider",
        "status_display",
        "error_display",
        "price_display",
        "lineage",
    )
    list_display_links = ("short_id",)
    list_filter = (
        "status",
        ProviderFilter,
        ClientFilter,
        "direction",
        CreatedRangeFilter,
        ErrorCodeFilter,
    )
    list_select_related = ("client",)
    # search_fields only makes the admin show its search box: get_search_results does the work.
    search_fields = ("to_number",)
    search_help_text = (
        "Exact match: a phone number in any format, a Herald message id, the provider's "
        "message or part id, your client reference, or a client's slug."
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
    # The facts are drawn by the template from summary() (only those that apply, refreshed live);
    # the form itself only shows the text and the metadata.
    fieldsets = (
        ("Text", {"fields": ("body",)}),
        ("Metadata", {"fields": ("metadata_display",), "classes": ("collapse",)}),
    )
    readonly_fields = ("metadata_display",)
    Media = HeraldMedia

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

    def has_dashboard_permission(self, request):
        return request.user.has_perm(DASHBOARD_PERMISSION)

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
        return display.when(obj.created_at, two_lines=True)

    @admin.display(description="to / from")
    def to_from(self, obj):
        # One column for both numbers: the list has to fit 1366 px beside its filters.
        if not obj.from_number:
            return obj.to_number
        return format_html("{}<br><small>from {}</small>", obj.to_number, obj.from_number)

    @admin.display(description="client")
    def client_name(self, obj):
        return obj.client.slug if obj.client_id else "-"

    @admin.display(description="status")
    def status_display(self, obj):
        return display.status_badge(obj.status)

    @admin.display(description="error")
    def error_display(self, obj):
        # The list defers error_text (the bulk of a failed row): the code, linked to its filter.
        if not obj.error_code:
            return "-"
        return format_html('<code class="herald-code">{}</code>', obj.error_code)

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
        return format_html('resend of<br><a href="{}">{}</a>', url, str(obj.resend_of_id)[:8])

    @admin.display(description="metadata")
    def metadata_display(self, obj):
        return format_html('<pre class="herald-json">{}</pre>', display.pretty_json(obj.metadata))

    def changelist_view(self, request, extra_context=None):
        extra = {
            "has_send_permission": self.has_send_permission(request),
            "has_dashboard_permission": self.has_dashboard_permission(request),
            "time_zone": display.zone_name(),
        }
        return super().changelist_view(request, {**extra, **(extra_context or {})})

    # --- actions ---

    @admin.action(description="Resend selected messages…", permissions=["resend"])
    def resend_messages(self, request, queryset):
        return actions.confirm(self, request, queryset, actions.RESEND)

    @admin.action(description="Cancel selected queued messages…", permissions=["cancel"])
    def cancel_messages(self, request, queryset):
        return actions.confirm(self, request, queryset, actions.CANCEL)

    # --- the message page ---

    def live_context(self, message) -> dict:
        """What the message page draws and the status endpoint sends again while it is live."""
        return {
            "summary": summary(message),
            "updated_at": message.updated_at.isoformat(),
            "final": status.is_settled(message.status),
            **timeline(message),
        }

    def change_view(self, request, object_id, form_url="", extra_context=None):
        extra = dict(extra_context or {})
        message = self.get_object(request, unquote(object_id))
        if message is not None:
            extra.update(
                **self.live_context(message),
                can_resend=self.has_resend_permission(request) and status.can_resend(message),
                can_cancel=self.has_cancel_permission(request) and status.can_cancel(message),
                live_url=reverse("admin:messaging_message_live", args=[message.pk]),
                live_interval=LIVE_INTERVAL_MS,
                time_zone=display.zone_name(),
                **selectors.message_lineage(message),
            )
        return super().change_view(request, object_id, form_url, extra)

    def live_view(self, request, object_id):
        """GET <id>/live.json: the message's status, its summary and timeline as HTML fragments
        (the same templates as the page), and whether it is final (the page stops asking)."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        message = self.get_object(request, unquote(object_id))
        if message is None:
            raise Http404
        context = self.live_context(message)
        return JsonResponse(
            {
                "id": str(message.pk),
                "status": message.status,
                "final": context["final"],
                "updated_at": message.updated_at.isoformat(),
                "event_count": len(context["events"]),
                "summary_html": render_to_string("herald/_message_summary.html", context),
                "timeline_html": render_to_string("herald/_timeline.html", context),
            },
            headers={"Cache-Control": "no-store"},
        )

    # --- extra pages ---

    def send_view(self, request):
        if not self.has_send_permission(request):
            raise PermissionDenied
        form = SendSmsForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            try:
                message = message_service.create_outbound(
                    to=data["to"],
                    body=data["body"],
                    client=data["client"],
                    provider=data["provider"],
                    sender=data["sender"],
                    client_reference=data["client_reference"],
                    send_at=data["send_at"],
                    source=Source.ADMIN,
                    actor=request.user,
                )
            except OptedOut as exc:  # opted out between validation and the write
                form.add_error("to", str(exc))
            except ProviderNotEnabled as exc:
                form.add_error("provider", str(exc))
            else:
                flash.success(
                    request,
                    format_html(
                        "Message {} to {} queued via {} ({} segment(s), {}).",
                        message_link(message),
                        message.to_number,
                        message.provider,
                        message.segments,
                        message.encoding,
                    ),
                )
                return HttpResponseRedirect(
                    reverse("admin:messaging_message_change", args=[message.pk])
                )
        return TemplateResponse(
            request,
            "herald/send_sms.html",
            actions.admin_context(
                self, request, title="Send SMS", form=form, time_zone=display.zone_name()
            ),
        )

    def resend_view(self, request, object_id):
        return actions.confirm_one(self, request, unquote(object_id), actions.RESEND)

    def cancel_view(self, request, object_id):
        return actions.confirm_one(self, request, unquote(object_id), actions.CANCEL)

    def export_view(self, request):
        """The filtered changelist (same filters, search and order) as CSV, streamed row by row;
        the body only for staff with its own permission."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        changelist = self.get_changelist_instance(request)
        with_body = request.user.has_perm(export.BODY_PERMISSION)
        return export.csv_response(changelist.queryset, with_body=with_body)

    def dashboard_view(self, request):
        if not self.has_dashboard_permission(request):
            raise PermissionDenied
        context = {
            **actions.admin_context(self, request),
            **dashboard_context(request),
            "time_zone": display.zone_name(),
        }
        return TemplateResponse(request, "herald/dashboard.html", context)

    def quote_view(self, request):
        """What the send form's text would be (segments, encoding, the characters that force
        UCS-2, provider, price), shown live as staff type: the API's quote, the same service."""
        if not self.has_send_permission(request):
            raise PermissionDenied
        form = QuoteForm(request.GET)
        if not form.is_valid():
            errors = {name: [str(e) for e in errs] for name, errs in form.errors.items()}
            return JsonResponse({"errors": errors}, status=400)
        data = form.cleaned_data
        try:
            quote = quotes.quote(
                to=data["to"],
                body=data["body"],
                provider=data["provider"],
                client=data["client"] or Client.objects.default(),
            )
        except ProviderNotEnabled as exc:
            return JsonResponse({"errors": {"provider": [str(exc)]}}, status=400)
        return JsonResponse(quote.as_dict())

    def get_urls(self):
        def wrap(view):
            return self.admin_site.admin_view(view)

        name = f"{self.opts.app_label}_{self.opts.model_name}"
        return [
            path("send/", wrap(self.send_view), name=f"{name}_send"),
            path("send/quote.json", wrap(self.quote_view), name=f"{name}_quote"),
            path("export.csv", wrap(self.export_view), name=f"{name}_export"),
            path("dashboard/", wrap(self.dashboard_view), name="messaging_dashboard"),
            path("<path:object_id>/resend/", wrap(self.resend_view), name=f"{name}_resend"),
            path("<path:object_id>/cancel/", wrap(self.cancel_view), name=f"{name}_cancel"),
            path("<path:object_id>/live.json", wrap(self.live_view), name=f"{name}_live"),
        ] + super().get_urls()
