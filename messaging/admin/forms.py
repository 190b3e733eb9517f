"""Admin forms (send, resend, cancel, opt-outs). The Send SMS form validates exactly like the
send API (messaging.api.serializers.MessageInputSerializer): E.164 via phonenumbers, a
non-empty body under MAX_BODY_CHARS, an enabled provider, send_at not in the past, and the
opt-out list."""

from django import forms
from django.utils import timezone

from messaging import providers, validation
from messaging.api.serializers import SENDER_MAX
from messaging.models import Client
from messaging.services.messages import is_opted_out


def provider_choices(blank_label=None):
    choices = [(name, name) for name in providers.enabled_names() if providers.is_enabled(name)]
    if blank_label is not None:
        choices.insert(0, ("", blank_label))
    return choices


class SendSmsForm(forms.Form):
    client = forms.ModelChoiceField(
        queryset=Client.objects.filter(is_active=True),
        required=False,
        help_text="The client the message belongs to (its own providers, sender id and "
        "callbacks apply). Empty: the default client.",
    )
    to = forms.CharField(
        label="To",
        max_length=32,
        help_text="The recipient in international format, e.g. +447700900123.",
        widget=forms.TextInput(attrs={"autofocus": True, "autocomplete": "off"}),
    )
    body = forms.CharField(
        strip=False,
        widget=forms.Textarea(attrs={"rows": 5, "cols": 60}),
        help_text="GSM-7 or UCS-2 is chosen automatically; long texts are sent in segments.",
    )
    provider = forms.ChoiceField(choices=(), required=False)
    sender = forms.CharField(
        label="From",
        required=False,
        max_length=SENDER_MAX,
        help_text="Sender id or number; the provider's configured sender when empty.",
    )
    client_reference = forms.CharField(required=False, max_length=100)
    send_at = forms.DateTimeField(
        required=False,
        help_text="Send later (YYYY-MM-DD HH:MM, UTC). Empty: now.",
        widget=forms.DateTimeInput(attrs={"placeholder": "YYYY-MM-DD HH:MM"}),
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Empty: the routing table decides (messaging/services/routing.py); a named provider
        # is authoritative.
        self.fields["provider"].choices = provider_choices("Route (by destination and health)")
        self.fields["provider"].initial = ""
        self.fields["client"].initial = Client.objects.default().pk
        # Typed times are read in the zone the admin shows (the staff user's, or UTC).
        zone = timezone.get_current_timezone_name()
        self.fields["send_at"].help_text = f"Send later (YYYY-MM-DD HH:MM, {zone}). Empty: now."

    def clean_to(self):
        number = validation.clean_number(self.cleaned_data["to"])
        if is_opted_out(number):
            raise forms.ValidationError(
                f"{number} has opted out of messages (they sent STOP). It cannot be sent to "
                "until they opt back in.",
                code="opted_out",
            )
        return number

    def clean_body(self):
        return validation.clean_body(self.cleaned_data["body"])

    def clean_provider(self):
        return validation.clean_provider(self.cleaned_data.get("provider") or "")

    def clean_send_at(self):
        return validation.clean_send_at(self.cleaned_data.get("send_at"))

    def clean_sender(self):
        return validation.clean_sender(self.cleaned_data.get("sender") or "")


class QuoteForm(forms.Form):
    """The send form's fields a quote needs; the number is checked only as far as a quote can
    use it (a country for the price), so a half-typed number still gets segments."""

    client = forms.ModelChoiceField(queryset=Client.objects.filter(is_active=True), required=False)
    to = forms.CharField(required=False, max_length=32)
    body = forms.CharField(strip=False)
    provider = forms.CharField(required=False, max_length=32)

    def clean_to(self):
        try:
            return validation.clean_number(self.cleaned_data.get("to") or "")
        except forms.ValidationError:
            return ""


class ResendForm(forms.Form):
    field_order = ["provider", "reason", "send_again"]
    send_again = forms.BooleanField(
        label="Send again anyway",
        required=False,
        help_text="Some of these messages were resent already. Tick to send another copy of "
        "them too (the reason is then required and kept on the timeline); otherwise they are "
        "skipped.",
    )
    provider = forms.ChoiceField(
        choices=(),
        required=False,
        help_text="Send the copies through another provider, or keep each message's own.",
    )
    reason = forms.CharField(
        max_length=500,
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        help_text="Why these messages are sent again. Kept on the new and the original "
        "message's timeline.",
    )

    def clean_provider(self):
        return validation.clean_provider(self.cleaned_data.get("provider") or "")

    def __init__(self, *args, already_resent=False, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["provider"].choices = provider_choices("Same provider as the original")
        if not already_resent:  # the box only means something when a copy exists
            del self.fields["send_again"]

    def clean_reason(self):
        reason = self.cleaned_data["reason"].strip()
        if not reason:
            raise forms.ValidationError("Say why the messages are resent.")
        return reason


class CancelForm(forms.Form):
    reason = forms.CharField(
        required=False,
        max_length=500,
        widget=forms.Textarea(attrs={"rows": 2, "cols": 60}),
        help_text="Optional; kept on the message's timeline.",
    )


class OptOutAddForm(forms.Form):
    phone_number = forms.CharField(
        label="Number",
        max_length=32,
        help_text="In international format, e.g. +447700900123. Nothing is sent to it from now on.",
        widget=forms.TextInput(attrs={"autofocus": True, "autocomplete": "off"}),
    )
    reason = forms.CharField(
        max_length=255,
        widget=forms.Textarea(attrs={"rows": 2, "cols": 60}),
        help_text="Required: why staff opt this number out (e.g. the person asked by phone). "
        "Kept in the number's history with your username.",
    )

    def clean_phone_number(self):
        return validation.clean_number(self.cleaned_data["phone_number"])

    def clean_reason(self):
        return _required_reason(self.cleaned_data["reason"])


class OptOutRemoveForm(forms.Form):
    reason = forms.CharField(
        max_length=255,
        widget=forms.Textarea(attrs={"rows": 2, "cols": 60}),
        help_text="Required: why messages may be sent to these numbers again (e.g. written "
        "consent). Kept in each number's history with your username.",
    )

    def clean_reason(self):
        return _required_reason(self.cleaned_data["reason"])


def _required_reason(text):
    reason = (text or "").strip()
    if not reason:
        raise forms.ValidationError("Say why.")
    return reason
