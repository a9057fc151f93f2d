"""Presence reads: a device counts while its heartbeat is fresh (PostgreSQL and SQLite alike)."""

from datetime import timedelta

import pytest
from django.utils import timezone

from calls import selectors
from calls.models import CallSession, Connection, Profile
from tests.support import make_user

pytestmark = pytest.mark.django_db


def connect(user, *, seen_at, channel_name: str) -> None:
    Connection.objects.create(user=user, device_id=channel_name, channel_name=channel_name,
                              connected_at=seen_at, seen_at=seen_at)


def test_is_online_follows_the_freshest_heartbeat_of_the_user_alone(alice, bob):
    now = timezone.now()
    cutoff = selectors.presence_cutoff(now)
    assert selectors.is_online(alice.pk, now=now) is False  # no device
    connect(bob, seen_at=now, channel_name="bob-1")  # someone else's device
    assert selectors.is_online(alice.pk, now=now) is False
    connect(alice, seen_at=cutoff - timedelta(microseconds=1), channel_name="alice-1")
    assert selectors.is_online(alice.pk, now=now) is False  # silent past the cutoff
    connect(alice, seen_at=cutoff, channel_name="alice-2")
    assert selectors.is_online(alice.pk, now=now) is True  # exactly at the cutoff still counts
    assert selectors.is_online(alice.pk, now=now + timedelta(microseconds=1)) is False


def test_presence_of_tells_busy_online_and_offline_apart(alice, bob):
    # given alice in a live call with a fresh device, bob with a fresh device, carol silent past
    # the cutoff, dave never connected and erin connected without a profile row
    now = timezone.now()
    cutoff = selectors.presence_cutoff(now)
    carol, dave, erin = make_user("carol"), make_user("dave"), make_user("erin")
    Profile.objects.filter(user=erin).delete()
    call = CallSession.objects.create(
        call_id="p" * 32, caller=alice, callee=carol, call_type="video", phase="connected",
        channel="duet-p", timeout_ms=15000, deadline_at=now, created_at=now)
    Profile.objects.filter(user=alice).update(active_call=call)
    connect(alice, seen_at=now, channel_name="alice-1")
    connect(bob, seen_at=cutoff, channel_name="bob-1")
    connect(carol, seen_at=cutoff - timedelta(microseconds=1), channel_name="carol-1")
    connect(erin, seen_at=now, channel_name="erin-1")
    ids = [alice.pk, bob.pk, carol.pk, dave.pk, erin.pk]
    # then each gets the status the watchers are told, for one user or many
    assert selectors.presence_of(ids, now=now) == {
        alice.pk: "busy", bob.pk: "online", carol.pk: "offline", dave.pk: "offline",
        erin.pk: "online"}
    assert selectors.presence_of([bob.pk], now=now) == {bob.pk: "online"}
    assert selectors.presence_of([], now=now) == {}


def test_an_online_check_sent_ahead_is_answered_after_the_statements_sent_behind_it(alice, bob):
    # given alice with a fresh device and bob without one
    from django.db import transaction

    from calls import rows, services

    now = timezone.now()
    connect(alice, seen_at=now, channel_name="alice-1")
    # when both checks are sent in a pipelined transaction (PostgreSQL: not yet answered), the
    # profiles are locked behind them, and only then the answers are read
    with transaction.atomic(), rows.pipelined():
        alice_online = selectors.is_online_sent(alice.pk, now=now)
        bob_online = selectors.is_online_sent(bob.pk, now=now)
        locked = services.lock_profiles([alice.pk, bob.pk])
        answers = (alice_online(), bob_online())
    # then each answer is its own user's, and the lock went through
    assert answers == (True, False)
    assert sorted(locked) == sorted([alice.pk, bob.pk])


def test_a_dial_sends_the_online_check_ahead_of_the_profile_lock(alice, bob):
    # given bob online
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from calls import services

    connect(bob, seen_at=timezone.now(), channel_name="bob-1")
    # when alice calls him
    with CaptureQueriesContext(connection) as queries:
        started = services.call_start(caller=alice, device_id="a1", callee_id=bob.pk,
                                      call_type="video")
    # then the call rings (he counted as online), and the check went out first, so that on
    # PostgreSQL its answer comes back with the lock's
    assert started.outcome.value == "ring"
    sql = [query["sql"] for query in queries.captured_queries]
    online = next(i for i, text in enumerate(sql) if "calls_connection" in text)
    lock = next(i for i, text in enumerate(sql) if "FROM \"calls_profile\"" in text)
    assert online < lock
