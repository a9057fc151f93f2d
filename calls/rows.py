"""Plain INSERT and UPDATE statements for the rows every call transaction writes.

A call cycle writes about forty rows in six transactions. Through the ORM each ``save()`` and
``bulk_create()`` compiles its SQL again and runs model signals; the profile of a loaded node put
a third of its database thread there (docs/benchmarks.md, "Where the time goes"). These helpers
write the same rows with one hand-built statement each, converting every value with the model
field's own ``get_db_prep_save`` (so JSON, datetimes and foreign keys are stored exactly as the
ORM stores them, on PostgreSQL and SQLite alike). The statements are cached per model and shape.

Two more costs are left out here, both measured (docs/benchmarks.md, "Statements without
Django's per-statement layers"):

- ``django.db.connection`` is a proxy that finds the thread's connection again on every attribute
  read (an asgiref ``Local`` lookup); the conversions read it a few hundred times per cycle. These
  helpers look the wrapper up once per statement (:func:`database`) and hand that on.
- Inside a transaction on PostgreSQL a statement runs on a cursor of the open psycopg connection,
  not through Django's cursor wrapper (its async check, connection check and execute wrappers),
  still under Django's error mapping (``IntegrityError`` stays ``IntegrityError``). Django's own
  path is kept wherever something listens to it: debug query logging (``DEBUG``,
  ``assertNumQueries``), ``execute_wrapper`` instrumentation, SQLite, and outside a transaction.

Reads stay with the ORM's model instances: the services work with them. Writes take plain
values (:func:`insert_values`): a row that is only written needs no model instance.
"""

from __future__ import annotations

import threading
from contextlib import ExitStack, contextmanager
from datetime import datetime
from functools import lru_cache
from typing import NamedTuple

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections, models


def database():
    """The default database's wrapper itself (not the proxy ``django.db.connection``)."""
    return connections[DEFAULT_DB_ALIAS]


@contextmanager
def cursor(db, *, numbered: bool = False):
    """A cursor for one of these statements: the open psycopg connection's own inside a
    PostgreSQL transaction that nothing instruments, Django's cursor otherwise.

    ``numbered``: the statement writes its parameters ``$1, $2, ...`` (:func:`flush_writes`'),
    for psycopg's ``RawCursor``; only inside a block that holds writes back, where nothing
    listens to statements either."""
    raw = db.connection
    if not numbered and (raw is None or not db.in_atomic_block or db.vendor != "postgresql"
                         or db.execute_wrappers or db.force_debug_cursor or settings.DEBUG):
        with db.cursor() as wrapped:
            yield wrapped
        return
    db.validate_no_broken_transaction()
    with db.wrap_database_errors:
        if numbered:
            from psycopg import RawCursor

            plain = RawCursor(raw)
        else:
            plain = raw.cursor()
        try:
            yield plain
        finally:
            plain.close()


class _PipelineState(threading.local):
    checks: list | None = None  # the open pipelined block's deferred checks, per thread
    writes: list | None = None  # the writes it holds back for one statement (:func:`flush_writes`)
    guards: list | None = None  # with its COMMIT in the pipeline: the ``on_miss`` of each guard


# The SQLSTATE of duet_guard()'s error (calls/migrations/0004_version_guard_function.py).
GUARD_SQLSTATE = "DU409"


_pipeline = _PipelineState()


