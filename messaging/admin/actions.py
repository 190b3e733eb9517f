"""Staff repairs: resend and cancel share one confirmation flow (and one template), webhook replay.

Each parses its input and calls one service with actor=request.user and source=admin, so every
staff action lands in the message's timeline with who did it. Which messages a repair applies to
is decided by messaging.status (can_resend / can_cancel), the same rule the services enforce.
"""

from collections.abc import Callable
from dataclasses import dataclass

from django.contrib import messages as flash
from django.contrib.admin import helpers
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import reverse

from messaging import selectors, status
from messaging.admin import display
from messaging.admin.forms import CancelForm, ResendForm
from messaging.errors import HeraldError
from messaging.models import Message, Source, WebhookRequest
from messaging.services import messages as message_service
from messaging.services import webhooks as webhook_service

# A bulk action handles at most this many messages at once (each is its own transaction).
MAX_BULK = 1000
# The confirmation page lists this many by name and counts the rest.
LISTED = 50


def admin_context(model_admin, request, **extra):
    return {
        **model_admin.admin_site.each_context(request),
        "opts": model_admin.model._meta,
        "app_label": model_admin.model._meta.app_label,
        **extra,
    }


@dataclass(frozen=True)
class Repair:
    """What differs between resend and cancel; confirm() does the rest."""

    name: str  # "resend" / "cancel": permission, ids and the action's name
    allowed: Callable  # status.can_resend / status.can_cancel
    form_class: type
    perform: Callable  # (message, request, cleaned_data) -> the service's result
    title: str
    title_one: str
    intro: str  # what confirming does, "{n}" is the count
    none_text: str
    skipped_text: str
    done_text: str  # "{n}" is the count
    not_done: str  # the start of a per-message failure line

    @property
    def action(self):
        return f"{self.name}_messages"


def _resend(message, request, data):
    return message_service.resend(
        message,
        source=Source.ADMIN,
        actor=request.user,
        provider=data["provider"],
        reason=data["reason"],
        repeat=data.get("send_again", False),
    )


def _cancel(message, request, data):
    return message_service.cancel(
        message, source=Source.ADMIN, actor=request.user, reason=data["reason"]
    )


RESEND = Repair(
    name="resend",
    allowed=status.can_resend,
    form_class=ResendForm,
    perform=_resend,
    title="Resend messages",
    title_one="Resend this message",
    intro="{n} message(s) will be sent again as new messages, each linked to its original. "
    "The originals keep their status.",
    none_text="None of the selected messages can be resent: only failed, expired, rejected or "
    "unknown outbound messages can.",
    skipped_text="not in a resendable status",
    done_text="Resent {n} message(s); each copy is linked to its original.",
    not_done="Not resent",
)
CANCEL = Repair(
    name="cancel",
    allowed=status.can_cancel,
    form_class=CancelForm,
    perform=_cancel,
    title="Cancel queued messages",
    title_one="Cancel this message",
    intro="{n} queued message(s) will not be sent: each becomes cancelled (a final status).",
    none_text="None of the selected messages is queued, so none can be cancelled.",
    skipped_text="not queued",
    done_text="Cancelled {n} queued message(s).",
    not_done="Not cancelled",
)


def _bounded(queryset):
    """The selection as a list, or None when it is bigger than one bulk action may touch."""
    candidates = list(queryset.defer(None).order_by("created_at", "pk")[: MAX_BULK + 1])
    return None if len(candidates) > MAX_BULK else candidates


def confirm(model_admin, request, queryset, repair: Repair, *, single=None):
    """The confirmation page, then the repair. `single` is the message of the per-message page;
    otherwise this runs as the changelist's bulk action (its POST carries the action fields).
    Returns a response, or None to go back to the changelist (Django's action convention)."""
    if not getattr(model_admin, f"has_{repair.name}_permission")(request):
        raise PermissionDenied
    candidates = _bounded(queryset)
    if candidates is None:
        flash.error(request, f"Select at most {MAX_BULK} messages to {repair.name} at once.")
        return None
    allowed = [m for m in candidates if repair.allowed(m)]
    skipped = [m for m in candidates if not repair.allowed(m)]
    # Lineage: the copies that exist already, so nobody resends twice without seeing it.
    resent = selectors.existing_resends(allowed) if repair is RESEND else {}
    for message in allowed:
        message.existing_resends = resent.get(message.pk, [])
    form_kwargs = {"already_resent": bool(resent)} if repair is RESEND else {}
    confirmed = request.method == "POST" and request.POST.get("post") == "yes"
    form = repair.form_class(request.POST if confirmed else None, **form_kwargs)
    if confirmed and form.is_valid():
        if not allowed:
            flash.warning(request, repair.none_text)
            return None
        if resent and not form.cleaned_data.get("send_again"):
            held = [m for m in allowed if m.existing_resends]
            allowed = [m for m in allowed if not m.existing_resends]
            flash.warning(
                request,
                f'Not resent: {len(held)} message(s) already resent (tick "send again '
                'anyway" to send another copy).',
            )
        done, failures = [], []
        for message in allowed:
            try:
                done.append(repair.perform(message, request, form.cleaned_data))
            except HeraldError as exc:  # e.g. opted out, or claimed by the sender meanwhile
                failures.append(f"{str(message.pk)[:8]}: {exc}")
        if done:
            flash.success(request, repair.done_text.format(n=len(done)))
        for failure in failures:
            flash.error(request, f"{repair.not_done}: {failure}")
        if single is not None and repair is RESEND and len(done) == 1:
            return HttpResponseRedirect(
                reverse("admin:messaging_message_change", args=[done[0].pk])
            )
        return None
    return TemplateResponse(
        request,
        "herald/confirm_repair.html",
        admin_context(
            model_admin,
            request,
            title=repair.title if single is None else repair.title_one,
            repair=repair,
            intro=repair.intro.format(n=len(allowed)),
            form=form,
            single=single,
            allowed=allowed[:LISTED],
            allowed_count=len(allowed),
            already_resent=sum(1 for m in allowed if m.existing_resends),
            skipped=skipped[:LISTED],
            skipped_count=len(skipped),
            action_checkbox_name=helpers.ACTION_CHECKBOX_NAME,
            selected_ids=[m.pk for m in allowed],
            time_zone=display.zone_name(),
            form_id=f"herald-{repair.name}-form",
            confirm_id=f"herald-confirm-{repair.name}",
        ),
    )


def confirm_one(model_admin, request, object_id, repair: Repair):
    message = get_object_or_404(Message, pk=object_id)
    response = confirm(
        model_admin, request, Message.objects.filter(pk=message.pk), repair, single=message
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


def replay_one(model_admin, request, object_id):
    stored = get_object_or_404(WebhookRequest, pk=object_id)
    if request.method != "POST":
        raise PermissionDenied  # replay changes state: POST only (the button posts a form)
    replay_requests(model_admin, request, WebhookRequest.objects.filter(pk=stored.pk))
    return HttpResponseRedirect(reverse("admin:messaging_webhookrequest_change", args=[stored.pk]))
