"""Serve Duet with daphne; with the embedded default, also run a Celery worker in this process.

The in-memory broker is reachable only from its own process, so the embedded default runs the
worker (with the overdue-call sweeper as its beat) on a thread beside daphne: ring timeouts fire
even with no Redis. With ``REDIS_URL`` set, run ``celery worker`` and ``celery beat`` separately.

``--cpu N`` pins the process, every thread it has and every thread it starts, to core N: the
production topology runs one web process per core (README). A web process is an event loop and
its database threads handing the interpreter to each other many times per call; kept on one core
they do so without waking another core, which on a 2-core machine cut the invite's latency by
about half at 60 cycles/s and the CPU per cycle by 5 % (docs/benchmarks.md).
"""

import os

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError


def pin_to_cpu(cpu: int) -> None:
    """Pin this process to core ``cpu``: every thread it has now, and (inherited) every thread
    it starts later. Raises CommandError, changing nothing, when the core is not one this
    process may run on or the platform cannot pin."""
    if not hasattr(os, "sched_setaffinity"):
        raise CommandError("--cpu: this platform cannot pin a process to a core")
    allowed = sorted(os.sched_getaffinity(0))
    if cpu not in allowed:
        raise CommandError(f"--cpu {cpu}: this process may run on cores "
                           f"{', '.join(map(str, allowed))} only")
    for thread_id in sorted(int(name) for name in os.listdir("/proc/self/task")):
        try:
            os.sched_setaffinity(thread_id, {cpu})
        except ProcessLookupError:  # a thread that ended meanwhile
            continue


class Command(BaseCommand):
    help = "Serve the ASGI app with daphne (and the embedded Celery worker when configured)."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--cpu", type=int, default=None,
                            help="pin this process and all its threads to this CPU core "
                                 "(one web process per core)")

    def handle(self, *args, host, port, cpu=None, **options):
        from daphne.cli import CommandLineInterface

        if cpu is not None:
            pin_to_cpu(cpu)  # first: every thread started below inherits it
            self.stdout.write(f"pinned to CPU core {cpu}")
        if settings.DUET_EMBEDDED_WORKER:
            from project.embedded import start_embedded_worker

            start_embedded_worker()
            self.stdout.write("embedded Celery worker started")
        CommandLineInterface().run(["-b", host, "-p", str(port), "project.asgi:application"])
