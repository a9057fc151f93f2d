"""PostgreSQL micro-probes behind figures in docs/benchmarks.md, with psycopg alone (no Django).

    .venv/bin/python bench/pgprobe.py commit   # a commit's latency, synchronous_commit on / off
    .venv/bin/python bench/pgprobe.py cursor   # a pipelined 6-write transaction: a new cursor
                                               # per statement, one shared, a raw cursor
    .venv/bin/python bench/pgprobe.py transaction  # a dial-shaped transaction (a lock, a key,
                                               # five writes, the commit): its floor with
                                               # psycopg alone, writes one by one or joined

Both run against the benchmark's database (DUET_BENCH_DATABASE_URL, as bench/run.py) in a table
of their own, which they drop at the end. CPU is this process's (time.process_time).
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.run import DATABASE_URL, ensure_database  # noqa: E402

TABLE = "zz_bench_pgprobe"


def commit_latency(rounds: int) -> None:
    import psycopg

    conn = psycopg.connect(DATABASE_URL)
    conn.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} (a int)")
    conn.commit()
    try:
        for mode in ("on", "off", "on", "off"):
            conn.execute(f"SET synchronous_commit = {mode}")
            conn.commit()
            took = []
            for _ in range(rounds):
                started = time.perf_counter()
                conn.execute(f"INSERT INTO {TABLE} VALUES (1)")
                conn.commit()
                took.append((time.perf_counter() - started) * 1000)
                time.sleep(0.01)  # one client at a time, as an idle machine sees it
            took.sort()
            print(f"synchronous_commit {mode:3}: insert + commit p50 {took[len(took) // 2]:.2f}, "
                  f"p90 {took[int(len(took) * 0.9)]:.2f}, p99 {took[int(len(took) * 0.99)]:.2f} ms")
    finally:
        conn.execute(f"DROP TABLE {TABLE}")
        conn.commit()
        conn.close()


def cursor_cost(rounds: int, writes: int = 6) -> None:
    import psycopg
    from psycopg.types.json import Jsonb

    conn = psycopg.connect(DATABASE_URL, prepare_threshold=5)
    conn.execute(f"CREATE TABLE IF NOT EXISTS {TABLE}_w (a bigint, b text, c timestamptz, d jsonb)")
    conn.commit()
    sql = f"INSERT INTO {TABLE}_w (a, b, c, d) VALUES (%s, %s, %s, %s)"
    raw_sql = f"INSERT INTO {TABLE}_w (a, b, c, d) VALUES ($1, $2, $3, $4)"
    row = (1, "x", datetime.datetime.now(datetime.timezone.utc), Jsonb({"a": 1}))

    def new_cursor_each():
        with conn.pipeline():
            for _ in range(writes):
                cursor = conn.cursor()
                cursor.execute(sql, row)
                cursor.close()
        conn.commit()

    def one_cursor(name: str, make, text: str):
        """A probe writing every row through one cursor that ``make(conn)`` opens."""
        def probe():
            with conn.pipeline():
                cursor = make(conn)
                for _ in range(writes):
                    cursor.execute(text, row)
                cursor.close()
            conn.commit()
        probe.__name__ = name
        return probe

    one_shared_cursor = one_cursor("one_shared_cursor", psycopg.Connection.cursor, sql)
    raw_cursor = one_cursor("raw_cursor", psycopg.RawCursor, raw_sql)

    def commit_only():
        with conn.pipeline():
            pass
        conn.commit()

    probes = (new_cursor_each, one_shared_cursor, raw_cursor, commit_only)
    try:
        for probe in probes:  # warm: statements prepared, caches filled
            for _ in range(100):
                probe()
        for _ in range(2):
            for probe in probes:
                started = time.process_time()
                for _ in range(rounds):
                    probe()
                print(f"{probe.__name__:18} {(time.process_time() - started) / rounds * 1e6:7.1f} "
                      f"µs of CPU per transaction ({writes} writes, commit included)")
    finally:
        conn.execute(f"DROP TABLE {TABLE}_w")
        conn.commit()
        conn.close()


def transaction_floor(rounds: int) -> None:
    """A transaction shaped like a dial: two profiles locked and a key taken (one round trip),
    five writes (the call, two timelines, the profiles, the reply) and the commit. The writes
    go one statement each in the pipeline (as before DATABASE_COMBINE_WRITES), joined with WITH
    (calls.rows.flush_writes), or with the BEGIN and COMMIT in two simple queries of several
    statements each (client-side binding: no Django transaction, for comparison only)."""
    import os

    import psycopg
    from psycopg.types.json import Jsonb

    setup = psycopg.connect(DATABASE_URL, autocommit=True)
    setup.execute(f"DROP TABLE IF EXISTS {TABLE}_p, {TABLE}_c, {TABLE}_e")
    setup.execute(f"CREATE TABLE {TABLE}_p (id bigint PRIMARY KEY, seq bigint, active text)")
    setup.execute(f"INSERT INTO {TABLE}_p SELECT g, 0, '' FROM generate_series(1, 1000) g")
    setup.execute(f"CREATE TABLE {TABLE}_c (id bigserial PRIMARY KEY, a text, b bigint, c bigint,"
                  " d timestamptz, e jsonb, f text, g text, h int)")
    setup.execute(f"CREATE TABLE {TABLE}_e (id bigserial PRIMARY KEY, u bigint, seq bigint, "
                  "frame jsonb, at timestamptz)")
    now = datetime.datetime.now(datetime.timezone.utc)
    frame = {"type": "event", "name": "call.state", "state": "calling", "call_id": "c" * 32}
    lock = f"SELECT id, seq, active FROM {TABLE}_p WHERE id IN (%s, %s) ORDER BY id FOR UPDATE"
    key = f"SELECT nextval(pg_get_serial_sequence('{TABLE}_c', 'id'))"
    events = f"INSERT INTO {TABLE}_e (u, seq, frame, at) VALUES (%s, %s, %s, %s), (%s, %s, %s, %s)"

    def writes(new_key):
        event = (1, new_key, Jsonb(frame), now, 2, new_key, Jsonb(frame), now)
        return [(f"INSERT INTO {TABLE}_c (id, a, b, c, d, e, f, g, h) VALUES "
                 "(%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                 (new_key, f"call{new_key}", 1, 2, now, Jsonb(frame), "x", "y", 3)),
                (events, event), (events, event),
                (f"UPDATE {TABLE}_p SET seq = seq + 1, active = %s WHERE id IN (%s, %s)",
                 (f"c{new_key}", 1, 2)),
                (events, event)]

    def locked(conn):
        rows, taken = conn.cursor(), conn.cursor()
        rows.execute(lock, (1, 2))
        taken.execute(key)
        rows.fetchall()
        return taken.fetchone()[0]

    def one_by_one(conn):
        with conn.pipeline():
            for sql, params in writes(locked(conn)):
                conn.cursor().execute(sql, params)
        conn.commit()

    def joined(conn):
        with conn.pipeline():
            parts = writes(locked(conn))
            sql = ("WITH " + ", ".join(f"w{i} AS ({part})" for i, (part, _) in enumerate(parts[:-1]))
                   + " " + parts[-1][0])
            conn.cursor().execute(sql, [value for _, params in parts for value in params])
        conn.commit()

    def simple_queries(conn):  # an autocommit connection: BEGIN and COMMIT in the text
        cursor = psycopg.ClientCursor(conn)
        cursor.execute("BEGIN; " + lock + "; " + key, (1, 2))
        cursor.nextset()
        cursor.fetchall()
        cursor.nextset()
        parts = writes(cursor.fetchone()[0])
        cursor.execute("; ".join(sql for sql, _ in parts) + "; COMMIT",
                       [value for _, params in parts for value in params])

    def backend_cpu(conn) -> float:
        fields = Path(f"/proc/{conn.info.backend_pid}/stat").read_text().split(")")[-1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    try:
        for pause_s, count in ((0.01, rounds), (0.0, rounds * 10)):
            for probe, autocommit in ((one_by_one, False), (joined, False), (simple_queries, True)):
                conn = psycopg.connect(DATABASE_URL, autocommit=autocommit, prepare_threshold=5)
                for _ in range(100):  # warm: statements prepared
                    probe(conn)
                backend, cpu, took = backend_cpu(conn), time.process_time(), []
                for _ in range(count):
                    started = time.perf_counter()
                    probe(conn)
                    took.append((time.perf_counter() - started) * 1000)
                    if pause_s:
                        time.sleep(pause_s)
                cpu, backend = time.process_time() - cpu, backend_cpu(conn) - backend
                took.sort()
                print(f"{'idle between' if pause_s else 'back to back':12} {probe.__name__:14} "
                      f"p50 {took[len(took) // 2]:.2f}, p90 {took[int(len(took) * 0.9)]:.2f} ms; "
                      f"CPU per transaction: client {cpu / count * 1e6:.0f} µs, PostgreSQL's "
                      f"backend {backend / count * 1e6:.0f} µs", flush=True)
                conn.close()
    finally:
        setup.execute(f"DROP TABLE {TABLE}_p, {TABLE}_c, {TABLE}_e")
        setup.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("probe", choices=["commit", "cursor", "transaction"])
    parser.add_argument("--rounds", type=int, default=0,
                        help="default: 300 (commit, transaction), 2000 (cursor)")
    args = parser.parse_args()
    ensure_database(DATABASE_URL)
    if args.probe == "commit":
        commit_latency(args.rounds or 300)
    elif args.probe == "transaction":
        transaction_floor(args.rounds or 300)
    else:
        cursor_cost(args.rounds or 2000)


if __name__ == "__main__":
    main()
