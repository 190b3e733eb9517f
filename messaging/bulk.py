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


def bulk_insert(model, objs: list):
    """Insert many new rows (no ids returned). On PostgreSQL through COPY: Django's bulk_create
    spent more CPU building and quoting one big INSERT for a receipt batch's callbacks (and
    psycopg more splitting it) than PostgreSQL spent inserting them."""
    if not objs:
        return
    if connection.vendor != "postgresql":
        model.objects.bulk_create(objs, batch_size=500)
        return
    meta = model._meta
    for field in meta.concrete_fields:  # what Model.save would fill in (auto_now_add)
        if getattr(field, "auto_now_add", False) or getattr(field, "auto_now", False):
            for obj in objs:
                field.pre_save(obj, add=True)
    columns = [f for f in meta.concrete_fields if not f.primary_key or f.has_default()]
    qn = connection.ops.quote_name
    names = ", ".join(qn(f.column) for f in columns)
    connection.ensure_connection()
    sql = f"COPY {qn(meta.db_table)} ({names}) FROM STDIN"
    with (
        connection.wrap_database_errors,
        psycopg.Cursor(connection.connection) as cursor,
        cursor.copy(sql) as copy,
    ):
        for obj in objs:
            copy.write_row([f.get_db_prep_save(getattr(obj, f.attname), connection)
                            for f in columns])  # fmt: skip
