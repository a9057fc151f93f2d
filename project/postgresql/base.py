"""Django's PostgreSQL backend, with a health check that runs at most once a second.

With ``CONN_HEALTH_CHECKS`` Django sends ``SELECT 1`` before the first query of every unit of
work (a request, or each ``database_sync_to_async`` call: every client frame, ack and timer) to
find a connection that died while idle. On a socket server that is one extra round trip per
frame. Here a connection checked, or opened, less than ``DATABASE_HEALTH_CHECK_INTERVAL_S`` ago
skips it: a connection is checked before use whenever it has been idle longer than that, and a
busy one once per interval. A connection that breaks within the interval fails that one unit of
work with a database error (the frame is answered ``unavailable`` and changes nothing), and
Django's end-of-work check closes it, as it would without health checks.
"""

from __future__ import annotations

import time

from django.conf import settings
from django.db.backends.postgresql import base


class DatabaseWrapper(base.DatabaseWrapper):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.healthy_until = 0.0  # time.monotonic() before which no check is needed

    # Called before Django makes a cursor for a statement of its own (an ORM query, a savepoint):
    # inside a block whose writes calls.rows holds back for one statement, those are sent first,
    # so that the statement runs after them, as written (calls/rows.py, ``flush_writes``).
    before_cursor = None

    def create_cursor(self, name=None):
        if self.before_cursor is not None:
            self.before_cursor()
        return super().create_cursor(name)

    def connect(self):
        super().connect()
        self.healthy_until = time.monotonic() + settings.DATABASE_HEALTH_CHECK_INTERVAL_S

    def close_if_health_check_failed(self):
        if (self.connection is not None and self.health_check_enabled
                and not self.health_check_done and time.monotonic() < self.healthy_until):
            self.health_check_done = True
            return
        was_due = self.connection is not None and not self.health_check_done
        super().close_if_health_check_failed()
        if was_due and self.connection is not None:
            self.healthy_until = time.monotonic() + settings.DATABASE_HEALTH_CHECK_INTERVAL_S
