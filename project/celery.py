"""The Celery app: configured from Django settings (``CELERY_*``), tasks discovered in apps."""

import os

from celery import Celery
from celery.signals import task_postrun, task_prerun

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

app = Celery("duet")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@task_prerun.connect
@task_postrun.connect
def close_old_database_connections(sender=None, **kwargs) -> None:
    """Around each task, what Django does around each request: close this thread's connections
    that broke or outlived DATABASE_CONN_MAX_AGE, keep the others (settings.CELERY_DB_REUSE_MAX).
    Not for a task run eagerly inside its caller, whose transaction may still be open."""
    if sender is not None and getattr(sender.request, "is_eager", False):
        return
    from django.db import close_old_connections

    close_old_connections()
