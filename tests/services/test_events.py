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

    async def noting_send(target, messages, sockets=None):
        await real_send(target, messages, sockets)
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


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("local_delivery", [True, False])
def test_a_transaction_names_its_users_sockets_as_read_behind_its_lock(
        monkeypatch, settings, local_delivery):
    # given alice with one connection (a stale one counts too) and bob with two
    from datetime import timedelta

    from calls import services
    from calls.models import Connection

    settings.DUET_LOCAL_DELIVERY = local_delivery
    alice, bob = make_user("alice"), make_user("bob")
    now = timezone.now()
    for user, channel, seen in ((alice, "a-1", now - timedelta(hours=1)), (bob, "b-1", now),
                                (bob, "b-2", now)):
        Connection.objects.create(user=user, device_id=channel, channel_name=channel,
                                  connected_at=seen, seen_at=seen)
    sent: list = []

    def noting(messages, sockets=None):
        if messages[0][0].startswith("user."):  # the events (presence goes to its watchers)
            sent.append(sockets)
    monkeypatch.setattr(events, "send_to_groups", noting)
    # when alice calls bob, and bob accepts (the two ways a transaction locks its profiles)
    call_id = services.call_start(caller=alice, device_id="a-1", callee_id=bob.pk,
                                  call_type="video").call.call_id
    services.call_accept(user=bob, device_id="b-1", call_id=call_id)
    # then each publication names every socket of each user, or nothing where local delivery is
    # off or cannot be sound (SQLite: no row locks to order a hello against)
    alice_group, bob_group = events.user_group(alice.pk), events.user_group(bob.pk)
    if local_delivery and events.local_delivery_on():
        assert [{group: sorted(channels) for group, channels in names.items()} for names in sent] \
            == [{alice_group: ["a-1"], bob_group: ["b-1", "b-2"]}] * 2
    else:
        assert sent == [{alice_group: None, bob_group: None}] * 2
