"""Plain INSERT and UPDATE statements for the rows every call transaction writes.

A call cycle writes about forty rows in six transactions. Through the ORM each ``save()`` and
``bulk_create()`` compiles its SQL again and runs model signals; the profile of a loaded node put
a third of its database thread there (docs/benchmarks.md, "Where the time goes"). These helpers
write the same rows with one hand-built statement each, converting every value with the model
field's own ``get_db_prep_save`` (so JSON, datetimes and foreign keys are stored exactly as the
ORM stores them, on PostgreSQL and SQLite alike). The statements are cached per model and shape.

Reads stay with the ORM: they return model instances the services work with.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from functools import lru_cache

from django.conf import settings
from django.db import connection, models


class _PipelineState(threading.local):
    checks: list | None = None  # the open pipelined block's deferred checks, per thread


_pipeline = _PipelineState()


@contextmanager
def pipelined():
    """Send the statements of the block without waiting for each one's answer (PostgreSQL).

    A call transaction is a few locked reads, then five or six writes whose results nobody reads
    (docs/benchmarks.md). In psycopg's pipeline mode each write is sent at once and the block's
    end waits for all their answers together: one round trip instead of one per statement. A read
    in the block (``fetch*``) waits for the answers before it, so locked reads work as before.

    The block's end raises the first failed statement's error as Django's own exception class (a
    unique key still raises ``IntegrityError``), then runs the checks :func:`update` deferred, still
    inside the caller's transaction. Nested blocks join the outer one. Elsewhere (SQLite, or
    ``DATABASE_PIPELINE`` off) each statement waits as usual.
    """
    if _pipeline.checks is not None or not _pipelines_on():
        yield
        return
    connection.ensure_connection()
    checks: list = []
    _pipeline.checks = checks
    try:
        with connection.wrap_database_errors:
            with connection.connection.pipeline():
                yield
    finally:
        _pipeline.checks = None
    for check in checks:
        check()


def _pipelines_on() -> bool:
    return connection.vendor == "postgresql" and settings.DATABASE_PIPELINE


@lru_cache(maxsize=None)
def _fields(model: type[models.Model], names: tuple[str, ...]) -> tuple[models.Field, ...]:
    return tuple(model._meta.get_field(name) for name in names)


@lru_cache(maxsize=None)
def _insert_sql(model: type[models.Model], names: tuple[str, ...], count: int, vendor: str) -> str:
    quote = connection.ops.quote_name
    columns = ", ".join(quote(field.column) for field in _fields(model, names))
    row = "(" + ", ".join(["%s"] * len(names)) + ")"
    return (f"INSERT INTO {quote(model._meta.db_table)} ({columns}) VALUES "
            + ", ".join([row] * count))


def insert(model: type[models.Model], names: tuple[str, ...], rows: list[models.Model]) -> None:
    """INSERT ``rows`` (unsaved instances of ``model``) in one statement, writing ``names``.

    The primary keys are not read back: callers of this do not need them. A unique or foreign key
    violation raises ``IntegrityError`` as ``save()`` would.
    """
    if not rows:
        return
    fields = _fields(model, names)
    params = []
    for row in rows:
        for field in fields:
            params.append(field.get_db_prep_save(getattr(row, field.attname), connection))
    with connection.cursor() as cursor:
        cursor.execute(_insert_sql(model, names, len(rows), connection.vendor), params)


@lru_cache(maxsize=None)
def _create_parts(model: type[models.Model], vendor: str) -> tuple[tuple[str, ...], str]:
    names = tuple(field.name for field in model._meta.concrete_fields
                  if field is not model._meta.auto_field)
    returning = f" RETURNING {connection.ops.quote_name(model._meta.pk.column)}"
    return names, _insert_sql(model, names, 1, vendor) + returning


def create(instance: models.Model) -> None:
    """INSERT a new ``instance`` with every field, as ``save()`` does for one without a primary
    key, and set the key the database gave it (PostgreSQL and SQLite 3.35+ both return it).

    For models without ``pre_save`` work (no ``auto_now`` fields) and without ``post_save``
    receivers that the caller needs: the point is to skip both.
    """
    model = type(instance)
    names, sql = _create_parts(model, connection.vendor)
    params = [field.get_db_prep_save(getattr(instance, field.attname), connection)
              for field in _fields(model, names)]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        instance.pk = cursor.fetchone()[0]
    instance._state.adding = False
    instance._state.db = connection.alias


@lru_cache(maxsize=None)
def _update_sql(model: type[models.Model], names: tuple[str, ...], guard: str | None,
                vendor: str) -> str:
    quote = connection.ops.quote_name
    assignments = ", ".join(f"{quote(field.column)} = %s" for field in _fields(model, names))
    where = f"{quote(model._meta.pk.column)} = %s"
    if guard is not None:
        where += f" AND {quote(model._meta.get_field(guard).column)} = %s"
    return f"UPDATE {quote(model._meta.db_table)} SET {assignments} WHERE {where}"


def update(instance: models.Model, names: tuple[str, ...], *, guard: str | None = None,
           guard_value=None, on_miss=None) -> None:
    """UPDATE ``names`` of ``instance``'s row (if ``guard`` is given, only while that column still
    equals ``guard_value``). ``on_miss()`` is called when no row changed: at once, or inside a
    :func:`pipelined` block once the block's statements are answered (before it ends)."""
    model = type(instance)
    fields = _fields(model, names)
    params = [field.get_db_prep_save(getattr(instance, field.attname), connection)
              for field in fields]
    params.append(instance.pk)
    if guard is not None:
        params.append(guard_value)
    with connection.cursor() as cursor:
        cursor.execute(_update_sql(model, names, guard, connection.vendor), params)
        if on_miss is None:
            return
        checks = _pipeline.checks
        if checks is None:
            if cursor.rowcount != 1:
                on_miss()
            return
        raw = cursor.cursor  # psycopg's cursor: its rowcount is set when the block syncs

        def check():
            if raw.rowcount != 1:
                on_miss()
        checks.append(check)