@contextmanager
def pipelined(*, commit: bool = False):
    """Send the statements of the block without waiting for each one's answer (PostgreSQL).

    A call transaction is a few locked reads, then five or six writes whose results nobody reads
    (docs/benchmarks.md). In psycopg's pipeline mode each write is sent at once and the block's
    end waits for all their answers together: one round trip instead of one per statement. A read
    in the block (``fetch*``) waits for the answers before it, so locked reads work as before.

    The block's end raises the first failed statement's error as Django's own exception class (a
    unique key still raises ``IntegrityError``), then runs the checks :func:`update` deferred, still
    inside the caller's transaction. Nested blocks join the outer one. Elsewhere (SQLite, or
    ``DATABASE_PIPELINE`` off) each statement waits as usual.

    ``commit``: the block is the whole body of the outermost ``transaction.atomic()`` around it,
    which commits right after it. Where the block's writes are joined (:func:`flush_writes`), its
    COMMIT is then sent behind them and answered in the same round trip (Django's own commit
    finds nothing left to do), and a guarded UPDATE fails in PostgreSQL (duet_guard), so that a
    miss still keeps the whole transaction from committing. Inside another atomic block (a
    caller's, a test's) the block leaves the commit to Django as before.
    """
    db = database()
    if _pipeline.checks is not None or not _pipelines_on(db):
        yield
        return
    db.ensure_connection()
    checks: list = []
    _pipeline.checks = checks
    combining = _combining_on(db)
    committing = commit and combining and len(db.atomic_blocks) == 1
    guards: list = []
    if combining:
        _pipeline.writes = []
        db.before_cursor = flush_writes  # an ORM statement in the block goes after them
    if committing:
        _pipeline.guards = guards
    try:
        with db.wrap_database_errors:
            with db.connection.pipeline() as pipeline:
                if combining:
                    _send_when_awaited(pipeline)
                    _begin_sent_with_the_first_statement(db.connection, pipeline)
                yield
                flush_writes()
                if committing and not db.needs_rollback:
                    with cursor(db) as statement:
                        statement.execute("COMMIT", prepare=False)
    except DatabaseError as error:
        missed = _missed_guard(error, guards)
        if missed is None:
            raise
        missed()  # raises (the guard's own error), the transaction rolled back
        raise
    finally:
        _pipeline.checks = _pipeline.writes = _pipeline.guards = None
        if combining:
            db.before_cursor = None
    for check in checks:
        check()


def _send_when_awaited(pipeline) -> None:
    """Make psycopg's ``pipeline`` write the statements executed in it to the socket only when
    an answer is awaited (a fetch, a sync, the pipeline's end), all of them in one write, instead
    of one write per statement (docs/benchmarks.md: each write wakes PostgreSQL's backend, which
    runs that one statement and sleeps again).

    psycopg queues each statement's message (``command_queue``) and its answer's handler
    (``result_queue``) and then writes the message at once (``_communicate_gen``). Here executing
    a statement only puts its message into libpq's output buffer, and every wait for answers
    (``_fetch_gen``: fetches, syncs and the pipeline's end all go through it) first writes the
    whole buffer, its flush request included, then reads the answers as psycopg does. psycopg's
    internals, set on this pipeline only; the version is pinned in requirements.txt and
    tests/services/test_races.py counts the writes."""
    from psycopg import OperationalError
    from psycopg.generators import send

    fetch, queue, pgconn = pipeline._fetch_gen, pipeline.command_queue, pipeline.pgconn
    send_sync = _libpq_send_pipeline_sync()
    if send_sync is not None:
        # psycopg queues libpq's PQpipelineSync, which writes the buffer to the socket at once:
        # a BEGIN with its sync went out alone, and a block's last write went out ahead of the
        # flush request that the wait then sent after it, each a wake-up of PostgreSQL's backend
        # for nothing. PQsendPipelineSync (libpq 17) only queues the sync.
        def sync_queued():
            if send_sync(pgconn.pgconn_ptr) != 1:
                raise OperationalError(
                    f"failed to sync pipeline: {pgconn.get_error_message()}")

        def enqueue_sync():
            queue.append(sync_queued)
            pipeline.result_queue.append(None)
        pipeline._enqueue_sync = enqueue_sync

    def buffer():
        while queue:
            queue.popleft()()
        return
        yield  # a generator, as the method it stands for

    def written_then_fetched(*, flush: bool):
        yield from buffer()
        if flush and pipeline.result_queue:
            pgconn.send_flush_request()
        yield from send(pgconn)
        return (yield from fetch(flush=False))
    pipeline._communicate_gen, pipeline._fetch_gen = buffer, written_then_fetched


@lru_cache(maxsize=None)
def _libpq_send_pipeline_sync():
    """libpq's ``PQsendPipelineSync`` (libpq 17 and later) from the very libpq psycopg runs on,
    through ctypes, or None where that is not known for sure (an older libpq, no
    ``/proc/self/maps``, several libpq loaded): the sync then flushes as psycopg's does.
    psycopg has no call of its own for it (3.3)."""
    import ctypes

    from psycopg import pq

    if pq.version() < 170000:
        return None
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            paths = {line.split(None, 5)[5].strip() for line in maps if line.count(" ") >= 5
                     and line.rstrip().rsplit("/", 1)[-1].startswith("libpq")}
    except OSError:
        return None
    if pq.__impl__ == "binary":  # psycopg[binary] links the libpq its wheel carries
        paths = {path for path in paths if "psycopg_binary" in path}
    if len(paths) != 1:
        return None
    try:
        function = ctypes.CDLL(paths.pop()).PQsendPipelineSync
    except (OSError, AttributeError):
        return None
    function.argtypes, function.restype = [ctypes.c_void_p], ctypes.c_int
    return function


