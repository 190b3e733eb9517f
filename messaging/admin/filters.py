"""Changelist filters that stay cheap at a million rows: their choices come from configuration
or a cached loose index scan, never from `SELECT DISTINCT` over the table, and each filters on
an indexed column."""

from datetime import datetime, time, timedelta

from django.conf import settings
from django.contrib import admin
from django.contrib.admin.options import IncorrectLookupParameters
from django.utils import timezone

from config.providers import PROVIDER_SPECS
from messaging import selectors
from messaging.models import Client

ANY_ERROR, NO_ERROR = "__any__", "__none__"


class ProviderFilter(admin.SimpleListFilter):
    title = "provider"
    parameter_name = "provider"

    def lookups(self, request, model_admin):
        # Enabled providers first, then the other known ones (old messages may use them).
        names = list(settings.SMS_PROVIDERS)
        names += [name for name in PROVIDER_SPECS if name not in names]
        return [(name, name) for name in names]

    def queryset(self, request, queryset):
        if self.value():
            return queryset.filter(provider=self.value())
        return queryset


class ClientFilter(admin.SimpleListFilter):
    """The owning client, by slug. Clients are a small table; the filter is on the indexed
    foreign key."""

    title = "client"
    parameter_name = "client"

    def lookups(self, request, model_admin):
        return list(Client.objects.order_by("name").values_list("slug", "name"))

    def queryset(self, request, queryset):
        if self.value():
            return queryset.filter(client__slug=self.value())
        return queryset


class ErrorCodeFilter(admin.SimpleListFilter):
    title = "error code"
    parameter_name = "error_code"

    def lookups(self, request, model_admin):
        codes = selectors.distinct_error_codes()
        return [(ANY_ERROR, "Any error"), (NO_ERROR, "No error")] + [(c, c) for c in codes]

    def queryset(self, request, queryset):
        value = self.value()
        if value == ANY_ERROR:
            return queryset.exclude(error_code="")
        if value == NO_ERROR:
            return queryset.filter(error_code="")
        if value:
            return queryset.filter(error_code=value)
        return queryset


class CreatedRangeFilter(admin.ListFilter):
    """Created between two dates (inclusive), typed into two date inputs."""

    title = "date created"
    template = "herald/filters/date_range.html"
    field = "created_at"
    start_param, end_param = "created_from", "created_to"

    def __init__(self, request, params, model, model_admin):
        super().__init__(request, params, model, model_admin)
        for name in self.expected_parameters():
            if name in params:
                self.used_parameters[name] = params.pop(name)[-1].strip()

    def expected_parameters(self):
        return [self.start_param, self.end_param]

    def has_output(self):
        return True

    def _day(self, name):
        text = self.used_parameters.get(name)
        if not text:
            return None
        try:
            day = datetime.strptime(text, "%Y-%m-%d").date()
        except ValueError:
            raise IncorrectLookupParameters(f"{name} must be a date (YYYY-MM-DD)") from None
        return timezone.make_aware(datetime.combine(day, time.min))

    def queryset(self, request, queryset):
        start, end = self._day(self.start_param), self._day(self.end_param)
        if start:
            queryset = queryset.filter(**{f"{self.field}__gte": start})
        if end:  # the whole end day is included
            queryset = queryset.filter(**{f"{self.field}__lt": end + timedelta(days=1)})
        return queryset

    def choices(self, changelist):
        """One pseudo-choice carrying what the template's small GET form needs: the current
        values, the other query parameters to keep as hidden inputs, and a reset link."""
        names = self.expected_parameters()
        keep = [
            (name, value)
            for name, values in changelist.filter_params.items()
            if name not in names
            for value in values
        ]
        yield {
            "selected": any(self.used_parameters.get(n) for n in names),
            "start": self.used_parameters.get(self.start_param, ""),
            "end": self.used_parameters.get(self.end_param, ""),
            "start_param": self.start_param,
            "end_param": self.end_param,
            "keep": keep,
            "query_string": changelist.get_query_string(remove=names),
            "display": "Any date",
        }


class WebhookKindFilter(admin.SimpleListFilter):
    title = "kind"
    parameter_name = "kind"

    def lookups(self, request, model_admin):
        return [("status", "Status reports"), ("inbound", "Inbound messages")]

    def queryset(self, request, queryset):
        if self.value():
            return queryset.filter(kind=self.value())
        return queryset