# ---- locked reads ---------------------------------------------------------------------------


@lru_cache(maxsize=None)
def _reader(model: type[models.Model]):
    """The model's concrete fields with the converters the ORM applies to each column."""
    alias = model._meta.db_table
    fields = tuple(model._meta.concrete_fields)
    converters = []
    for field in fields:
        col = field.get_col(alias)
        converters.append((col, tuple(connection.ops.get_db_converters(col))
                           + tuple(col.get_db_converters(connection))))
    quote = connection.ops.quote_name
    columns = tuple(f"{quote(alias)}.{quote(field.column)}" for field in fields)
    return fields, tuple(converters), columns, [field.attname for field in fields]


def _build(model: type[models.Model], values) -> models.Model:
    _, converting, _, attnames = _reader(model)
    converted = []
    for (col, converters), value in zip(converting, values):
        for converter in converters:
            value = converter(value, col, connection)
        converted.append(value)
    return model.from_db(connection.alias, attnames, converted)


def column(model: type[models.Model], name: str) -> str:
    """``table.column`` of a model field, quoted, for the ``where`` of :func:`select_for_update`."""
    quote = connection.ops.quote_name
    return f"{quote(model._meta.db_table)}.{quote(model._meta.get_field(name).column)}"


@lru_cache(maxsize=None)
def _select_sql(model: type[models.Model], where: str, related: str | None, order_by: str | None,
                vendor: str) -> str:
    quote = connection.ops.quote_name
    table = quote(model._meta.db_table)
    columns = list(_reader(model)[2])
    join = ""
    if related is not None:
        link = model._meta.get_field(related)
        target = link.related_model
        columns += _reader(target)[2]
        join = (f" INNER JOIN {quote(target._meta.db_table)} ON "
                f"{quote(target._meta.db_table)}.{quote(target._meta.pk.column)} = "
                f"{table}.{quote(link.column)}")
    sql = f"SELECT {', '.join(columns)} FROM {table}{join} WHERE {where}"
    if order_by is not None:
        sql += f" ORDER BY {column(model, order_by)}"
    if connection.features.has_select_for_update:
        sql += " FOR UPDATE"
        if related is not None and connection.features.has_select_for_update_of:
            sql += f" OF {table}"
    return sql


def select_for_update(model: type[models.Model], where: str, params, *, related: str | None = None,
                      order_by: str | None = None) -> list[models.Model]:
    """Rows of ``model`` matching ``where`` (SQL over :func:`column` names), locked for this
    transaction (only ``model``'s rows, not the joined ones). ``related`` names a foreign key whose
    row is read in the same statement and cached on each instance, as ``select_related`` does."""
    target = model._meta.get_field(related) if related is not None else None
    width = len(_reader(model)[0])
    found = []
    with connection.cursor() as cursor:
        cursor.execute(_select_sql(model, where, related, order_by, connection.vendor), params)
        for values in cursor.fetchall():
            instance = _build(model, values[:width])
            if target is not None:
                target.set_cached_value(instance, _build(target.related_model, values[width:]))
            found.append(instance)
    return found
