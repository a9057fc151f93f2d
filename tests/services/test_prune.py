"""Housekeeping's pruning: replies past the idempotency window and events past replay go; the rest
stays (PostgreSQL and SQLite alike)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from calls import services
from calls.models import ClientFrame, UserEvent

pytestmark = pytest.mark.django_db


def _reply(user, frame_id: str, created_at) -> None:
    ClientFrame.objects.create(user=user, frame_id=frame_id, reply={"id": frame_id, "ok": True},
                               created_at=created_at)


def _event(user, seq: int, created_at) -> None:
    UserEvent.objects.create(user=user, seq=seq, frame={"type": "event", "seq": seq},
                             created_at=created_at)


def test_prune_drops_only_what_its_windows_no_longer_cover(alice, bob):
    # given replies and events on both sides of their windows, for two users
    now = timezone.now()
    reply_cut = now - timedelta(seconds=services.CLIENT_FRAME_RETENTION_S)
    event_cut = now - timedelta(seconds=services.USER_EVENT_RETENTION_S)
    _reply(alice, "old", reply_cut - timedelta(microseconds=1))
    _reply(bob, "old", reply_cut - timedelta(hours=5))
    _reply(alice, "edge", reply_cut)  # exactly at the window's edge: still covered
    _reply(alice, "new", now)
    _event(alice, 1, event_cut - timedelta(seconds=1))
    _event(bob, 1, event_cut - timedelta(days=3))
    _event(alice, 2, event_cut)
    _event(bob, 2, reply_cut - timedelta(hours=1))  # old for a reply, young for an event
    # when housekeeping prunes
    pruned = services.records_prune(now=now)
    # then the four records past their windows are gone, and only those
    assert pruned == 4
    assert sorted(ClientFrame.objects.values_list("user__username", "frame_id")) == [
        ("alice", "edge"), ("alice", "new")]
    assert sorted(UserEvent.objects.values_list("user__username", "seq")) == [
        ("alice", 2), ("bob", 2)]
    # and a second run finds nothing more
    assert services.records_prune(now=now) == 0


def test_a_pruned_reply_no_longer_answers_a_repeated_frame(alice):
    # given a reply stored for frame "f1" long ago
    now = timezone.now()
    _reply(alice, "f1", now - timedelta(seconds=services.CLIENT_FRAME_RETENTION_S + 1))
    services.records_prune(now=now)
    # when the same frame id comes again, then it is handled afresh (the window has passed)
    handled = []
    reply = services.client_frame_once(user=alice, frame_id="f1",
                                       handle=lambda: handled.append("again") or {"n": 2})
    assert handled == ["again"]
    assert reply == {"type": "reply", "id": "f1", "ok": True, "data": {"n": 2}}
