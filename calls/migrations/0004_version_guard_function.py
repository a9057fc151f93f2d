"""A PostgreSQL function that fails a statement whose guarded UPDATE changed no row.

A call transaction on PostgreSQL sends its COMMIT with its writes (calls/rows.py, ``pipelined``
with ``commit``): the guarded UPDATE's row count then comes back after the commit, too late to
refuse it. The UPDATE is sent as ``WITH g AS (UPDATE ... RETURNING 1) SELECT
duet_guard(count(*), n) FROM g`` instead (n: which guard of the block), and a miss raises here: the transaction fails, its COMMIT
is skipped, and calls.rows turns the error back into the guard's ``on_miss``. Nothing on SQLite,
which has no pipeline.
"""

from django.db import migrations

GUARD_SQL = """
CREATE OR REPLACE FUNCTION duet_guard(changed bigint, guard integer) RETURNS bigint
LANGUAGE plpgsql AS $$
BEGIN
    IF changed <> 1 THEN
        RAISE EXCEPTION 'a guarded update changed % rows', changed
            USING ERRCODE = 'DU409', DETAIL = guard::text;
    END IF;
    RETURN changed;
END
$$
"""


def create(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(GUARD_SQL, params=None)  # its % is PL/pgSQL's, not a parameter


def drop(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("DROP FUNCTION IF EXISTS duet_guard(bigint, integer)")


class Migration(migrations.Migration):

    dependencies = [("calls", "0003_lean_indexes")]

    operations = [migrations.RunPython(create, drop)]
