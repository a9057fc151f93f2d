"""Count the SQL of one call cycle, frame by frame, through the consumer's own frame handlers.

What the database costs per cycle, without sockets: each client frame goes through
``services.client_frame_once`` with the consumer's handler, as the socket does, and the callee's
ack through ``services.call_mark_delivered``. Publishing is skipped (no channel layer needed).

    DUET_BENCH_DATABASE_URL=... .venv/bin/python bench/querycount.py [--cycles 20]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, default=20)
    parser.add_argument("--show-sql", action="store_true")
    parser.add_argument("--callee-frame", choices=["after-accept", "with-accept"],
                        default="after-accept",
                        help="the callee's first remote frame in a media report after the accept, "
                             "or carried by the accept (bench/run.py --callee-frame)")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="run the cycles under cProfile (CPU time, not wall time) and print the N costliest functions")
    parser.add_argument("--population", type=int, default=10000,
                        help="users with profiles in the tables (the cycle uses two of them)")
    parser.add_argument("--alternate", metavar="SETTING",
                        help="A/B in one process: a boolean setting (e.g. DATABASE_COMBINE_WRITES) "
                             "or queued-sync (calls.rows' PQsendPipelineSync against psycopg's "
                             "flushing sync) "
                             "off and on in turns, --block cycles at a time, so that the machine's "
                             "changes of speed fall on both sides; prints each side's costs")
    parser.add_argument("--block", type=int, default=50, help="cycles per turn of --alternate")
    args = parser.parse_args()
    from bench.run import django_setup

    django_setup()
    from django.contrib.auth import get_user_model
    from django.db import connection

    from bench.users import prepare_users, reset_call_tables
    from calls import consumers, devices, events, protocol, services

    # no layer here: count the database alone (presence queries still run, their sends do not)
    events.publish = lambda rows, sockets=None: None
    devices.send_to_groups = lambda messages, sockets=None: None
    reset_call_tables()
    users = prepare_users(max(2, args.population))[:2]
    caller, callee = (get_user_model().objects.get(pk=u.user_id) for u in users)
    devices.device_connect(user=caller, device_id="a", channel_name="bench.a")
    devices.device_connect(user=callee, device_id="b", channel_name="bench.b")

    per_step: dict[str, Counter] = defaultdict(Counter)
    seconds: dict[str, float] = defaultdict(float)
    statements: dict[str, list[str]] = defaultdict(list)
    current = {"step": ""}

    def count(sql):
        if not current["step"]:
            return  # the benchmark's own reads, before and after the cycles
        per_step[current["step"]]["queries"] += 1
        if args.show_sql and len(statements[current["step"]]) < 40:
            statements[current["step"]].append(str(sql)[:160])

    count_statements(connection, count)

    ids = iter(range(1, 10**9))

    def frame(step, user, device, handler, **fields):
        current["step"] = step
        context = consumers.FrameContext(user, device)
        fields = protocol.parse_frame(json.dumps({"id": "x", "type": step.split()[0],
                                                  **fields})).fields  # as the socket parses it
        started = time.perf_counter()
        reply = services.client_frame_once(user=user, frame_id=f"q{next(ids)}",
                                           handle=lambda: handler(context, **fields))
        seconds[step] += time.perf_counter() - started
        assert reply["ok"], reply
        return reply["data"]

    from bench import procstat

    def wal_lsn() -> str | None:
        if connection.vendor != "postgresql":
            return None
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_current_wal_lsn()")
            return cursor.fetchone()[0]

    wal_before = wal_lsn()
    postmaster = procstat.postmaster_pid()
    postgres_before = procstat.postgres_cpu_seconds(postmaster) if postmaster else 0.0
    cpu_before = time.process_time()
    profiler = None
    if args.profile:
        import cProfile

        profiler = cProfile.Profile(time.process_time)
        profiler.enable()
    cycles_run = iter(range(10**9))

    def one_cycle():
        if next(cycles_run) % 200 == 199:  # the devices stay online through a long run
            devices.device_heartbeat(channel_names=["bench.a", "bench.b"])
        data = frame("call", caller, "a", consumers._call, to=callee.pk, call_type="video",
                     timeout_ms=5000)
        call_id = data["call_id"]
        current["step"] = "ack (delivered)"
        started = time.perf_counter()
        services.call_mark_delivered(call_id=call_id, device_id="b")
        seconds["ack (delivered)"] += time.perf_counter() - started
        if args.callee_frame == "with-accept":
            frame("accept", callee, "b", consumers._accept, call_id=call_id,
                  first_remote_frame=True)
        else:
            frame("accept", callee, "b", consumers._accept, call_id=call_id)
            frame("media (callee)", callee, "b", consumers._media, call_id=call_id,
                  milestone="first_remote_frame")
        frame("media (caller)", caller, "a", consumers._media, call_id=call_id,
              milestone="first_remote_frame")
        frame("hangup", caller, "a", consumers._hangup, call_id=call_id)

    if args.alternate:
        alternate(args, one_cycle, seconds, postmaster)
        return
    for _ in range(args.cycles):
        one_cycle()
    cpu_ms = (time.process_time() - cpu_before) * 1000 / args.cycles
    current["step"] = ""
    wal_after = wal_lsn()
    if profiler is not None:
        profiler.disable()
        import pstats

        pstats.Stats(profiler).sort_stats("tottime").print_stats(args.profile)
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(args.profile)
    postgres_ms = ((procstat.postgres_cpu_seconds(postmaster) - postgres_before) * 1000 / args.cycles
                   if postmaster else 0.0)
    total_queries = sum(c["queries"] for c in per_step.values())
    if wal_before is not None:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_wal_lsn_diff(%s, %s)", [wal_after, wal_before])
            wal_bytes = float(cursor.fetchone()[0]) / args.cycles
        print(f"WAL per cycle: {wal_bytes / 1024:.1f} KiB, {wal_before} to {wal_after} (pg_waldump; "
              "PostgreSQL's whole instance: run "
              "it on a quiet machine)")
    print(f"per cycle ({args.cycles} cycles): {total_queries / args.cycles:.1f} queries, "
          f"{sum(seconds.values()) * 1000 / args.cycles:.1f} ms in the database thread, "
          f"{cpu_ms:.1f} ms CPU in Python (Django + psycopg), {postgres_ms:.1f} ms CPU in "
          "PostgreSQL (all of its processes)")
    for step, counter in per_step.items():
        print(f"  {step:18} {counter['queries'] / args.cycles:5.1f} queries "
              f"{seconds[step] * 1000 / args.cycles:6.2f} ms")
        for sql in statements.get(step, [])[:40] if args.show_sql else []:
            print(f"      {sql}")


def _queued_sync(side: bool) -> None:
    """on: the pipeline's syncs queued behind the statements (libpq's PQsendPipelineSync, as
    calls.rows does); off: psycopg's own sync, which writes the buffer out at once."""
    from calls import rows

    found = rows.__dict__.setdefault("_bench_send_pipeline_sync", rows._libpq_send_pipeline_sync)
    rows._libpq_send_pipeline_sync = found if side else (lambda: None)


