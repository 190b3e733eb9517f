import django_filters

from messaging.models import Direction, Message, StatusChoices
from messaging.phone import normalise_loose


class MessageFilter(django_filters.FilterSet):
    status = django_filters.MultipleChoiceFilter(choices=StatusChoices.choices)
    provider = django_filters.CharFilter()
    direction = django_filters.ChoiceFilter(choices=Direction.choices)
    to = django_filters.CharFilter(method="filter_to", help_text="Exact number, E.164.")
    client_reference = django_filters.CharFilter()
    created_after = django_filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="gte")
    created_before = django_filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="lt")

    class Meta:
        model = Message
        fields = ["status", "provider", "direction", "to", "client_reference"]

    def filter_to(self, queryset, name, value):
        return queryset.filter(to_number=normalise_loose(value))
