import json

import pytest
import redis
from django.conf import settings

from calls.models import CallSession


@pytest.fixture
def no_timers_left_behind():
    """Transactional tests really schedule ring timers on commit; nothing consumes them here.

    Take this test's timers back out of the run's broker queue, so a worker started later in
    the same run never picks up tasks for calls that the database flush has removed.
    """
    yield
    if not settings.CELERY_BROKER_URL.startswith("redis"):
        return
    call_ids = {repr([call_id]) for call_id in CallSession.objects.values_list("call_id", flat=True)}
    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    try:
        for raw in client.lrange(settings.CELERY_TASK_DEFAULT_QUEUE, 0, -1):
            if json.loads(raw)["headers"].get("argsrepr") in call_ids:
                client.lrem(settings.CELERY_TASK_DEFAULT_QUEUE, 0, raw)
    finally:
        client.close()
