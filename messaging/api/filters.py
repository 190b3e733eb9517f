from datetime import UTC

import django_filters
from django import forms
from django_filters.fields import IsoDateTimeField

from messaging.models import Direction, Message, StatusChoices
from messaging.phone import normalise_loose


class UtcIsoDateTimeField(IsoDateTimeField):
    """ISO 8601, converted to UTC. Python accepts UTC offsets up to +-23:59 but PostgreSQL only
    up to +-15:59, so `...+16:38` reached the query as it was and failed there (a 500 found
    by schemathesis); in UTC it is an ordinary instant. One that has no UTC equivalent (year 1
    with a positive offset) is a 400."""

    def to_python(self, value):
        value = super().to_python(value)
        if value is None:
            return None
        try:
            return value.astimezone(UTC)
        except OverflowError:
            raise forms.ValidationError("Date and time out of range.", code="invalid") from None


class UtcIsoDateTimeFilter(django_filters.IsoDateTimeFilter):
    field_class = UtcIsoDateTimeField


class MessageFilter(django_filters.FilterSet):
    status = django_filters.MultipleChoiceFilter(choices=StatusChoices.choices)
    provider = django_filters.CharFilter()
    direction = django_filters.ChoiceFilter(choices=Direction.choices)
    to = django_filters.CharFilter(method="filter_to", help_text="Exact number, E.164.")
    client_reference = django_filters.CharFilter()
    created_after = UtcIsoDateTimeFilter(field_name="created_at", lookup_expr="gte")
    created_before = UtcIsoDateTimeFilter(field_name="created_at", lookup_expr="lt")

    class Meta:
        model = Message
        fields = ["status", "provider", "direction", "to", "client_reference"]

    def filter_to(self, queryset, name, value):
        return queryset.filter(to_number=normalise_loose(value))
