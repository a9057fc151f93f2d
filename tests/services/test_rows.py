"""calls.rows writes and reads rows exactly as the ORM does (PostgreSQL and SQLite alike)."""

from datetime import timedelta

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

from calls import rows
from calls.models import CallEvent, CallSession, ClientFrame, Profile, UserEvent

pytestmark = pytest.mark.django_db


def make_call(alice, bob, call_id="c" * 32, **fields) -> CallSession:
    now = timezone.now()
    return CallSession.objects.create(
        call_id=call_id, caller=alice, callee=bob, call_type="video", phase="ringing",
        channel="duet-c", timeout_ms=15000, deadline_at=now + timedelta(seconds=15),
        created_at=now, extension={"gift": [1, "two", None]}, callee_frame_devices=["d1"],
        **fields)


def insert(model, names, instances):
    """The rows of unsaved ``instances``, written with rows.insert_values."""
    rows.insert_values(model, names, [rows._values(instance, names) for instance in instances])


def test_insert_stores_json_datetimes_and_foreign_keys_as_the_orm_reads_them(alice, bob):
    call = make_call(alice, bob)
    at = timezone.now()
    insert(CallEvent, ("call", "at", "actor", "device_id", "kind", "payload"), [
        CallEvent(call=call, at=at, actor_id=alice.pk, device_id="p", kind="dial",
                  payload={"a": [1, {"b": None}], "text": "é \"quoted\""}),
        CallEvent(call=call, at=at, actor_id=None, kind="notified", payload={}),
    ])
    stored = list(CallEvent.objects.filter(call=call).order_by("id")
                  .values_list("at", "actor_id", "device_id", "kind", "payload"))
    assert stored == [(at, alice.pk, "p", "dial", {"a": [1, {"b": None}], "text": "é \"quoted\""}),
                      (at, None, "", "notified", {})]


def test_create_stores_every_field_as_save_does_and_reads_back_the_key(alice, bob):
    by_orm = make_call(alice, bob)
    fields = {field.attname: getattr(by_orm, field.attname)
              for field in CallSession._meta.concrete_fields if not field.primary_key}
    fields["call_id"] = "d" * 32
    by_sql = CallSession(**fields)
    rows.create(by_sql)
    assert by_sql.pk is not None and by_sql.pk != by_orm.pk
    assert not by_sql._state.adding
    stored_orm, stored_sql = (CallSession.objects.filter(pk=pk).values().get()
                              for pk in (by_orm.pk, by_sql.pk))
    for row in (stored_orm, stored_sql):
        del row["id"], row["call_id"]
    assert stored_sql == stored_orm
    with pytest.raises(IntegrityError), transaction.atomic():  # the same call_id again
        rows.create(CallSession(**fields))


def test_insert_raises_integrity_error_on_a_duplicate_key(alice):
    row = ClientFrame(user_id=alice.pk, frame_id="f1", reply={"ok": True}, created_at=timezone.now())
    insert(ClientFrame, ("user", "frame_id", "reply", "created_at"), [row])
    with pytest.raises(IntegrityError), transaction.atomic():
        insert(ClientFrame, ("user", "frame_id", "reply", "created_at"), [row])
    assert ClientFrame.objects.filter(user=alice).count() == 1


def test_update_writes_the_named_fields_only_while_the_guard_holds(alice, bob):
    call = make_call(alice, bob)
    ended = timezone.now()
    call.phase, call.ended_at, call.caller_connected, call.version = "ended", ended, True, 1
    call.extension = {"changed": True}  # not named: not written
    missed = []
    rows.update(call, ("phase", "ended_at", "caller_connected", "version"),
                guard="version", guard_value=0, on_miss=lambda: missed.append("first"))
    assert missed == []
    stored = CallSession.objects.get(pk=call.pk)
    assert (stored.phase, stored.ended_at, stored.caller_connected, stored.version) == (
        "ended", ended, True, 1)
    assert stored.extension == {"gift": [1, "two", None]}
    # a stale guard changes nothing, and says so
    call.phase = "ringing"
    rows.update(call, ("phase",), guard="version", guard_value=0,
                on_miss=lambda: missed.append("stale"))
    assert missed == ["stale"]
    assert CallSession.objects.get(pk=call.pk).phase == "ended"


class Missed(Exception):
    pass


