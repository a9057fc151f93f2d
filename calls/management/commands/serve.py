"""Serve Duet with daphne; with the embedded default, also run a Celery worker in this process.

The in-memory broker is reachable only from its own process, so the embedded default runs the
worker (with the overdue-call sweeper as its beat) on a thread beside daphne: ring timeouts fire
even with no Redis. With ``REDIS_URL`` set, run ``celery worker`` and ``celery beat`` separately.
"""

from django.conf import settings
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Serve the ASGI app with daphne (and the embedded Celery worker when configured)."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)

    def handle(self, *args, host, port, **options):
        from daphne.cli import CommandLineInterface

        if settings.DUET_EMBEDDED_WORKER:
            from project.embedded import start_embedded_worker

            start_embedded_worker()
            self.stdout.write("embedded Celery worker started")
        CommandLineInterface().run(["-b", host, "-p", str(port), "project.asgi:application"])
