from rest_framework import serializers

from messaging import validation
from messaging.callback_http import validate_url
from messaging.models import Message, StatusEvent

SENDER_MAX = 32


class MessageCreateSerializer(serializers.Serializer):
    to = serializers.CharField(help_text="Recipient in E.164, e.g. +447700900123.")
    body = serializers.CharField(
        trim_whitespace=False, help_text="Message text; GSM-7 or UCS-2 is chosen automatically."
    )
    provider = serializers.CharField(
        required=False, help_text="One of the enabled providers; the default when omitted."
    )
    client_reference = serializers.CharField(required=False, max_length=100, allow_blank=True)
    send_at = serializers.DateTimeField(required=False, help_text="Send later (ISO 8601).")
    metadata = serializers.JSONField(required=False, help_text="Free-form JSON object.")
    callback_url = serializers.CharField(
        required=False, allow_blank=True, max_length=500,
        validators=[validate_url],
        help_text="https URL for this message's status callbacks, instead of the client's.",
    )  # fmt: skip

    def get_fields(self):
        fields = super().get_fields()
        # `from` is a Python keyword, so the field is declared here.
        fields["from"] = serializers.CharField(
            required=False,
            allow_blank=True,
            max_length=SENDER_MAX,
            help_text="Sender id or number; the provider's configured sender when omitted.",
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

    def validate_metadata(self, value):
        if not isinstance(value, dict):
            raise serializers.ValidationError("metadata must be a JSON object.")
        if len(str(value)) > 4096:
            raise serializers.ValidationError("metadata must be under 4 KiB.")
        return value


class ResendSerializer(serializers.Serializer):
    provider = serializers.CharField(required=False, help_text="Send through another provider.")
    reason = serializers.CharField(required=False, allow_blank=True, max_length=500)

    validate_provider = MessageCreateSerializer.validate_provider


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

    class Meta:
        model = Message
        fields = [
            "id",
            "direction",
            "to",
            "from",
            "body",
            "provider",
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
