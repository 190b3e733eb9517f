"""A paginator that never runs an unbounded COUNT(*).

The admin changelist counts its rows on every page view. At a million messages an exact
count is a full scan, so:
- unfiltered on PostgreSQL: the planner's estimate (pg_class.reltuples), shown as "about N";
- otherwise: a count capped at COUNT_CAP (`SELECT count(*) FROM (... LIMIT cap + 1)`), exact
  when below the cap and shown as "more than N" above it.
"""

from django.core.paginator import EmptyPage, PageNotAnInteger, Paginator
from django.utils.functional import cached_property

from messaging import selectors

COUNT_CAP = 10_000


class EstimatedCountPaginator(Paginator):
    count_cap = COUNT_CAP

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.is_estimate = False  # an estimate of the whole table
        self.is_capped = False  # at least count_cap + 1 rows, exact number unknown

    @cached_property
    def count(self):
        queryset = self.object_list
        if _unfiltered(queryset):
            estimate = selectors.estimated_row_count(queryset.model)
            # Small tables are counted exactly: cheap, and estimates are coarse there.
            if estimate is not None and estimate > self.count_cap:
                self.is_estimate = True
                return estimate
        capped = queryset.order_by().values("pk")[: self.count_cap + 1].count()
        if capped > self.count_cap:
            self.is_capped = True  # "at least cap + 1": more pages than one, whatever per_page
        return capped

    @property
    def display_count(self) -> str:
        if self.is_capped:
            return f"more than {self.count_cap:,}"
        if self.is_estimate:
            return f"about {self.count:,}"
        return f"{self.count:,}"

    @property
    def exact(self) -> bool:
        self.count  # noqa: B018 - computing the count decides whether it is exact
        return not (self.is_estimate or self.is_capped)

    def page(self, number):
        if self.exact:
            return super().page(number)
        # Never clamp the slice to an inexact count: past a capped count there are more rows.
        number = self.validate_number(number)
        bottom = (number - 1) * self.per_page
        return self._get_page(self.object_list[bottom : bottom + self.per_page], number, self)

    def validate_number(self, number):
        """An inexact count must not refuse a page that exists (the estimate may be low) nor
        fail on one past the end (it may be high): an empty page is the honest answer."""
        if self.exact:
            return super().validate_number(number)
        try:
            number = int(number)
        except (TypeError, ValueError):
            raise PageNotAnInteger("That page number is not an integer") from None
        if number < 1:
            raise EmptyPage("That page number is less than 1")
        return number


def _unfiltered(queryset) -> bool:
    query = queryset.query
    return not query.where and not query.distinct and not query.combinator
