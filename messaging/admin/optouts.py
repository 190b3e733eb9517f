"""The opt-out list: who may not be sent to, since when and why (an inbound STOP keyword, a
provider's "unsubscribed" error such as Twilio 21610, or staff), each number's history, and
staff adding or removing numbers with a required reason (messaging.services.optouts, recorded
with the user). Behind the model's own permissions: view_optout to read, add_optout to add,
delete_optout to remove. Rows are never edited or deleted directly, so the history stays whole.
"""

from django.contrib import admin
from django.contrib import messages as flash
from django.contrib.admin import helpers
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.db.models import OuterRef, Subquery
from django.http import HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from messaging.admin import display
from messaging.admin.actions import admin_context
from messaging.admin.forms import OptOutAddForm, OptOutRemoveForm
from messaging.admin.messages import HeraldMedia
from messaging.models import OptOut, OptOutChange
from messaging.phone import normalise_loose
from messaging.services import optouts as optout_service


def _latest_opt_out(field):
    return Subquery(
        OptOutChange.objects.filter(
            phone_number=OuterRef("phone_number"), action=OptOutChange.Action.OPT_OUT
        )
        .order_by("-created_at", "-id")
        .values(field)[:1]
    )


def how(keyword, reason, actor, source_message_id):
    """How a number came onto the list, with a link to the message that caused it."""
    link = ""
    if source_message_id:
        url = reverse("admin:messaging_message_change", args=[source_message_id])
        link = format_html(' <a href="{}">{}</a>', url, str(source_message_id)[:8])
    if keyword:
        return format_html("inbound keyword <code>{}</code>{}", keyword, link)
    if reason.startswith("provider error"):
        return format_html("{} on{}", reason, link)
    if reason.startswith(optout_service.STAFF_REASON) or actor:
        return format_html("staff ({}): {}", actor or "?", reason.partition(": ")[2] or reason)
    return reason or "-"


@admin.register(OptOut)
class OptOutAdmin(admin.ModelAdmin):
    list_display = ("phone_number", "since", "how_added", "history_link")
    search_fields = ("phone_number",)
    search_help_text = "Exact number, in any format."
    ordering = ("-created_at",)
    list_per_page = 100
    show_facets = admin.ShowFacets.NEVER
    actions = ["remove_numbers"]
    change_form_template = "admin/messaging/optout/change_form.html"
    fields = ("phone_number", "since", "how_added")
    readonly_fields = ("phone_number", "since", "how_added")
    Media = HeraldMedia

    # --- permissions: the model's own; changes only through the service ---

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False  # a raw delete would lose the history: "remove" goes through the service

    def has_remove_permission(self, request, obj=None):
        return request.user.has_perm("messaging.delete_optout")

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .annotate(
                added_reason=_latest_opt_out("reason"),
                added_by=_latest_opt_out("actor__username"),
            )
        )

    def get_search_results(self, request, queryset, search_term):
        term = (search_term or "").strip()
        if not term:
            return queryset, False
        return queryset.filter(phone_number=normalise_loose(term)), False

    @admin.display(description="opted out at", ordering="created_at")
    def since(self, obj):
        return display.when(obj.created_at)

    @admin.display(description="how")
    def how_added(self, obj):
        return how(
            obj.keyword,
            getattr(obj, "added_reason", "") or "",
            getattr(obj, "added_by", None),
            obj.source_message_id,
        )

    @admin.display(description="history")
    def history_link(self, obj):
        url = reverse("admin:messaging_optout_change", args=[obj.pk])
        return format_html('<a href="{}">changes</a>', url)

    def changelist_view(self, request, extra_context=None):
        extra = {"time_zone": display.zone_name()}
        return super().changelist_view(request, {**extra, **(extra_context or {})})

    def change_view(self, request, object_id, form_url="", extra_context=None):
        optout = self.get_object(request, unquote(object_id))
        extra = dict(extra_context or {})
        if optout is not None:
            extra.update(self.history_context(optout.phone_number, request))
            extra["can_remove"] = self.has_remove_permission(request)
        return super().change_view(request, object_id, form_url, extra)

    def history_context(self, number, request):
        changes = list(
            OptOutChange.objects.filter(phone_number=number)
            .select_related("actor")
            .order_by("-created_at", "-id")
        )
        for change in changes:
            change.how = how(change.keyword, change.reason, change.actor, change.source_message_id)
            change.when = display.when(change.created_at)
        return {"changes": changes, "number": number, "time_zone": display.zone_name()}

    # --- add and remove by staff ---

    def add_view(self, request, form_url="", extra_context=None):
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = OptOutAddForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            number = form.cleaned_data["phone_number"]
            added = optout_service.staff_opt_out(
                number, actor=request.user, reason=form.cleaned_data["reason"]
            )
            if added:
                flash.success(request, f"{number} is opted out: nothing will be sent to it.")
            else:
                flash.warning(request, f"{number} was opted out already; nothing changed.")
            optout = OptOut.objects.get(phone_number=number)
            return HttpResponseRedirect(reverse("admin:messaging_optout_change", args=[optout.pk]))
        return TemplateResponse(
            request,
            "herald/optout_form.html",
            admin_context(
                self,
                request,
                title="Opt a number out",
                form=form,
                form_id="herald-optout-add-form",
                submit="Opt out",
            ),
        )

    @admin.action(description="Remove selected numbers (opt back in)…", permissions=["remove"])
    def remove_numbers(self, request, queryset):
        return self.remove(request, queryset)

    def remove_view(self, request, object_id):
        optout = get_object_or_404(OptOut, pk=unquote(object_id))
        response = self.remove(request, OptOut.objects.filter(pk=optout.pk), single=optout)
        return response or HttpResponseRedirect(reverse("admin:messaging_optout_changelist"))

    def remove(self, request, queryset, single=None):
        if not self.has_remove_permission(request):
            raise PermissionDenied
        numbers = list(queryset.order_by("phone_number").values_list("phone_number", flat=True))
        confirmed = request.method == "POST" and request.POST.get("post") == "yes"
        form = OptOutRemoveForm(request.POST if confirmed else None)
        if confirmed and form.is_valid():
            removed = [
                number
                for number in numbers
                if optout_service.staff_opt_in(
                    number, actor=request.user, reason=form.cleaned_data["reason"]
                )
            ]
            flash.success(
                request,
                f"Removed {len(removed)} number(s) from the opt-out list: {', '.join(removed)}.",
            )
            return None
        return TemplateResponse(
            request,
            "herald/optout_form.html",
            admin_context(
                self,
                request,
                title="Remove from the opt-out list",
                form=form,
                form_id="herald-optout-remove-form",
                submit=f"Remove {len(numbers)} number(s)",
                numbers=numbers,
                single=single,
                bulk=single is None,
                action_checkbox_name=helpers.ACTION_CHECKBOX_NAME,
                selected_ids=list(queryset.values_list("pk", flat=True)),
            ),
        )

    def get_urls(self):
        return [
            path(
                "<path:object_id>/remove/",
                self.admin_site.admin_view(self.remove_view),
                name="messaging_optout_remove",
            )
        ] + super().get_urls()
