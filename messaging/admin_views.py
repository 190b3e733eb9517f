"""The admin's own pages: Send SMS, resend and cancel confirmations, replay, CSV export.

Each parses its input and calls one service with actor=request.user and source=admin, so every
staff action lands in the message's timeline with who did it.
"""

import csv
import re
from datetime import datetime

from django.contrib import messages as flash
from django.contrib.admin import helpers
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseRedirect, StreamingHttpResponse
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html

from messaging import selectors
from messaging.errors import HeraldError, OptedOut, ProviderNotEnabled
from messaging.forms import CancelForm, ResendForm, SendSmsForm
from messaging.models import Direction, Message, Source, WebhookRequest
from messaging.services import messages as message_service
from messaging.services import webhooks as webhook_service
from messaging.status import CANCELLABLE, RESENDABLE

# A bulk action handles at most this many messages at once (each is its own transaction).
MAX_BULK = 1000
# The confirmation page lists this many by name and counts the rest.
LISTED = 50


def _context(model_admin, request, **extra):
    return {
        **model_admin.admin_site.each_context(request),
        "opts": model_admin.model._meta,
        "app_label": model_admin.model._meta.app_label,
        **extra,
    }


def _message_link(message) -> str:
    url = reverse("admin:messaging_message_change", args=[message.pk])
    return format_html('<a href="{}">{}</a>', url, str(message.pk)[:8])


# --- Send SMS ----------------------------------------------------------------------------------


def send_view(model_admin, request):
    if not model_admin.has_send_permission(request):
        raise PermissionDenied
    form = SendSmsForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            message = message_service.create_outbound(
                to=data["to"],
                body=data["body"],
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
                    _message_link(message),
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
        _context(model_admin, request, title="Send SMS", form=form),
    )


# --- Resend ------------------------------------------------------------------------------------


def _split(candidates, allowed):
    ok, skipped = [], []
    for message in candidates:
        if message.direction == Direction.OUTBOUND and message.status in allowed:
            ok.append(message)
        else:
            skipped.append(message)
    return ok, skipped


def _bounded(queryset):
    """The selection as a list, or None when it is bigger than one bulk action may touch."""
    candidates = list(queryset.defer(None).order_by("created_at", "pk")[: MAX_BULK + 1])
    return None if len(candidates) > MAX_BULK else candidates


def resend_flow(model_admin, request, queryset, *, single=None):
    """Confirmation page, then the resends. `single` is the message for the per-message page;
    otherwise this runs as the changelist's bulk action (its POST carries the action fields)."""
    if not model_admin.has_resend_permission(request):
        raise PermissionDenied
    candidates = _bounded(queryset)
    if candidates is None:
        flash.error(request, f"Select at most {MAX_BULK} messages to resend at once.")
        return None
    resendable, skipped = _split(candidates, RESENDABLE)
    confirmed = request.method == "POST" and request.POST.get("post") == "yes"
    form = ResendForm(request.POST if confirmed else None)
    if confirmed and form.is_valid():
        if not resendable:
            flash.warning(request, "None of the selected messages can be resent.")
            return None
        created, failures = [], []
        for original in resendable:
            try:
                created.append(
                    message_service.resend(
                        original,
                        source=Source.ADMIN,
                        actor=request.user,
                        provider=form.cleaned_data["provider"],
                        reason=form.cleaned_data["reason"],
                    )
                )
            except HeraldError as exc:
                failures.append(f"{str(original.pk)[:8]}: {exc}")
        if created:
            flash.success(
                request,
                f"Resent {len(created)} message(s); each copy is linked to its original.",
            )
        for failure in failures:
            flash.error(request, f"Not resent: {failure}")
        if single is not None and len(created) == 1:
            return HttpResponseRedirect(
                reverse("admin:messaging_message_change", args=[created[0].pk])
            )
        return None
    return TemplateResponse(
        request,
        "herald/resend_confirm.html",
        _context(
            model_admin,
            request,
            title="Resend messages" if single is None else "Resend this message",
            form=form,
            single=single,
            resendable=resendable[:LISTED],
            resendable_count=len(resendable),
            skipped=skipped[:LISTED],
            skipped_count=len(skipped),
            action_checkbox_name=helpers.ACTION_CHECKBOX_NAME,
            selected_ids=[m.pk for m in resendable],
        ),
    )


def resend_one_view(model_admin, request, object_id):
    message = get_object_or_404(Message, pk=object_id)
    response = resend_flow(
        model_admin, request, Message.objects.filter(pk=message.pk), single=message
    )
    if response is None:
        return HttpResponseRedirect(reverse("admin:messaging_message_change", args=[message.pk]))
    return response


# --- Cancel ------------------------------------------------------------------------------------


