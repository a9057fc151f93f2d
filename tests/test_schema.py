"""The indexes of the tables every call writes: each one earns its upkeep."""

from __future__ import annotations

import pytest
from django.db import connection

from calls.models import CallEvent, CallSession, ClientFrame, Connection, UserEvent

pytestmark = pytest.mark.django_db

HOT_TABLES = (CallSession, CallEvent, UserEvent, ClientFrame, Connection)


def index_columns(model) -> list[tuple[str, ...]]:
    with connection.cursor() as cursor:
        found = connection.introspection.get_constraints(cursor, model._meta.db_table)
    return [tuple(info["columns"]) for info in found.values()
            if info["index"] or info["unique"] or info["primary_key"]]


@pytest.mark.parametrize("model", HOT_TABLES, ids=lambda model: model.__name__)
def test_no_index_repeats_the_leading_columns_of_another(model):
    # every row written pays for every index: one that a wider index already covers (its columns
    # are that index's first ones) only costs
    columns = index_columns(model)
    covered = [(narrow, wide) for narrow in columns for wide in columns
               if len(narrow) < len(wide) and wide[:len(narrow)] == narrow]
    assert covered == []


def test_old_events_are_pruned_through_an_index():
    # housekeeping deletes events older than a day every few seconds: without an index on their
    # age each run reads the whole table, a day of events long
    assert ("created_at",) in index_columns(UserEvent)
