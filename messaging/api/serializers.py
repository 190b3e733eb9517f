from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import serializers

from messaging import validation
from messaging.api.fields import (
    StrictBooleanField,
    StrictCharField,
    StrictDateTimeField,
    StrictJSONObjectField,
    StrictListField,
    StrictSerializer,
)
from messaging.callback_http import validate_url
from messaging.models import ApiKey, Message, StatusEvent

SENDER_MAX = 32
REFERENCE_MAX = 100


class MessageInputSerializer(StrictSerializer):
    """What a send and a quote take (a quote ignores nothing: the same body, the same checks)."""

    to = StrictCharField(help_text="Recipient in E.164, e.g. +447700900123.")
    body = StrictCharField(
        trim_whitespace=False, help_text="Message text; GSM-7 or UCS-2 is chosen automatically."
    )
    provider = StrictCharField(
        required=False, help_text="One of the enabled providers; the default when omitted."
    )
    client_reference = StrictCharField(required=False, max_length=REFERENCE_MAX, allow_blank=True)
    send_at = StrictDateTimeField(
        required=False, help_text="Send later: ISO 8601 with a UTC offset or Z."
    )
    metadata = StrictJSONObjectField(
        required=False, help_text="A JSON object of your own, up to 4 KiB; returned as given."
    )
    callback_url = StrictCharField(
        required=False, allow_blank=True, max_length=500,
        validators=[validate_url],
        help_text="https URL for this message's status callbacks, instead of the client's.",
    )  # fmt: skip

    def get_fields(self):
        fields = super().get_fields()
        # `from` is a Python keyword, so the field is declared here.
        fields["from"] = StrictCharField(
            required=False,
            allow_blank=True,
            max_length=SENDER_MAX,
            help_text="Sender: a number in E.164 or an alphanumeric id of 1-11 characters; the "
            "provider's configured sender when omitted.",
        )
        return fields

    def validate_to(self, value):
        return validation.clean_number(value)

    def validate_body(self, value):
        return validation.clean_body(value)

    def validate_provider(self, value):
        return validation.clean_provider(value)

    def validate_send_at(self, value):
        return validation.clean_send_at(value)

    def validate(self, attrs):
        if "from" in attrs:
            try:
                attrs["from"] = validation.clean_sender(attrs["from"])
            except DjangoValidationError as exc:
                raise serializers.ValidationError({"from": exc.messages}) from None
        return attrs


class RecipientSerializer(StrictSerializer):
    """One entry of a batch's `recipients` (documentation: the batch service checks them, all
    at once, in messaging/services/batches.py)."""

    to = StrictCharField(help_text="Recipient in E.164.")
    client_reference = StrictCharField(required=False, max_length=REFERENCE_MAX)
    variables = StrictJSONObjectField(
        required=False,
        help_text='Values for the body\'s {{name}} placeholders, e.g. {"name": "Ann"}.',
    )


class BatchCreateSerializer(MessageInputSerializer):
    body = StrictCharField(
        trim_whitespace=False,
        help_text="Message text for every recipient, with {{name}} placeholders filled from "
        "each recipient's variables.",
    )
    recipients = StrictListField(
        max_length=settings.BATCH_MAX_RECIPIENTS,
        child=RecipientSerializer(),
        help_text="Up to BATCH_MAX_RECIPIENTS (1,000) recipients.",
    )
    partial = StrictBooleanField(
        required=False,
        default=False,
        help_text="false (default): one invalid recipient refuses the whole batch. true: the "
        "valid ones are sent and the invalid ones listed.",
    )

    def get_fields(self):
        fields = super().get_fields()
        del fields["to"], fields["client_reference"]
        return fields

    def validate_body(self, value):
        if not value.strip():
            raise serializers.ValidationError("The message body must not be empty.")
        return value


class ResendSerializer(StrictSerializer):
    provider = StrictCharField(required=False, help_text="Send through another provider.")
    reason = StrictCharField(required=False, allow_blank=True, max_length=500)

    validate_provider = MessageInputSerializer.validate_provider


class CancelSerializer(StrictSerializer):
    reason = StrictCharField(required=False, allow_blank=True, max_length=500)


class StatusEventSerializer(serializers.ModelSerializer):
    # Null for events without a person (webhooks, the sender): say so in the schema.
    actor = serializers.StringRelatedField(allow_null=True)

    class Meta:
        model = StatusEvent
        fields = [
            "status",
            "provider_status",
            "error_code",
            "error_text",
            "part_id",
            "provider_timestamp",
            "received_at",
            "source",
            "actor",
            "applied",
            "note",
        ]


class MessageSerializer(serializers.ModelSerializer):
    to = serializers.CharField(source="to_number")
    provider_message_ids = serializers.SerializerMethodField()
    resends = serializers.PrimaryKeyRelatedField(many=True, read_only=True)
    test = serializers.SerializerMethodField(
        help_text="Created with a test key: sent through the sandbox, whatever `provider` said."
    )

    class Meta:
        model = Message
        fields = [
            "id",
            "direction",
            "to",
            "from",
            "body",
            "provider",
            "test",
            "provider_message_id",
            "provider_message_ids",
            "client_reference",
            "status",
            "error_code",
            "error_text",
            "segments",
            "encoding",
            "price",
            "currency",
            "attempts",
            "send_at",
            "sent_at",
            "completed_at",
            "resend_of",
            "resends",
            "metadata",
            "callback_url",
            "created_at",
            "updated_at",
        ]

    def get_test(self, obj) -> bool:
        return obj.api_key_id is not None and obj.api_key.kind == ApiKey.Kind.TEST

    def get_provider_message_ids(self, obj) -> list[str]:
        return [p.provider_message_id for p in obj.parts.all()]


# `from` is a Python keyword, so it cannot be a class attribute.
MessageSerializer._declared_fields["from"] = serializers.CharField(
    source="from_number", read_only=True
)


class MessageDetailSerializer(MessageSerializer):
    events = StatusEventSerializer(many=True, read_only=True)

    class Meta(MessageSerializer.Meta):
        fields = MessageSerializer.Meta.fields + ["events"]


class QuoteSerializer(serializers.Serializer):
    provider = serializers.CharField(help_text="The provider this send would go through.")
    encoding = serializers.ChoiceField(choices=["GSM-7", "UCS-2"])
    segments = serializers.IntegerField(help_text="SMS parts this body takes (billed each).")
    characters = serializers.IntegerField()
    ucs2_characters = serializers.ListField(
        child=serializers.CharField(),
        help_text="The characters that force UCS-2 (70 characters a part instead of 160); "
        "empty for GSM-7.",
    )
    country = serializers.CharField(help_text="ISO 3166 country of the number ('' if none).")
    price_per_segment = serializers.CharField(
        allow_null=True, help_text="A decimal string, from SMS_PRICES; null when none matches."
    )
    price = serializers.CharField(
        allow_null=True,
        help_text="Estimated, a decimal string: segments x price_per_segment; null when "
        "SMS_PRICES has no entry for the provider and country.",
    )
    currency = serializers.CharField(help_text="'' when there is no price.")