def cancel_flow(model_admin, request, queryset, *, single=None):
    if not model_admin.has_cancel_permission(request):
        raise PermissionDenied
    candidates = _bounded(queryset)
    if candidates is None:
        flash.error(request, f"Select at most {MAX_BULK} messages to cancel at once.")
        return None
    cancellable, skipped = _split(candidates, CANCELLABLE)
    confirmed = request.method == "POST" and request.POST.get("post") == "yes"
    form = CancelForm(request.POST if confirmed else None)
    if confirmed and form.is_valid():
        done, failures = 0, []
        for message in cancellable:
            try:
                message_service.cancel(
                    message,
                    source=Source.ADMIN,
                    actor=request.user,
                    reason=form.cleaned_data["reason"],
                )
                done += 1
            except HeraldError as exc:  # it was claimed by the sender meanwhile
                failures.append(f"{str(message.pk)[:8]}: {exc}")
        if done:
            flash.success(request, f"Cancelled {done} queued message(s).")
        for failure in failures:
            flash.error(request, f"Not cancelled: {failure}")
        if not cancellable:
            flash.warning(request, "None of the selected messages is queued.")
        return None
    return TemplateResponse(
        request,
        "herald/cancel_confirm.html",
        _context(
            model_admin,
            request,
            title="Cancel queued messages" if single is None else "Cancel this message",
            form=form,
            single=single,
            cancellable=cancellable[:LISTED],
            cancellable_count=len(cancellable),
            skipped=skipped[:LISTED],
            skipped_count=len(skipped),
            action_checkbox_name=helpers.ACTION_CHECKBOX_NAME,
            selected_ids=[m.pk for m in cancellable],
        ),
    )


def cancel_one_view(model_admin, request, object_id):
    message = get_object_or_404(Message, pk=object_id)
    response = cancel_flow(
        model_admin, request, Message.objects.filter(pk=message.pk), single=message
    )
    if response is None:
        return HttpResponseRedirect(reverse("admin:messaging_message_change", args=[message.pk]))
    return response


# --- Webhook replay ------------------------------------------------------------------------------


def replay_requests(model_admin, request, queryset):
    """Re-run parsing and applying for stored requests. Idempotent: receipts already applied are
    recognised by their dedupe key, so a replay adds only what was missing."""
    if not model_admin.has_replay_permission(request):
        raise PermissionDenied
    replayed, failed, refused = 0, [], 0
    for stored in queryset.order_by("received_at", "pk")[:MAX_BULK]:
        if not stored.authenticated:
            refused += 1
            continue
        if webhook_service.replay(stored, actor=request.user):
            replayed += 1
        else:
            stored.refresh_from_db(fields=["state", "error"])
            failed.append(f"#{stored.pk}: {stored.get_state_display()} ({stored.error[:200]})")
    if replayed:
        flash.success(request, f"Replayed {replayed} webhook request(s).")
    for failure in failed:
        flash.error(request, f"Replay did not complete: {failure}")
    if refused:
        flash.warning(
            request,
            f"{refused} request(s) skipped: only authenticated requests can be replayed.",
        )


def replay_one_view(model_admin, request, object_id):
    stored = get_object_or_404(WebhookRequest, pk=object_id)
    if request.method != "POST":
        raise PermissionDenied  # replay changes state: POST only (the button posts a form)
    replay_requests(model_admin, request, WebhookRequest.objects.filter(pk=stored.pk))
    return HttpResponseRedirect(reverse("admin:messaging_webhookrequest_change", args=[stored.pk]))


# --- CSV export ----------------------------------------------------------------------------------


class _Echo:
    """A file-like object whose write returns the line, for csv.writer in a generator."""

    def write(self, value):
        return value


# Spreadsheet formula injection: a text cell starting with one of these runs as a formula.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"[+-]?\d+(\.\d+)?")


def _cell(value):
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat()
    # A number in E.164 ("+4477...") is data, not a formula: it is kept as it is.
    if (
        isinstance(value, str)
        and value.startswith(_FORMULA_STARTS)
        and not _NUMBER.fullmatch(value)
    ):
        return "'" + value
    return value


def export_view(model_admin, request):
    """The filtered changelist (same filters, search and order) as CSV, streamed row by row."""
    if not model_admin.has_view_permission(request):
        raise PermissionDenied
    changelist = model_admin.get_changelist_instance(request)
    rows = selectors.export_rows(changelist.queryset)
    writer = csv.writer(_Echo())

    def stream():
        yield writer.writerow([name for name, _ in selectors.EXPORT_COLUMNS])
        for row in rows:
            yield writer.writerow([_cell(value) for value in row])

    stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
    response = StreamingHttpResponse(stream(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="herald-messages-{stamp}.csv"'
    return response