def _begin_sent_with_the_first_statement(raw, pipeline) -> None:
    """Put the transaction's BEGIN in ``pipeline`` (see :func:`_send_when_awaited`) ahead of the
    block's first statement. psycopg begins a transaction lazily, at its first statement, and in
    pipeline mode sends the BEGIN with a sync of its own: a round trip of its own before the
    locks. Queued here with that sync, it goes out with them: until their answers come back the
    connection counts as busy, and after them (the sync's answer) as in a transaction, so
    psycopg never begins again."""
    from psycopg import pq

    if raw.autocommit or raw.pgconn.transaction_status != pq.TransactionStatus.IDLE:
        return
    raw.wait(raw._exec_command(raw._get_tx_start_command()))
    pipeline._enqueue_sync()  # its answer says "in a transaction" once the locks are answered
    raw.wait(pipeline._communicate_gen())  # into libpq's buffer (nothing written yet)


def _missed_guard(error: Exception, guards: list):
    """The ``on_miss`` of the guard whose duet_guard() failed ``error``'s statement, if it did."""
    cause = error.__cause__
    if getattr(cause, "sqlstate", None) != GUARD_SQLSTATE:
        return None
    try:
        return guards[int(cause.diag.message_detail)]
    except (IndexError, TypeError, ValueError):
        return None


def _pipelines_on(db) -> bool:
    return db.vendor == "postgresql" and settings.DATABASE_PIPELINE


def _combining_on(db) -> bool:
    """Whether a pipelined block holds its writes back for one statement (``DATABASE_COMBINE_
    WRITES``): not where something listens to each statement (see :func:`cursor`), and only on
    the project's backend, which tells :func:`flush_writes` before an ORM statement runs."""
    return (settings.DATABASE_COMBINE_WRITES and hasattr(db, "before_cursor")
            and not (db.execute_wrappers or db.force_debug_cursor or settings.DEBUG))


class _Write(NamedTuple):
    table: str
    kind: str  # "insert" or "update"
    sql: str
    params: list
    on_miss: object  # for an update: called when it changed no row


def _held(table: str, kind: str, sql: str, params: list, on_miss=None) -> bool:
    """Hold a write back for :func:`flush_writes`, if the open block does that; False if not
    (the caller runs it now).

    A call transaction's writes go to different tables (the call, its timeline, the users'
    events, the profiles, the frame's reply), and PostgreSQL runs them as one statement: the
    first ones as data-modifying ``WITH`` parts, the last as the statement itself. Its parts all
    see the rows as they were before it, and a row changed twice in one statement keeps only one
    change, so the held writes are sent first whenever this one could depend on them: an UPDATE
    of a table they write, any write to a table they UPDATE, and a second guarded UPDATE (the
    guard reads the statement's row count). Inserts into one table never depend on each other.
    """
    held = _pipeline.writes
    if held is None:
        return False
    for write in held:
        if (write.table == table and "update" in (kind, write.kind)
                or on_miss is not None and write.on_miss is not None):
            flush_writes()
            break
    held.append(_Write(table, kind, sql, params, on_miss))
    return True


def flush_writes() -> None:
    """Send the writes the open pipelined block holds, as one statement (inside the pipeline, so
    nothing waits for its answer here). Called before anything reads (:func:`sent`, an ORM
    statement through the backend's ``before_cursor``) and at the block's end; a failed write
    raises there, as Django's exception class, and rolls the whole transaction back as before.
    """
    held = _pipeline.writes
    if not held:
        return
    writes = list(held)
    held.clear()
    last = next((write for write in writes if write.on_miss is not None), writes[-1])
    on_miss, guards = last.on_miss, _pipeline.guards
    if len(writes) == 1 and (on_miss is None or guards is None):
        _write(database(), last.sql, last.params, on_miss)
        return
    ordered = [write for write in writes if write is not last] + [last]
    statements = [write.sql for write in ordered]
    params = [value for write in ordered for value in write.params]
    if on_miss is not None and guards is not None:  # the COMMIT follows: PostgreSQL checks it
        statements[-1] += " RETURNING 1"
        statements.append(f"SELECT duet_guard(count(*), %s) FROM w{len(statements) - 1}")
        params.append(len(guards))
        guards.append(on_miss)
        on_miss = None
    sql, numbered = _combined_sql(tuple(statements))
    _write(database(), sql, params, on_miss, numbered=numbered)


