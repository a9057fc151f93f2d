"""PostgreSQL micro-probes behind figures in docs/benchmarks.md, with psycopg alone (no Django).

    .venv/bin/python bench/pgprobe.py commit   # a commit's latency, synchronous_commit on / off
    .venv/bin/python bench/pgprobe.py cursor   # a pipelined 6-write transaction: a new cursor
                                               # per statement, one shared, a raw cursor

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

    def one_shared_cursor():
        with conn.pipeline():
            cursor = conn.cursor()
            for _ in range(writes):
                cursor.execute(sql, row)
            cursor.close()
        conn.commit()

    def raw_cursor():
        with conn.pipeline():
            cursor = psycopg.RawCursor(conn)
            for _ in range(writes):
                cursor.execute(raw_sql, row)
            cursor.close()
        conn.commit()

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("probe", choices=["commit", "cursor"])
    parser.add_argument("--rounds", type=int, default=0, help="default: 300 (commit), 2000 (cursor)")
    args = parser.parse_args()
    ensure_database(DATABASE_URL)
    if args.probe == "commit":
        commit_latency(args.rounds or 300)
    else:
        cursor_cost(args.rounds or 2000)


if __name__ == "__main__":
    main()
