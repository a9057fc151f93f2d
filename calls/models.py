"""Duet's records: profiles, showrooms, call sessions with their timelines, and delivery state.

Invariants:
- ``Profile.active_call`` points at the one live call a user is in, or is null; only the call
  services set and clear it, with the profile row locked.
- ``Profile.event_seq`` is the last ``seq`` given to one of the user's events; ``UserEvent`` rows
  are allocated under the same lock, so a user's seqs are gapless and commit in order.
- ``CallEvent`` is append-only: nothing updates or deletes a row.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models

from calls.domain.machine import CallType, EndReason, Phase, Side


def _choices(enum_cls) -> list[tuple[str, str]]:
    return [(member.value, member.value.replace("_", " ")) for member in enum_cls]


class Profile(models.Model):
    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE,
                                related_name="profile")
    display_name = models.CharField(max_length=80, blank=True)
    active_call = models.ForeignKey("CallSession", null=True, blank=True,
                                    on_delete=models.SET_NULL, related_name="+")
    event_seq = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return self.display_name or self.user.get_username()

    @property
    def name(self) -> str:
        return self.display_name or self.user.get_username()


class Room(models.Model):
    """A user's own showroom: they live-stream to viewers from it."""

    class Status(models.TextChoices):
        offline = "offline", "offline"
        live = "live", "live"
        private = "private", "in a private call"

    owner = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE,
                                 related_name="room")
    title = models.CharField(max_length=120)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.offline)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return self.title


class CallSession(models.Model):
    call_id = models.CharField(max_length=32, unique=True)
    caller = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT,
                               related_name="calls_made")
    callee = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT,
                               related_name="calls_received")
    call_type = models.CharField(max_length=5, choices=_choices(CallType))
    # No index of its own: call_phase_deadline (phase, deadline_at) serves lookups by phase.
    phase = models.CharField(max_length=10, choices=_choices(Phase), default=Phase.ringing.value)
    end_reason = models.CharField(max_length=20, choices=_choices(EndReason), blank=True)
    ended_by = models.CharField(max_length=6, choices=_choices(Side), blank=True)
    extension = models.JSONField(default=dict, blank=True)
    room = models.ForeignKey(Room, null=True, blank=True, on_delete=models.SET_NULL,
                             related_name="calls")
    channel = models.CharField(max_length=64)
    timeout_ms = models.PositiveIntegerField()
    deadline_at = models.DateTimeField()
    caller_device = models.CharField(max_length=64, blank=True)
    callee_device = models.CharField(max_length=64, blank=True,
                                     help_text="the callee device that accepted")
    caller_has_frame = models.BooleanField(default=False)
    callee_frame_devices = models.JSONField(default=list, blank=True)
    caller_connected = models.BooleanField(default=False)
    callee_connected = models.BooleanField(default=False)
    caller_away = models.BooleanField(default=False, help_text="every caller device dropped")
    callee_away = models.BooleanField(default=False, help_text="every callee device dropped")
    version = models.PositiveIntegerField(default=0)
    costs = models.JSONField(default=dict, blank=True,
                             help_text="client-measured timings of the call's cost nodes (ms)")

    created_at = models.DateTimeField(db_index=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    accepted_at = models.DateTimeField(null=True, blank=True)
    caller_joined_at = models.DateTimeField(null=True, blank=True)
    callee_joined_at = models.DateTimeField(null=True, blank=True)
    caller_published_at = models.DateTimeField(null=True, blank=True)
    callee_published_at = models.DateTimeField(null=True, blank=True)
    caller_first_frame_at = models.DateTimeField(null=True, blank=True)
    callee_first_frame_at = models.DateTimeField(null=True, blank=True)
    caller_connected_at = models.DateTimeField(null=True, blank=True)
    callee_connected_at = models.DateTimeField(null=True, blank=True)
    connected_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["phase", "deadline_at"], name="call_phase_deadline")]
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.call_id} {self.caller_id}->{self.callee_id} {self.phase}"

    def duration_ms(self) -> int | None:
        if self.connected_at and self.ended_at:
            return int((self.ended_at - self.connected_at).total_seconds() * 1000)
        return None


class CallEvent(models.Model):
    """One thing that happened to a call: an input applied, a notification sent, a milestone."""

    call = models.ForeignKey(CallSession, on_delete=models.CASCADE, related_name="events",
                             db_index=False)  # callevent_call_at (call, at) serves it
    at = models.DateTimeField()
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                              on_delete=models.SET_NULL, related_name="+")
    device_id = models.CharField(max_length=64, blank=True)
    kind = models.CharField(max_length=32)
    payload = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["at", "id"]
        indexes = [models.Index(fields=["call", "at"], name="callevent_call_at")]

    def __str__(self) -> str:
        return f"{self.kind} at {self.at:%H:%M:%S.%f}"


class UserEvent(models.Model):
    """A server event for one user, kept so it can be re-sent until acknowledged or replayed."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE,
                             related_name="+", db_index=False)  # userevent_user_seq serves it
    seq = models.BigIntegerField()
    call_id = models.CharField(max_length=32, blank=True)
    frame = models.JSONField()
    only_device = models.CharField(max_length=64, blank=True)
    except_device = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(db_index=True)  # housekeeping prunes by age

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "seq"], name="userevent_user_seq")]

    def for_device(self, device_id: str) -> bool:
        if self.only_device and self.only_device != device_id:
            return False
        return not (self.except_device and self.except_device == device_id)


class Connection(models.Model):
    """A connected device socket. Rows of a crashed process go stale and stop counting."""

    channel_name = models.CharField(max_length=200, unique=True)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE,
                             related_name="+", db_index=False)  # connection_user_seen serves it
    device_id = models.CharField(max_length=64)
    connected_at = models.DateTimeField()
    seen_at = models.DateTimeField(db_index=True)

    class Meta:
        indexes = [models.Index(fields=["user", "seen_at"], name="connection_user_seen")]


class ClientFrame(models.Model):
    """The reply given to a client frame, so a re-sent frame gets it again and does nothing new."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE,
                             related_name="+", db_index=False)  # clientframe_user_frame serves it
    frame_id = models.CharField(max_length=64)
    reply = models.JSONField()
    created_at = models.DateTimeField(db_index=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "frame_id"],
                                               name="clientframe_user_frame")]