def _raise_missed():
    raise Missed


@pytest.mark.django_db(transaction=True)
def test_a_pipelined_block_writes_everything_and_reads_what_it_wrote(alice, bob):
    call = make_call(alice, bob)
    call.phase, call.version = "accepted", 1
    at = timezone.now()
    with transaction.atomic(), rows.pipelined():
        rows.update(call, ("phase", "version"), guard="version", guard_value=0,
                    on_miss=_raise_missed)
        insert(CallEvent, ("call", "at", "actor", "device_id", "kind", "payload"), [
            CallEvent(call=call, at=at, actor_id=alice.pk, device_id="p", kind="accept",
                      payload={})])
        # a locked read in the block sees the writes sent before it
        found = rows.select_for_update(CallSession, f"{rows.column(CallSession, 'id')} = %s",
                                       [call.pk])
        assert (found[0].phase, found[0].version) == ("accepted", 1)
    assert CallSession.objects.get(pk=call.pk).phase == "accepted"
    assert CallEvent.objects.filter(call=call, kind="accept").count() == 1


@pytest.mark.django_db(transaction=True)
def test_a_stale_guard_in_a_pipelined_block_rolls_the_whole_transaction_back(alice, bob):
    call = make_call(alice, bob)
    call.phase = "accepted"
    at = timezone.now()
    with pytest.raises(Missed), transaction.atomic(), rows.pipelined():
        rows.update(call, ("phase",), guard="version", guard_value=7, on_miss=_raise_missed)
        insert(CallEvent, ("call", "at", "actor", "device_id", "kind", "payload"), [
            CallEvent(call=call, at=at, actor_id=alice.pk, device_id="p", kind="accept",
                      payload={})])
    assert CallSession.objects.get(pk=call.pk).phase == "ringing"
    assert not CallEvent.objects.filter(call=call).exists()


@pytest.mark.django_db(transaction=True)
def test_a_duplicate_key_in_a_pipelined_block_raises_integrity_error_and_keeps_nothing(alice):
    names = ("user", "frame_id", "reply", "created_at")
    first = ClientFrame(user_id=alice.pk, frame_id="f1", reply={"ok": 1}, created_at=timezone.now())
    insert(ClientFrame, names, [first])
    with pytest.raises(IntegrityError), transaction.atomic(), rows.pipelined():
        insert(ClientFrame, names, [ClientFrame(user_id=alice.pk, frame_id="f2", reply={},
                                                     created_at=timezone.now())])
        insert(ClientFrame, names, [first])
        insert(ClientFrame, names, [ClientFrame(user_id=alice.pk, frame_id="f3", reply={},
                                                     created_at=timezone.now())])
    assert list(ClientFrame.objects.filter(user=alice).values_list("frame_id", flat=True)) == ["f1"]
    # the connection is usable afterwards
    insert(ClientFrame, names, [ClientFrame(user_id=alice.pk, frame_id="f4", reply={},
                                                 created_at=timezone.now())])
    assert ClientFrame.objects.filter(user=alice).count() == 2


@pytest.mark.django_db(transaction=True)
def test_pipelined_blocks_nest_into_one(alice, bob):
    from django.db import connection

    with transaction.atomic(), rows.pipelined():
        outer = rows._pipeline.checks
        with rows.pipelined():
            assert rows._pipeline.checks is outer
    if rows._pipelines_on(connection):
        assert outer is not None and rows._pipeline.checks is None
    else:  # no pipeline mode (SQLite, or DATABASE_PIPELINE off): the block is plain
        assert outer is None


def test_select_for_update_builds_the_same_instances_as_the_orm(alice, bob):
    call = make_call(alice, bob, delivered_at=timezone.now(), caller_has_frame=True)
    with transaction.atomic():
        found = rows.select_for_update(
            CallSession, f"{rows.column(CallSession, 'call_id')} = %s", [call.call_id])
    expected = CallSession.objects.get(pk=call.pk)
    assert len(found) == 1
    for field in CallSession._meta.concrete_fields:
        assert getattr(found[0], field.attname) == getattr(expected, field.attname), field.name
    assert found[0]._state.adding is False


