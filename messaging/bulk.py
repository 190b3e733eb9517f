"""Writing many rows at once, for the batched paths (the applier, the send recorder)."""

import psycopg
from django.db import connection


def bulk_set(model, objs: list, fields: list, chunk: int = 1000):
    """Write `fields` of many rows. On PostgreSQL one `UPDATE ... FROM (VALUES ...)` per chunk:
    Django's bulk_update builds a CASE expression per field whose size grows with the batch (its
    Python cost dominated a 2,000-report batch, and PostgreSQL evaluates it row by row)."""
    if not objs:
        return
    if connection.vendor != "postgresql":
        model.objects.bulk_update(objs, fields, batch_size=100)
        return
    meta = model._meta
    columns = [meta.pk] + [meta.get_field(name) for name in fields]
    qn = connection.ops.quote_name
    row = "(" + ", ".join(f"%s::{f.db_type(connection)}" for f in columns) + ")"
    assignments = ", ".join(f"{qn(f.column)} = v.{qn(f.column)}" for f in columns[1:])
    names = ", ".join(qn(f.column) for f in columns)
    # Server-side binding: ten thousand parameters travel as they are, not quoted into the SQL
    # text by the client (Django's default cursor), which cost more CPU than the UPDATE itself.
    connection.ensure_connection()
    with connection.wrap_database_errors, psycopg.Cursor(connection.connection) as cursor:
        for start in range(0, len(objs), chunk):
            part = objs[start : start + chunk]
            params = [
                f.get_db_prep_save(getattr(obj, f.attname), connection)
                for obj in part
                for f in columns
            ]
            cursor.execute(  # identifiers from the model, values as parameters
                f"UPDATE {qn(meta.db_table)} AS t SET {assignments} "  # noqa: S608
                f"FROM (VALUES {', '.join([row] * len(part))}) AS v({names}) "
                f"WHERE t.{qn(meta.pk.column)} = v.{qn(meta.pk.column)}",
                params,
                prepare=False,
            )
