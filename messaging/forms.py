"""Admin forms. The Send SMS form validates exactly like the send API
(messaging.api.serializers.MessageCreateSerializer): E.164 via phonenumbers, a non-empty body
under MAX_BODY_CHARS, an enabled provider, send_at not in the past, and the opt-out list."""

from django import forms

from messaging import providers, validation
from messaging.api.serializers import SENDER_MAX
from messaging.services.messages import is_opted_out


def provider_choices(blank_label=None):
    choices = [(name, name) for name in providers.enabled_names() if providers.is_enabled(name)]
    if blank_label is not None:
        choices.insert(0, ("", blank_label))
    return choices


class SendSmsForm(forms.Form):
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


class ResendForm(forms.Form):
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

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["provider"].choices = provider_choices("Same provider as the original")

    def clean_provider(self):
        return validation.clean_provider(self.cleaned_data.get("provider") or "")

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
