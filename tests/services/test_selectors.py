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