@lru_cache(maxsize=256)
def _combined_sql(statements: tuple[str, ...]) -> tuple[str, bool]:
    """One statement of ``statements``: all but the last as ``WITH`` parts, the last as the
    statement itself. Its parameters are numbered (``$1``, ...) when every ``%`` in it is a
    ``%s``: psycopg then takes the text as it is, where it would parse a statement of more than
    50 parameters for its placeholders on every run (its cache stops there; a call's writes
    have up to a hundred). Returns the text and whether it is numbered."""
    text = ("WITH " + ", ".join(f"w{index} AS ({sql})" for index, sql in enumerate(statements[:-1]))
            + " " + statements[-1])
    pieces = text.split("%s")
    if any("%" in piece for piece in pieces):
        return text, False
    numbered = [pieces[0]]
    for index, piece in enumerate(pieces[1:], start=1):
        numbered += [f"${index}", piece]
    return "".join(numbered), True


@lru_cache(maxsize=None)
def _fields(model: type[models.Model], names: tuple[str, ...]) -> tuple[models.Field, ...]:
    return tuple(model._meta.get_field(name) for name in names)


# Field types whose values the services hand over already as the driver takes them, on
# PostgreSQL: a value of exactly the expected type goes as it is; anything else (None, a str for
# an int, an expression) still goes through the field's own ``get_db_prep_save``.
_EXACT_TYPES = {
    "CharField": str, "TextField": str, "BooleanField": bool, "IntegerField": int,
    "BigIntegerField": int, "SmallIntegerField": int, "PositiveIntegerField": int,
    "PositiveSmallIntegerField": int, "PositiveBigIntegerField": int, "AutoField": int,
    "BigAutoField": int,
}


def _preparer(field: models.Field, vendor: str):
    """``prepare(value, db)``: the value as ``field.get_db_prep_save(value, db)`` gives it, without
    its layers of calls for the plain values a call transaction writes (docs/benchmarks.md,
    "Statements without Django's per-statement layers"). tests/services/test_rows.py checks each
    against the field's own conversion."""
    general = field.get_db_prep_save
    if vendor != "postgresql":
        return general
    # a foreign key holds its target's values (anything else still goes through its own method)
    internal = (field.target_field if field.is_relation else field).get_internal_type()
    exact = _EXACT_TYPES.get(internal)
    if exact is not None:
        def prepare(value, db):
            return value if type(value) is exact else general(value, db)
    elif internal == "DateTimeField":  # PostgreSQL's adapt_datetimefield_value keeps the value
        def prepare(value, db):
            if type(value) is datetime and value.tzinfo is not None:
                return value
            return general(value, db)
    elif internal == "JSONField":
        encoder = field.encoder

        def prepare(value, db):
            if type(value) is dict or type(value) is list:
                return db.ops.adapt_json_value(value, encoder)
            return general(value, db)
    else:
        return general
    return prepare


@lru_cache(maxsize=None)
def _preparers(model: type[models.Model], names: tuple[str, ...], vendor: str) -> tuple:
    return tuple(_preparer(field, vendor) for field in _fields(model, names))


def _prepared(db, model: type[models.Model], names: tuple[str, ...], values) -> list:
    """``values`` of ``names`` (as the model's attributes hold them) as the driver takes them."""
    return [prepare(value, db) for prepare, value in zip(_preparers(model, names, db.vendor), values)]


def _values(instance: models.Model, names: tuple[str, ...]) -> list:
    return [getattr(instance, field.attname) for field in _fields(type(instance), names)]


@lru_cache(maxsize=None)
def _insert_sql(model: type[models.Model], names: tuple[str, ...], count: int, vendor: str) -> str:
    quote = database().ops.quote_name
    columns = ", ".join(quote(field.column) for field in _fields(model, names))
    row = "(" + ", ".join(["%s"] * len(names)) + ")"
    return (f"INSERT INTO {quote(model._meta.db_table)} ({columns}) VALUES "
            + ", ".join([row] * count))