def test_select_for_update_caches_the_joined_row_and_orders(alice, bob, django_assert_num_queries):
    ids = sorted([bob.pk, alice.pk], reverse=True)
    where = f"{rows.column(Profile, 'user')} IN (%s, %s)"
    with transaction.atomic(), django_assert_num_queries(1):
        found = rows.select_for_update(Profile, where, ids, related="user", order_by="user")
        names = [profile.user.get_username() for profile in found]
    assert [profile.user_id for profile in found] == sorted(ids)
    assert names == [user.get_username() for user in sorted([alice, bob], key=lambda u: u.pk)]


def test_insert_values_takes_plain_rows_in_the_order_of_the_names(alice, bob):
    call = make_call(alice, bob)
    at = timezone.now()
    rows.insert_values(CallEvent, ("call", "at", "actor", "device_id", "kind", "payload"),
                       [(call.pk, at, alice.pk, "p", "dial", {"n": 1}),
                        (call.pk, at, None, "", "notified", {})])
    stored = list(CallEvent.objects.filter(call=call).order_by("id")
                  .values_list("actor_id", "device_id", "kind", "payload"))
    assert stored == [(alice.pk, "p", "dial", {"n": 1}), (None, "", "notified", {})]


def _cursor_kind() -> str:
    from django.db.backends.utils import CursorWrapper

    with rows.cursor(rows.database()) as cursor:
        return "django" if isinstance(cursor, CursorWrapper) else "driver"


@pytest.mark.django_db(transaction=True)
def test_statements_skip_djangos_cursor_wrapper_only_inside_a_postgresql_transaction(alice):
    from django.db import connection

    with transaction.atomic():
        inside = _cursor_kind()
    assert _cursor_kind() == "django"  # autocommit: Django's cursor, with its connection checks
    assert inside == ("driver" if connection.vendor == "postgresql" else "django")


def test_whatever_listens_to_djangos_cursor_still_sees_every_statement(alice):
    """execute_wrapper instrumentation and query logging (DEBUG, assertNumQueries) get Django's
    cursor, so they see these statements as they see the ORM's."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    seen = []

    def listen(execute, sql, params, many, context):
        seen.append(sql)
        return execute(sql, params, many, context)

    names = ("user", "frame_id", "reply", "created_at")
    with transaction.atomic(), connection.execute_wrapper(listen):
        assert _cursor_kind() == "django"
        rows.insert_values(ClientFrame, names, [(alice.pk, "w1", {}, timezone.now())])
    assert len(seen) == 1 and seen[0].startswith("INSERT INTO")
    with transaction.atomic(), CaptureQueriesContext(connection) as captured:
        rows.insert_values(ClientFrame, names, [(alice.pk, "w2", {}, timezone.now())])
    assert [query["sql"][:11] for query in captured.captured_queries] == ["INSERT INTO"]


@pytest.mark.django_db(transaction=True)
def test_a_driver_error_on_the_plain_cursor_is_djangos_and_marks_the_connection(alice):
    """A statement that fails on the driver's own cursor raises Django's exception class, and an
    error that may have broken the connection is noted for Django's end-of-work check, as
    through Django's cursor."""
    from django.db import DatabaseError, connection

    with transaction.atomic():
        connection.errors_occurred = False
        with pytest.raises(DatabaseError) as raised, transaction.atomic():
            rows.execute("SELECT no_such_column FROM calls_clientframe", [])
        broken = connection.errors_occurred  # (a commit or rollback clears it)
    assert type(raised.value).__module__ == "django.db.utils"
    assert broken
    with transaction.atomic():
        with pytest.raises(IntegrityError), transaction.atomic():
            rows.insert_values(ClientFrame, ("user", "frame_id", "reply", "created_at"),
                               [(alice.pk, "d", {}, timezone.now()),
                                (alice.pk, "d", {}, timezone.now())])
        broken = connection.errors_occurred
    assert not broken  # a broken constraint leaves the connection sound


def _comparable(value):
    """Driver wrappers (psycopg's Jsonb) compared by what they hold."""
    if hasattr(value, "obj") and hasattr(value, "dumps"):
        return (type(value), value.obj, value.dumps)
    return value