# --alternate's switches that are not settings: name -> switch(side)
SWITCHES = {"queued-sync": _queued_sync}


def alternate(args, one_cycle, seconds, postmaster) -> None:
    """Run ``args.cycles`` cycles with ``args.alternate`` off and on in turns of ``args.block``."""
    from django.conf import settings

    from bench import procstat

    name = args.alternate
    switch = SWITCHES.get(name)
    if switch is None:
        if not isinstance(getattr(settings, name, None), bool):
            raise SystemExit(f"--alternate needs a boolean setting or one of {sorted(SWITCHES)}; "
                             f"{name} is neither")
        switch = lambda side: setattr(settings, name, side)  # noqa: E731
    totals = {False: [0.0, 0.0, 0.0, 0], True: [0.0, 0.0, 0.0, 0]}  # thread, Python, PG, cycles
    for turn in range(0, args.cycles, args.block):
        side = (turn // args.block) % 2 == 1
        switch(side)
        cycles = min(args.block, args.cycles - turn)
        thread_before, cpu_before = sum(seconds.values()), time.process_time()
        postgres_before = procstat.postgres_cpu_seconds(postmaster) if postmaster else 0.0
        for _ in range(cycles):
            one_cycle()
        total = totals[side]
        total[0] += sum(seconds.values()) - thread_before
        total[1] += time.process_time() - cpu_before
        total[2] += (procstat.postgres_cpu_seconds(postmaster) - postgres_before
                     if postmaster else 0.0)
        total[3] += cycles
    for side, (thread, python, postgres, cycles) in totals.items():
        print(f"{name}={'on' if side else 'off'} ({cycles} cycles, in turns of {args.block}): "
              f"{thread * 1000 / cycles:.2f} ms in the database thread, {python * 1000 / cycles:.2f} "
              f"ms CPU in Python, {postgres * 1000 / cycles:.2f} ms CPU in PostgreSQL per cycle")


def count_statements(connection, count) -> None:
    """Call ``count(sql)`` for every statement psycopg's cursors run (Django's, the driver's own
    and the ``RawCursor`` of calls.rows' joined writes).

    Counted there, and not with Django's ``execute_wrapper``, because the call transactions'
    statements skip Django's cursor wrapper when no wrapper is installed (calls.rows): a wrapper
    would count them by sending them down Django's slower path, and time that path instead.
    """
    import psycopg

    if connection.vendor != "postgresql":
        raise SystemExit("querycount needs PostgreSQL (DUET_BENCH_DATABASE_URL)")
    execute, executemany = psycopg.Cursor.execute, psycopg.Cursor.executemany

    def counted(self, query, params=None, **kwargs):
        count(query)
        return execute(self, query, params, **kwargs)

    def counted_many(self, query, params_seq, **kwargs):
        count(query)
        return executemany(self, query, params_seq, **kwargs)

    psycopg.Cursor.execute, psycopg.Cursor.executemany = counted, counted_many


if __name__ == "__main__":
    main()
