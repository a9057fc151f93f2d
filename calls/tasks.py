"""Celery tasks: each fetches what it needs and calls one service, nothing more.

All are idempotent: the machine ignores a timer that fires late or twice.
"""

from celery import shared_task
from django.utils import timezone

from calls import devices, services


@shared_task(acks_late=True)
def ring_sweep_task(at_ms: int | None = None) -> int:
    """A ring-timer slot has ended (calls.timers): end every call past its deadline.

    ``at_ms`` is the slot's end on the clock of the process that set the deadlines: a worker whose
    clock runs behind that one's (Celery compares the ETA with the worker's clock) still ends
    the slot's calls instead of finding them not yet due.
    """
    now = timezone.now()
    if at_ms is not None:
        now = max(now, services.from_ms(at_ms))
    return services.calls_sweep_overdue(now=now)


@shared_task(acks_late=True)
def ring_timeout_task(call_id: str) -> str:
    """One call's ring timer: what dials scheduled before slot timers (calls.timers). Kept so
    that the timers such a version left in the broker still run."""
    try:
        return services.call_timeout(call_id=call_id).phase
    except services.ServiceError as error:
        if error.code != "not_found":
            raise
        return "gone"  # the call was deleted: nothing left to time out


@shared_task(acks_late=True)
def connection_grace_task(call_id: str, user_id: int) -> str:
    try:
        return services.call_connection_lost(call_id=call_id, user_id=user_id).phase
    except services.ServiceError as error:
        if error.code != "not_found":
            raise
        return "gone"


@shared_task(acks_late=True)
def media_renewal_task(call_id: str) -> bool:
    try:
        return services.call_renew_media(call_id=call_id)
    except services.ServiceError as error:
        if error.code != "not_found":
            raise
        return False


@shared_task
def housekeeping_task() -> dict:
    """The guarantees behind the fast paths: lost timers, crashed processes, old records."""
    return {
        "overdue_calls": services.calls_sweep_overdue(),
        "stale_connections": devices.connections_sweep_stale(),
        "pruned": services.records_prune(),
    }