@pytest.mark.parametrize("model", [CallSession, CallEvent, ClientFrame, Profile, UserEvent])
def test_each_value_is_prepared_as_the_fields_own_conversion_prepares_it(model, alice, bob):
    """The short paths of calls.rows._preparer give what get_db_prep_save gives, for the values
    the services write and for the ones they do not (None, a str for an int, a naive time)."""
    import warnings

    db = rows.database()
    now = timezone.now()
    samples = {
        "CharField": ["", "x", "é", None], "TextField": ["long text", None],
        "BooleanField": [True, False, None], "JSONField": [{"a": [1, None]}, [1, "x"], {}, None],
        "DateTimeField": [now, now.replace(tzinfo=None), None],
    }
    numbers = [0, 7, 2**40, None, "12", "", True]  # "": a foreign key stores no key
    checked = 0
    for field in model._meta.concrete_fields:
        internal = (field.target_field if field.is_relation else field).get_internal_type()
        values = samples.get(internal, numbers if "Integer" in internal or "Auto" in internal
                             else [])
        prepare = rows._preparer(field, db.vendor)
        for value in values:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # a naive datetime warns, both ways
                try:
                    expected = field.get_db_prep_save(value, db)
                except (TypeError, ValueError) as error:
                    with pytest.raises(type(error)):
                        prepare(value, db)
                    continue
                assert _comparable(prepare(value, db)) == _comparable(expected), (field.name, value)
            checked += 1
    assert checked >= 5


@pytest.mark.django_db(transaction=True)
def test_create_writes_a_key_taken_ahead_and_reads_nothing_back(alice, bob):
    from django.db import connection

    with transaction.atomic(), rows.pipelined():
        key = rows.next_key_sent(CallSession)()
        now = timezone.now()
        call = CallSession(id=key, call_id="k" * 32, caller=alice, callee=bob, call_type="audio",
                           phase="ringing", channel="duet-k", timeout_ms=15000,
                           deadline_at=now + timedelta(seconds=15), created_at=now)
        rows.create(call)
    if connection.vendor == "postgresql":
        assert key is not None and call.pk == key
    else:  # no sequence to take from: the database picks the key as before
        assert key is None and call.pk is not None
    assert CallSession.objects.get(pk=call.pk).call_id == "k" * 32
    # the next key follows the sequence past it: no collision with a key the database picks
    made = make_call(alice, bob)
    assert made.pk > call.pk


# Inside a pipelined block on PostgreSQL the writes are held back and sent as one statement
# (rows.flush_writes); these hold wherever the block runs them one by one too.


def _new_call(alice, bob, call_id: str) -> CallSession:
    now = timezone.now()
    return CallSession(id=rows.next_key_sent(CallSession)(), call_id=call_id, caller=alice,
                       callee=bob, call_type="audio", phase="ringing", channel=f"duet-{call_id}",
                       timeout_ms=15000, deadline_at=now + timedelta(seconds=15), created_at=now)


@pytest.mark.django_db(transaction=True)
def test_an_update_after_a_write_to_its_table_in_the_block_changes_that_row(alice, bob):
    # one statement's parts see the rows as they were before it: the insert must go first
    with transaction.atomic(), rows.pipelined():
        call = _new_call(alice, bob, "u" * 32)
        rows.create(call)
        call.phase, call.version = "accepted", 1
        rows.update(call, ("phase", "version"), guard="version", guard_value=0,
                    on_miss=_raise_missed)
    stored = CallSession.objects.get(call_id="u" * 32)
    assert (stored.phase, stored.version) == ("accepted", 1)


@pytest.mark.django_db(transaction=True)
def test_an_orm_statement_in_the_block_sees_the_writes_made_before_it(alice):
    names = ("user", "frame_id", "reply", "created_at")
    with transaction.atomic(), rows.pipelined():
        rows.insert_values(ClientFrame, names, [(alice.pk, "seen", {}, timezone.now())])
        assert ClientFrame.objects.filter(user=alice, frame_id="seen").exists()
        ClientFrame.objects.filter(user=alice).update(reply={"r": 1})  # (no row count in a pipeline)
        rows.insert_values(ClientFrame, names, [(alice.pk, "after", {}, timezone.now())])
    assert dict(ClientFrame.objects.filter(user=alice).values_list("frame_id", "reply")) == {
        "seen": {"r": 1}, "after": {}}


