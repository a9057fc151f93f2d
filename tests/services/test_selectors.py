"""Presence reads: a device counts while its heartbeat is fresh (PostgreSQL and SQLite alike)."""

from datetime import timedelta

import pytest
from django.utils import timezone

from calls import selectors
from calls.models import Connection

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