def insert_values(model: type[models.Model], names: tuple[str, ...], rows) -> None:
    """INSERT ``rows`` of ``model`` in one statement: each row is a sequence of the values of
    ``names``, as the model's attributes hold them (a foreign key by its id).

    The primary keys are not read back: callers of this do not need them. A unique or foreign key
    violation raises ``IntegrityError`` as ``save()`` would.
    """
    if not rows:
        return
    db = database()
    params = []
    for row in rows:
        params += _prepared(db, model, names, row)
    sql = _insert_sql(model, names, len(rows), db.vendor)
    if not _held(model._meta.db_table, "insert", sql, params):
        _write(db, sql, params)


@lru_cache(maxsize=None)
def _create_parts(model: type[models.Model], vendor: str,
                  with_key: bool = False) -> tuple[tuple[str, ...], str]:
    names = tuple(field.name for field in model._meta.concrete_fields
                  if with_key or field is not model._meta.auto_field)
    if with_key:
        return names, _insert_sql(model, names, 1, vendor)
    returning = f" RETURNING {database().ops.quote_name(model._meta.pk.column)}"
    return names, _insert_sql(model, names, 1, vendor) + returning


def create(instance: models.Model) -> None:
    """INSERT a new ``instance`` with every field, as ``save()`` does for one without a primary
    key, and set the key the database gave it (PostgreSQL and SQLite 3.35+ both return it). An
    instance whose key was taken already (:func:`next_key_sent`) is written with it, and nothing
    is read back: inside a pipelined block the INSERT then waits for nothing.

    For models without ``pre_save`` work (no ``auto_now`` fields) and without ``post_save``
    receivers that the caller needs: the point is to skip both.
    """
    db = database()
    model = type(instance)
    keyed = instance.pk is not None
    names, sql = _create_parts(model, db.vendor, keyed)
    params = _prepared(db, model, names, _values(instance, names))
    if keyed:
        if not _held(model._meta.db_table, "insert", sql, params):
            _write(db, sql, params)
    else:
        flush_writes()  # its key is read back: a read
        with cursor(db) as statement:
            statement.execute(sql, params)
            instance.pk = statement.fetchone()[0]
    instance._state.adding = False
    instance._state.db = db.alias


def next_key_sent(model: type[models.Model]):
    """Take the next primary key of ``model``'s sequence now; the returned callable reads it
    later (PostgreSQL: ``nextval``, sent with :func:`sent`, so that it can travel with a lock's
    round trip). Elsewhere (SQLite) it reads None: :func:`create` then has the database pick the
    key. A key taken and not used is a gap in the ids, nothing more."""
    if database().vendor != "postgresql":
        return lambda: None
    return sent("SELECT nextval(pg_get_serial_sequence(%s, %s))",
                [model._meta.db_table, model._meta.pk.column],
                lambda statement: statement.fetchone()[0])


def sent(sql: str, params, read):
    """Send ``sql`` now (on :func:`cursor`'s cursor); the returned callable reads its answer
    later, once, with ``read(cursor)``, and closes the cursor.

    In psycopg's pipeline mode (:func:`pipelined`) the statement goes out without waiting, and its
    answer comes back with those of the statements sent after it, which run after it (a lock it
    takes is held before theirs). Elsewhere it runs at once and the answer is only kept."""
    flush_writes()  # a read sees the writes before it
    with ExitStack() as stack:  # a send that fails closes the cursor here, as Django's error
        statement = stack.enter_context(cursor(database()))
        statement.execute(sql, params)
        opened = stack.pop_all()  # sent: the cursor stays open until the answer is read

    def answer():
        with opened:
            return read(statement)
    return answer


@lru_cache(maxsize=None)
def _update_sql(model: type[models.Model], names: tuple[str, ...], guard: str | None,
                vendor: str) -> str:
    quote = database().ops.quote_name
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
    db = database()
    model = type(instance)
    params = _prepared(db, model, names, _values(instance, names))
    params.append(instance.pk)
    if guard is not None:
        params.append(guard_value)
    sql = _update_sql(model, names, guard, db.vendor)
    if not _held(model._meta.db_table, "update", sql, params, on_miss):
        _write(db, sql, params, on_miss)


