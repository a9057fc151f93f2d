"""Celery tasks: each fetches what it needs and calls one service, nothing more.

All are idempotent: the machine ignores a timer that fires late or twice.
"""

from celery import shared_task

from calls import services


@shared_task(acks_late=True)
def ring_timeout_task(call_id: str) -> str:
    call = services.call_timeout(call_id=call_id)
    return call.phase


@shared_task
def sweep_overdue_calls_task() -> int:
    return services.calls_sweep_overdue()
