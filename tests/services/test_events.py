"""calls.events: what a committed transaction does after its events are handed to the layer."""

from __future__ import annotations

import asyncio
import threading

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.db import transaction
from django.utils import timezone

from calls import events
from calls.models import Profile
from tests.support import make_user


@pytest.mark.django_db(transaction=True)
async def test_in_a_server_the_after_work_runs_off_the_database_thread_after_the_events_leave(
        monkeypatch):
    # given a server loop (this test's) with a device of alice's listening on her group, and the
    # real send noting when each send has finished
    alice = await database_sync_to_async(make_user)("alice")
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add(events.user_group(alice.pk), channel)
    events.remember_home_loop()
    order: list[str] = []
    real_send = events.group_send_many

    async def noting_send(target, messages):
        await real_send(target, messages)
        order.append("sent")
    monkeypatch.setattr(events, "group_send_many", noting_send)
    release = threading.Event()
    finished = threading.Event()
    after_threads: list[str] = []

    def work(name):
        release.wait(5)  # held until the transaction's caller has its answer back
        after_threads.append(threading.current_thread().name)
        order.append(name)
        if name == "second":
            finished.set()

    # when a transaction stores an event with two pieces of after-work and commits
    def transact():
        with transaction.atomic():
            profile = Profile.objects.select_for_update().get(user_id=alice.pk)
            outbox = events.Outbox(timezone.now())
            outbox.add(alice.pk, {"name": "call.event", "event": "test"})
            outbox.after_publish(lambda: work("first"))
            outbox.after_publish(lambda: work("second"))
            outbox.flush({alice.pk: profile})
        return threading.current_thread().name

    try:
        database_thread = await database_sync_to_async(transact)()
        # then the database thread came back without running the work (it would still be held)
        assert order in ([], ["sent"])
        release.set()
        message = await layer.receive(channel)
        assert message["events"][0]["frame"]["event"] == "test"
        assert await asyncio.get_running_loop().run_in_executor(None, finished.wait, 5)
        # the event was sent first, then the work ran in order, on the after-thread
        assert order == ["sent", "first", "second"]
        assert after_threads == ["duet-after_0", "duet-after_0"]
        assert database_thread != "duet-after_0"
    finally:
        release.set()


@pytest.mark.django_db(transaction=True)
def test_outside_a_server_the_after_work_runs_inline_after_the_publication():
    # given no server loop in this process (a Celery worker, a management command)
    alice = make_user("alice")
    ran: list[str] = []
    # when a transaction with after-work commits
    with transaction.atomic():
        profile = Profile.objects.select_for_update().get(user_id=alice.pk)
        outbox = events.Outbox(timezone.now())
        outbox.add(alice.pk, {"name": "call.event", "event": "test"})
        outbox.after_publish(lambda: ran.append(threading.current_thread().name))
        outbox.flush({alice.pk: profile})
    # then it ran before the commit returned, in this thread
    assert ran == [threading.current_thread().name]