@pytest.mark.django_db(transaction=True)
def test_every_guarded_update_in_the_block_is_checked(alice, bob):
    first, second = make_call(alice, bob), make_call(alice, bob, call_id="d" * 32)
    first.phase = second.phase = "accepted"
    with pytest.raises(Missed), transaction.atomic(), rows.pipelined():
        rows.update(first, ("phase",), guard="version", guard_value=0, on_miss=_raise_missed)
        rows.update(second, ("phase",), guard="version", guard_value=3, on_miss=_raise_missed)
    assert set(CallSession.objects.values_list("phase", flat=True)) == {"ringing"}


@pytest.mark.django_db(transaction=True)
def test_a_savepoint_rolled_back_in_the_block_takes_only_its_own_writes(alice):
    names = ("user", "frame_id", "reply", "created_at")
    with transaction.atomic(), rows.pipelined():
        rows.insert_values(ClientFrame, names, [(alice.pk, "kept", {}, timezone.now())])
        with pytest.raises(Missed), transaction.atomic():
            rows.insert_values(ClientFrame, names, [(alice.pk, "undone", {}, timezone.now())])
            raise Missed
        rows.insert_values(ClientFrame, names, [(alice.pk, "also", {}, timezone.now())])
    assert set(ClientFrame.objects.filter(user=alice).values_list("frame_id", flat=True)) == {
        "kept", "also"}


def test_joined_writes_number_their_parameters_unless_the_text_holds_another_percent():
    sql, numbered = rows._combined_sql(("INSERT INTO a (x) VALUES (%s)",
                                        "UPDATE b SET y = %s WHERE id = %s"))
    assert (sql, numbered) == (
        "WITH w0 AS (INSERT INTO a (x) VALUES ($1)) UPDATE b SET y = $2 WHERE id = $3", True)
    sql, numbered = rows._combined_sql(("INSERT INTO a (x) VALUES (%s)",
                                        "UPDATE b SET y = '100%%' WHERE id = %s"))
    assert not numbered and sql.endswith("'100%%' WHERE id = %s")


# A block that ends its transaction (pipelined(commit=True)) sends the COMMIT with its writes on
# PostgreSQL; elsewhere Django commits as before. Either way these hold.


class OtherMissed(Missed):
    """A second guard's miss, told apart from the first's."""

    @classmethod
    def throw(cls):
        raise cls


@pytest.mark.django_db(transaction=True)
def test_a_guard_that_misses_keeps_a_committing_block_from_committing(alice, bob):
    call = make_call(alice, bob)
    call.phase = "accepted"
    with pytest.raises(Missed), transaction.atomic(), rows.pipelined(commit=True):
        insert(CallEvent, ("call", "at", "actor", "device_id", "kind", "payload"), [
            CallEvent(call=call, at=timezone.now(), actor_id=alice.pk, device_id="p",
                      kind="accept", payload={})])
        rows.update(call, ("phase",), guard="version", guard_value=7, on_miss=_raise_missed)
    assert CallSession.objects.get(pk=call.pk).phase == "ringing"
    assert not CallEvent.objects.filter(call=call).exists()
    # the connection goes on
    with transaction.atomic(), rows.pipelined(commit=True):
        rows.update(call, ("phase",), guard="version", guard_value=0, on_miss=_raise_missed)
    assert CallSession.objects.get(pk=call.pk).phase == "accepted"


@pytest.mark.django_db(transaction=True)
def test_the_guard_that_missed_is_the_one_that_answers(alice, bob):
    first, second = make_call(alice, bob), make_call(alice, bob, call_id="e" * 32)
    first.phase = second.phase = "accepted"
    with pytest.raises(OtherMissed), transaction.atomic(), rows.pipelined(commit=True):
        rows.update(first, ("phase",), guard="version", guard_value=0, on_miss=_raise_missed)
        rows.update(second, ("phase",), guard="version", guard_value=5, on_miss=OtherMissed.throw)
    assert set(CallSession.objects.values_list("phase", flat=True)) == {"ringing"}


@pytest.mark.django_db(transaction=True)
def test_a_committing_block_inside_another_atomic_leaves_the_commit_to_it(alice):
    names = ("user", "frame_id", "reply", "created_at")
    with pytest.raises(Missed), transaction.atomic():
        with transaction.atomic(), rows.pipelined(commit=True):
            rows.insert_values(ClientFrame, names, [(alice.pk, "inner", {}, timezone.now())])
        raise Missed  # the outer block rolls back: the inner one's write with it
    assert not ClientFrame.objects.filter(user=alice).exists()