def _write(db, sql: str, params, on_miss=None, *, numbered: bool = False) -> None:
    """Run a write; ``on_miss()`` when it changed no row (see :func:`update`)."""
    with cursor(db, numbered=numbered) as statement:
        statement.execute(sql, params)
        if on_miss is None:
            return
        checks = _pipeline.checks
        if checks is None:
            if statement.rowcount != 1:
                on_miss()
            return
        # psycopg's cursor: its rowcount is set when the block syncs
        raw = getattr(statement, "cursor", statement)

        def check():
            if raw.rowcount != 1:
                on_miss()
        checks.append(check)


def execute(sql: str, params, *, updates: str | None = None) -> None:
    """Run one hand-built write whose answer nobody reads (see :func:`cursor`). ``updates``
    names the table of an UPDATE that a pipelined block may hold back (:func:`flush_writes`);
    without it the held writes go first and this one runs on its own."""
    if updates is None:
        flush_writes()
    elif _held(updates, "update", sql, params):
        return
    _write(database(), sql, params)


# ---- locked reads ---------------------------------------------------------------------------


@lru_cache(maxsize=None)
def _reader(model: type[models.Model]):
    """The model's concrete fields with the converters the ORM applies to each column."""
    db = database()
    alias = model._meta.db_table
    fields = tuple(model._meta.concrete_fields)
    converters = []
    for field in fields:
        col = field.get_col(alias)
        converters.append((col, tuple(db.ops.get_db_converters(col))
                           + tuple(col.get_db_converters(db))))
    quote = db.ops.quote_name
    columns = tuple(f"{quote(alias)}.{quote(field.column)}" for field in fields)
    return fields, tuple(converters), columns, [field.attname for field in fields]


def _build(db, model: type[models.Model], values) -> models.Model:
    _, converting, _, attnames = _reader(model)
    converted = []
    for (col, converters), value in zip(converting, values):
        for converter in converters:
            value = converter(value, col, db)
        converted.append(value)
    return model.from_db(db.alias, attnames, converted)


@lru_cache(maxsize=None)
def column(model: type[models.Model], name: str) -> str:
    """``table.column`` of a model field, quoted, for the ``where`` of :func:`select_for_update`."""
    quote = database().ops.quote_name
    return f"{quote(model._meta.db_table)}.{quote(model._meta.get_field(name).column)}"


@lru_cache(maxsize=None)
def _select_sql(model: type[models.Model], where: str, related: str | None, order_by: str | None,
                vendor: str) -> str:
    db = database()
    quote = db.ops.quote_name
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
    if db.features.has_select_for_update:
        sql += " FOR UPDATE"
        if related is not None and db.features.has_select_for_update_of:
            sql += f" OF {table}"
    return sql


def select_for_update(model: type[models.Model], where: str, params, *, related: str | None = None,
                      order_by: str | None = None, behind=None) -> list[models.Model]:
    """Rows of ``model`` matching ``where`` (SQL over :func:`column` names), locked for this
    transaction (only ``model``'s rows, not the joined ones). ``related`` names a foreign key whose
    row is read in the same statement and cached on each instance, as ``select_related`` does.

    ``behind()``, if given, is called once the locking statement is sent and before its rows are
    read: a statement it sends then runs after the lock is granted, and inside a pipelined block
    (:func:`pipelined`) its answer comes back in the same round trip."""
    rows = select_for_update_sent(model, where, params, related=related, order_by=order_by)
    if behind is not None:
        behind()
    return rows()


def select_for_update_sent(model: type[models.Model], where: str, params, *,
                           related: str | None = None, order_by: str | None = None):
    """:func:`select_for_update`'s statement, sent now; the returned callable reads its rows later
    (once). Inside a pipelined block the statements sent between the two travel in the same round
    trip, and run after this one's locks are granted (the lock order is the order sent)."""
    db = database()
    target = model._meta.get_field(related) if related is not None else None
    width = len(_reader(model)[0])

    def instances(statement) -> list[models.Model]:
        found = []
        for values in statement.fetchall():
            instance = _build(db, model, values[:width])
            if target is not None:
                target.set_cached_value(instance, _build(db, target.related_model, values[width:]))
            found.append(instance)
        return found
    return sent(_select_sql(model, where, related, order_by, db.vendor), params, instances)
