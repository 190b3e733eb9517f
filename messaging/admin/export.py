"""The message changelist as CSV: the same filters, search and order, streamed row by row from
selectors.export_rows, every text cell escaped against spreadsheet formula injection."""

import csv
import re
from datetime import datetime

from django.http import StreamingHttpResponse
from django.utils import timezone

from messaging import selectors

BODY_PERMISSION = "messaging.export_message_body"


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


def csv_response(queryset, *, with_body: bool):
    columns = selectors.export_columns(with_body=with_body)
    rows = selectors.export_rows(queryset, columns)
    writer = csv.writer(_Echo())

    def stream():
        yield writer.writerow([name for name, _ in columns])
        for row in rows:
            yield writer.writerow([_cell(value) for value in row])

    stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
    response = StreamingHttpResponse(stream(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="herald-messages-{stamp}.csv"'
    return response
