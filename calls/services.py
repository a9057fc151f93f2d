"""Call services: every change to a call goes through one of these functions.

Each service runs the pure machine (calls.domain.machine) inside a transaction:
1. lock the participants' profile rows, ordered by user id, then the call rows, ordered by id
   (one helper, one order: two services never wait on each other in a cycle);
2. step the machine with the call's snapshot;
3. save the call (``update_fields``, version checked), append ``CallEvent`` rows, store the
   events for each user (calls.events.Outbox);
4. publish the events and schedule timers only after commit.

A :class:`ServiceError` leaves the database as it was; its ``code`` is the wire error code.
"""

from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone
from functools import lru_cache

from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from calls import media, rows, selectors
from calls.domain.codes import CallState, StateReason
from calls.domain.machine import (
    Audience, CallSnapshot, CallType, DialOutcome, EndReason, Input, InputKind, Milestone, Phase,
    RuleViolation, SendEvent, SendState, Side, Stamp, StartRingTimer, StopRingTimer, Transition,
    decide_dial, step,
)
from calls.events import Outbox, StoredEvent, collected_events, local_delivery_on
from calls.models import CallEvent, CallSession, Profile, Room
from calls.timers import ring_slots

User = get_user_model()

CALL_EVENT_FIELDS = ("call", "at", "actor", "device_id", "kind", "payload")
CLIENT_FRAME_FIELDS = ("user", "frame_id", "reply", "created_at")
LIVE_PHASES = (Phase.ringing.value, Phase.accepted.value, Phase.connected.value)
# Milestones stamped on the call record, per side (the first report counts).
MILESTONE_FIELDS = {
    Milestone.joined: "joined_at",
    Milestone.published: "published_at",
    Milestone.first_remote_frame: "first_frame_at",
}


_frame_scope = threading.local()


def _atomic():
    """A service's transaction. Inside :func:`client_frame_once` the frame's transaction already
    rolls back whole on an error (its error reply is stored apart), so no savepoint is needed."""
    return transaction.atomic(savepoint=not getattr(_frame_scope, "active", False))


class ServiceError(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


class ConcurrentUpdate(ServiceError):
    """The call row changed under a lock we held: a bug, surfaced rather than hidden."""

    def __init__(self, call_id: str):
        super().__init__("internal", f"call {call_id} changed concurrently")


_EPOCH = datetime(1970, 1, 1, tzinfo=dt_timezone.utc)
_MICROSECOND = timedelta(microseconds=1)


def to_ms(moment: datetime) -> int:
    """Milliseconds since the epoch, rounded down (exact: no float on the way)."""
    return ((moment - _EPOCH) // _MICROSECOND) // 1000


def to_ms_ceil(moment: datetime) -> int:
    """Milliseconds since the epoch, rounded up: for deadlines, never earlier than the moment."""
    return -(-((moment - _EPOCH) // _MICROSECOND) // 1000)


def whole_ms(moment: datetime) -> datetime:
    return moment.replace(microsecond=moment.microsecond - moment.microsecond % 1000)


STAMP_FIELDS = (
    "created_at", "delivered_at", "accepted_at", "caller_joined_at", "callee_joined_at",
    "caller_published_at", "callee_published_at", "caller_first_frame_at",
    "callee_first_frame_at", "caller_connected_at", "callee_connected_at", "connected_at",
    "ended_at",
)


def call_moment(call: CallSession | None, now: datetime | None = None) -> datetime:
    """When an input is applied to ``call``: the time read once its locks are held, in whole
    milliseconds, and never before anything already on the call's timeline (an input that waited
    for a lock is stamped after what it waited for)."""
    moment = whole_ms(now or timezone.now())
    if call is None:
        return moment
    stamps = [value for value in (getattr(call, name) for name in STAMP_FIELDS) if value]
    return max([moment, *stamps])


def from_ms(value: int) -> datetime:
    return datetime.fromtimestamp(value / 1000, tz=timezone.get_current_timezone())


# ---- locking --------------------------------------------------------------------------------


def lock_profiles(user_ids, *, also=None) -> dict[int, Profile]:
    """Lock the profiles of ``user_ids`` in ascending id order, creating missing ones first.
    ``also()`` sends more statements behind the first lock (see _lock_profiles_where).

    An id that is no user is left out of the result."""
    ids = sorted(set(user_ids))

    def locked(also=None):
        return _lock_profiles_where(f"{{user}} IN ({', '.join(['%s'] * len(ids))})", ids,
                                    also=also)

    profiles = locked(also)
    missing = [user_id for user_id in ids if user_id not in profiles]
    if missing:  # a user made outside Duet's sign-up has no profile yet; no such user has none
        users = User.objects.filter(pk__in=missing).values_list("pk", flat=True)
        for user_id in users:
            Profile.objects.get_or_create(user_id=user_id)
        profiles = locked()
    return profiles


def _lock_profiles_where(user_where: str, params, *, also=None) -> dict[int, Profile]:
    """Lock the profiles that ``user_where`` picks (SQL with ``{user}`` for the user column), in
    ascending user id. With local delivery (events.local_delivery_on) the users' socket channels
    are read by a statement sent right behind the lock: it runs once the lock is granted, so it
    sees every connection a ``hello`` committed before (devices.device_connect takes the profile
    row too), and its answer comes back in the lock's round trip. Each profile then carries
    ``socket_channels`` for the outbox; ``None`` means "not read" (send through the layer).
    ``also()``, if given, sends more statements behind those (see rows.select_for_update)."""
    read = {}
    reading_sockets = local_delivery_on()

    def behind():
        if reading_sockets:
            read["sockets"] = selectors.socket_channels_sent(user_where, params)
        if also is not None:
            also()
    found = rows.select_for_update(Profile, user_where.format(user=rows.column(Profile, "user")),
                                   params, related="user", order_by="user",
                                   behind=behind if reading_sockets or also else None)
    sockets = read["sockets"]() if read else None
    for profile in found:
        profile.socket_channels = (None if sockets is None
                                   else tuple(sockets.get(profile.user_id, ())))
    return {profile.user_id: profile for profile in found}


def lock_calls(pks) -> dict[int, CallSession]:
    ids = sorted({pk for pk in pks if pk is not None})
    if not ids:
        return {}
    where = f"{rows.column(CallSession, 'id')} IN ({', '.join(['%s'] * len(ids))})"
    found = rows.select_for_update(CallSession, where, ids, order_by="id")
    return {call.pk: call for call in found}


# ---- snapshot mapping -----------------------------------------------------------------------


def to_snapshot(call: CallSession) -> CallSnapshot:
    return CallSnapshot(
        phase=Phase(call.phase), call_type=CallType(call.call_type), caller_id=call.caller_id,
        callee_id=call.callee_id, deadline_ms=to_ms_ceil(call.deadline_at),
        caller_device=call.caller_device or None, callee_device=call.callee_device or None,
        delivered=call.delivered_at is not None, caller_has_frame=call.caller_has_frame,
        callee_frame_devices=frozenset(call.callee_frame_devices),
        caller_connected=call.caller_connected, callee_connected=call.callee_connected,
        caller_away=call.caller_away, callee_away=call.callee_away,
        end_reason=EndReason(call.end_reason) if call.end_reason else None,
        ended_by=Side(call.ended_by) if call.ended_by else None)


def _write_snapshot(call: CallSession, snap: CallSnapshot) -> set[str]:
    values = {
        "phase": snap.phase.value,
        "caller_device": snap.caller_device or "",
        "callee_device": snap.callee_device or "",
        "caller_has_frame": snap.caller_has_frame,
        "callee_frame_devices": sorted(snap.callee_frame_devices),
        "caller_connected": snap.caller_connected,
        "callee_connected": snap.callee_connected,
        "caller_away": snap.caller_away,
        "callee_away": snap.callee_away,
        "end_reason": snap.end_reason.value if snap.end_reason else "",
        "ended_by": snap.ended_by.value if snap.ended_by else "",
    }
    changed = set()
    for name, value in values.items():
        if getattr(call, name) != value:
            setattr(call, name, value)
            changed.add(name)
    return changed


# ---- frames ---------------------------------------------------------------------------------


def user_summary(profile: Profile) -> dict:
    return {"id": profile.user_id, "username": profile.user.get_username(),
            "display_name": profile.name}


def call_costs(call: CallSession) -> dict:
    """Server-side timings of the call's cost nodes, in ms from the call's start."""
    start = call.created_at
    costs = {}
    for name in ("delivered", "accepted", "caller_joined", "callee_joined",
                 "caller_first_frame", "callee_first_frame", "caller_connected",
                 "callee_connected", "connected"):
        moment = getattr(call, f"{name}_at")
        if moment is not None:
            costs[name] = int((moment - start).total_seconds() * 1000)
    if call.costs:
        costs["client"] = call.costs
    return costs


def call_info(call: CallSession, profiles: dict[int, Profile], *, with_costs: bool) -> dict:
    info = {
        "caller": user_summary(profiles[call.caller_id]),
        "callee": user_summary(profiles[call.callee_id]),
        "call_type": call.call_type,
        "channel": call.channel,
        "extension": call.extension,
        "room": call.room_id,
        "active_device": call.callee_device or None,
    }
    if with_costs:
        info["costs"] = call_costs(call)
    return info


def state_frame(call, profiles, state: CallState, reason: StateReason, text: str) -> dict:
    return {"name": "call.state", "call_id": call.call_id, "state": state.name,
            "state_code": int(state), "reason": reason.name, "reason_code": int(reason),
            "event_reason": text,
            "info": call_info(call, profiles, with_costs=state is CallState.connected)}


def event_frame(call, event, text: str) -> dict:
    frame = {"name": "call.event", "call_id": call.call_id, "event": event.name,
             "event_code": int(event)}
    if text:
        frame["reason"] = text
    return frame


def _device_filter(call: CallSession, side: Side, audience: Audience) -> tuple[str, str]:
    if side is Side.caller or not call.callee_device:
        return "", ""
    if audience is Audience.active:
        return call.callee_device, ""
    if audience is Audience.others:
        return "", call.callee_device
    return "", ""


# ---- applying a transition ------------------------------------------------------------------


@dataclass
class Record:
    """The CallEvent that says which input was applied."""

    kind: str
    actor_id: int | None = None
    device_id: str = ""
    payload: dict | None = None


def _apply(*, call: CallSession, before: CallSnapshot | None, transition: Transition,
           profiles: dict[int, Profile], outbox: Outbox, now: datetime, record: Record,
           reason_text: str = "", changed: set[str] | None = None) -> None:
    snap = transition.call
    changed = (changed or set()) | _write_snapshot(call, snap)
    for effect in transition.effects:
        if isinstance(effect, Stamp) and getattr(call, f"{effect.name}_at") is None:
            setattr(call, f"{effect.name}_at", now)
            changed.add(f"{effect.name}_at")
    # CALL_EVENT_FIELDS' values: rows only written need no model instance (calls.rows)
    timeline = [(call.pk, now, record.actor_id, record.device_id, record.kind, record.payload or {})]
    for effect in transition.effects:
        if isinstance(effect, (SendState, SendEvent)):
            user_id = snap.user_of(effect.side)
            only, exclude = _device_filter(call, effect.side, effect.audience)
            frames = []
            if isinstance(effect, SendState):
                frames.append(state_frame(call, profiles, effect.state, effect.reason, reason_text))
            if effect.event is not None:
                frames.append(event_frame(call, effect.event, reason_text))
            for frame in frames:
                outbox.add(user_id, frame, call_id=call.call_id, only_device=only,
                           except_device=exclude)
            timeline.append((call.pk, now, user_id, "", "notified",
                             _notified_payload(effect, only, exclude)))
        elif isinstance(effect, StartRingTimer):
            outbox.after_publish(lambda at=effect.deadline_ms, now=to_ms(now): arm_ring_timer(at, now))
        elif isinstance(effect, StopRingTimer):
            pass  # the slot's sweep no longer selects a connected or ended call
    if before is not None and before.phase.is_live and not snap.phase.is_live:
        _release(call, profiles, outbox)
    _save(call, changed)
    rows.insert_values(CallEvent, CALL_EVENT_FIELDS, timeline)


def _notified_payload(effect, only: str, exclude: str) -> dict:
    payload = {"side": effect.side.value, "event": effect.event.name if effect.event else None}
    if isinstance(effect, SendState):
        payload.update(state=effect.state.name, reason=effect.reason.name)
    if only:
        payload["only_device"] = only
    if exclude:
        payload["except_device"] = exclude
    return payload


def _release(call: CallSession, profiles: dict[int, Profile], outbox: Outbox) -> None:
    for user_id in (call.caller_id, call.callee_id):
        profile = profiles[user_id]
        if profile.active_call_id == call.pk:
            profile.active_call = None
            outbox.touch(profile, "active_call")
    _announce_presence(call, outbox, busy=False)


def _occupy(call: CallSession, profiles: dict[int, Profile], outbox: Outbox) -> None:
    for user_id in (call.caller_id, call.callee_id):
        profile = profiles[user_id]
        profile.active_call = call
        outbox.touch(profile, "active_call")
    _announce_presence(call, outbox, busy=True)


def _announce_presence(call: CallSession, outbox: Outbox, *, busy: bool) -> None:
    from calls.devices import presence_publish

    users = [call.caller_id, call.callee_id]
    # Both are busy once the call is theirs: no need to ask the database.
    known = {user_id: "busy" for user_id in users} if busy else None
    outbox.after_publish(lambda: presence_publish(user_ids=users, known=known))


def _save(call: CallSession, changed: set[str]) -> None:
    """Write the changed fields of a stored call (a new one is inserted by ``_create_call``)."""
    if not changed:
        return
    call.version += 1

    def missed():
        call.version -= 1
        raise ConcurrentUpdate(call.call_id)
    rows.update(call, ("version", *sorted(changed)), guard="version", guard_value=call.version - 1,
                on_miss=missed)


def arm_ring_timer(deadline_ms: int, now_ms: int) -> None:
    """Make sure a ring sweep runs once ``deadline_ms`` has passed (calls.timers: one task per
    slot and process, not one per call)."""
    ring_slots.arm(deadline_ms, now_ms=now_ms, schedule=schedule_ring_sweep)


def schedule_ring_sweep(at_ms: int) -> None:
    from calls.tasks import ring_sweep_task

    ring_sweep_task.apply_async(args=[at_ms], eta=from_ms(at_ms))


# ---- dialing --------------------------------------------------------------------------------


@dataclass
class CallStarted:
    call: CallSession
    outcome: DialOutcome
    media: dict


def call_start(*, caller, device_id: str, callee_id: int, call_type: CallType,
               extension: dict | None = None, timeout_ms: int | None = None,
               room_id: int | None = None, wait_first_frame: bool = True,
               now: datetime | None = None) -> CallStarted:
    from django.conf import settings

    call_type = CallType(call_type)
    timeout_ms = timeout_ms or settings.DUET_RING_TIMEOUT_MS
    if callee_id == caller.pk:
        raise ServiceError("self_call", "you cannot call yourself")
    if room_id is not None and not Room.objects.filter(pk=room_id).exists():
        raise ServiceError("not_found", f"no room {room_id}")
    with _atomic(), rows.pipelined(commit=True):
        # sent ahead of the lock: on PostgreSQL both answers come back in one round trip
        callee_online = selectors.is_online_sent(callee_id, now=now)
        # the new call's key comes back with the lock too: its INSERT then waits for nothing
        key = []
        profiles = lock_profiles([caller.pk, callee_id],
                                 also=lambda: key.append(rows.next_key_sent(CallSession)))
        callee_online, call_key = callee_online(), key[0]()
        if callee_id not in profiles or not profiles[callee_id].user.is_active:
            raise ServiceError("not_found", f"no user {callee_id}")
        calls = lock_calls([profiles[caller.pk].active_call_id, profiles[callee_id].active_call_id])
        caller_call = calls.get(profiles[caller.pk].active_call_id)
        callee_call = calls.get(profiles[callee_id].active_call_id)
        now = max(call_moment(caller_call, now), call_moment(callee_call, now))
        try:
            decision = decide_dial(
                caller_id=caller.pk, callee_id=callee_id, call_type=call_type,
                now_ms=to_ms(now), timeout_ms=timeout_ms, caller_device=device_id,
                caller_active=to_snapshot(caller_call) if caller_call else None,
                callee_active=to_snapshot(callee_call) if callee_call else None,
                callee_online=callee_online,
                wait_first_frame=wait_first_frame)
        except RuleViolation as violation:
            raise ServiceError(violation.code, violation.message) from None
        outbox = Outbox(now)
        if decision.outcome is DialOutcome.glare:
            _apply(call=caller_call, before=to_snapshot(caller_call), transition=decision.existing,
                   profiles=profiles, outbox=outbox, now=now,
                   record=Record("accept", caller.pk, device_id,
                                 {"via": "glare", **_frame_wait(wait_first_frame)}))
            result = caller_call
        else:
            if decision.outcome is DialOutcome.recall:
                _apply(call=caller_call, before=to_snapshot(caller_call),
                       transition=decision.existing, profiles=profiles, outbox=outbox, now=now,
                       record=Record("recalled", caller.pk, device_id))
            result = _create_call(decision.created, key=call_key, profiles=profiles,
                                  outbox=outbox, now=now,
                                  device_id=device_id, extension=extension or {},
                                  timeout_ms=timeout_ms, room_id=room_id,
                                  outcome=decision.outcome, wait_first_frame=wait_first_frame)
        outbox.flush(profiles)
    credentials = media.credentials_for(channel=result.channel, user_id=caller.pk,
                                        now_ms=to_ms(now))
    return CallStarted(result, decision.outcome, credentials.media)


def _frame_wait(wait_first_frame: bool) -> dict:
    """The timeline's note of a device that connects without waiting for a first remote frame."""
    return {} if wait_first_frame else {"wait_first_frame": False}


def _create_call(created: Transition, *, key: int | None, profiles, outbox, now, device_id,
                 extension, timeout_ms, room_id, outcome: DialOutcome,
                 wait_first_frame: bool) -> CallSession:
    snap = created.call
    call_id = secrets.token_hex(16)
    call = CallSession(
        id=key, call_id=call_id, caller_id=snap.caller_id, callee_id=snap.callee_id,
        call_type=snap.call_type.value, extension=extension, room_id=room_id,
        channel=f"duet-{call_id}", timeout_ms=timeout_ms,
        deadline_at=now + timedelta(milliseconds=timeout_ms), created_at=now)
    _write_snapshot(call, snap)
    rows.create(call)
    if snap.phase.is_live:
        _occupy(call, profiles, outbox)
    _apply(call=call, before=None, transition=created, profiles=profiles, outbox=outbox, now=now,
           record=Record("dial", snap.caller_id, device_id,
                         {"outcome": outcome.value, "call_type": snap.call_type.value,
                          **_frame_wait(wait_first_frame)}))
    return call


# ---- acting on a call -----------------------------------------------------------------------


def _participants(call_id: str) -> tuple[int, int]:
    row = CallSession.objects.filter(call_id=call_id).values_list("caller_id", "callee_id").first()
    if row is None:
        raise ServiceError("not_found", f"no call {call_id}")
    return row


@lru_cache(maxsize=None)
def _participants_where() -> str:
    """Two scalar subqueries: PostgreSQL looks both users up by index (a BitmapOr). ``IN`` over
    subqueries made it scan every profile (bench/patches/07 has the EXPLAIN ANALYZE). ``{user}``
    stands for the user column (of the profile, or of a connection)."""
    table = rows.database().ops.quote_name(CallSession._meta.db_table)
    by_id = f"{rows.column(CallSession, 'call_id')} = %s"
    return (f"{{user}} = (SELECT {rows.column(CallSession, 'caller')} FROM {table} WHERE {by_id})"
            f" OR {{user}} = (SELECT {rows.column(CallSession, 'callee')} FROM {table} "
            f"WHERE {by_id})")


def lock_call(call_id: str) -> CallSession:
    return _the_call(call_id, _lock_call_sent(call_id)())


def _lock_call_sent(call_id: str):
    return rows.select_for_update_sent(CallSession, f"{rows.column(CallSession, 'call_id')} = %s",
                                       [call_id])


def _the_call(call_id: str, found: list[CallSession]) -> CallSession:
    if not found:
        raise ServiceError("not_found", f"no call {call_id}")
    return found[0]


def lock_participants_and_call(call_id: str) -> tuple[dict[int, Profile], CallSession]:
    """Lock the profiles of a call's two participants (ascending id, one query), then the call,
    in that lock order, in one round trip on PostgreSQL: the call's lock is sent right behind the
    profiles' (with their sockets' read) and runs once those are granted (docs/benchmarks.md,
    "One round trip less per transition")."""
    sent = []

    def behind():
        sent.append(_lock_call_sent(call_id))
    profiles = _lock_profiles_where(_participants_where(), [call_id, call_id], also=behind)
    found = sent[0]()
    if len(profiles) == 2:
        return profiles, _the_call(call_id, found)
    # no such call, or a profile still to create: the profiles' lock first, as everywhere
    return lock_profiles(_participants(call_id)), lock_call(call_id)


def _step_call(*, call_id: str, inp: Input, now: datetime | None, record: Record,
               reason_text: str = "", check_user: int | None = None,
               annotate=None) -> CallSession:
    """Step one call under its locks, at :func:`call_moment`. ``annotate(call, side, moment)`` may
    record non-rule facts on the locked row (milestone times, client costs) and returns the names
    of the fields it set."""
    with _atomic(), rows.pipelined(commit=True):
        profiles, call = lock_participants_and_call(call_id)
        if check_user is not None and check_user not in profiles:
            raise ServiceError("forbidden", "you are not a participant of this call")
        now = call_moment(call, now)
        inp = replace(inp, now_ms=to_ms(now))
        before = to_snapshot(call)
        try:
            transition = step(before, inp)
        except RuleViolation as violation:
            raise ServiceError(violation.code, violation.message) from None
        changed = set()
        if annotate is not None:
            changed = annotate(call, before.side_of(check_user), now)
        if transition.call == before and not transition.effects and not changed:
            return call  # an input that no longer applies: nothing to record
        outbox = Outbox(now)
        _apply(call=call, before=before, transition=transition, profiles=profiles,
               outbox=outbox, now=now, record=record, reason_text=reason_text, changed=changed)
        outbox.flush(profiles)
        return call


def _intent(kind: InputKind, *, user, device_id: str, call_id: str, now: datetime | None,
            reason: str = "", payload: dict | None = None, milestone: Milestone | None = None,
            annotate=None, wait_first_frame: bool = True) -> CallSession:
    return _step_call(
        call_id=call_id, now=now, reason_text=reason, check_user=user.pk, annotate=annotate,
        inp=Input(kind, user_id=user.pk, device_id=device_id, milestone=milestone,
                  wait_first_frame=wait_first_frame),
        record=Record(kind.value, user.pk, device_id, payload or ({"reason": reason} if reason else {})))


def call_cancel(*, user, device_id: str, call_id: str, reason: str = "",
                now: datetime | None = None) -> CallSession:
    return _intent(InputKind.cancel, user=user, device_id=device_id, call_id=call_id, now=now,
                   reason=reason)


def call_reject(*, user, device_id: str, call_id: str, reason: str = "",
                now: datetime | None = None) -> CallSession:
    return _intent(InputKind.reject, user=user, device_id=device_id, call_id=call_id, now=now,
                   reason=reason)


def call_hangup(*, user, device_id: str, call_id: str, reason: str = "",
                now: datetime | None = None) -> CallSession:
    return _intent(InputKind.hangup, user=user, device_id=device_id, call_id=call_id, now=now,
                   reason=reason)


def call_accept(*, user, device_id: str, call_id: str, wait_first_frame: bool = True,
                first_remote_frame: bool = False, costs: dict[str, int] | None = None,
                now: datetime | None = None) -> dict:
    """The callee accepts on this device, optionally with its client-measured cost nodes.

    ``first_remote_frame``: the device already shows the caller's picture (it came while ringing,
    CallAPI's fast first frame). The accept then carries that milestone, as a ``media`` report
    would have, and saves the report's frame and transaction.
    """
    payload = _frame_wait(wait_first_frame)
    if first_remote_frame:
        payload["milestone"] = Milestone.first_remote_frame.value
    if costs:
        payload["costs"] = costs

    def annotate(call: CallSession, side: Side, moment: datetime) -> set[str]:
        changed = _merge_costs(call, side, costs)
        if first_remote_frame:
            changed |= _stamp_milestone(call, side, Milestone.first_remote_frame, moment)
        return changed

    call = _intent(InputKind.accept, user=user, device_id=device_id, call_id=call_id, now=now,
                   wait_first_frame=wait_first_frame, payload=payload, annotate=annotate,
                   milestone=Milestone.first_remote_frame if first_remote_frame else None)
    credentials = media.credentials_for(channel=call.channel, user_id=user.pk,
                                        now_ms=to_ms(now or timezone.now()))
    if credentials.expires_at_ms is not None:
        # The caller's token, issued at the call's start, is the first to expire.
        first_expiry = call.created_at + timedelta(seconds=_token_ttl_s())
        renew_at = first_expiry - timedelta(seconds=media.TOKEN_RENEW_BEFORE_S)
        transaction.on_commit(lambda: schedule_media_renewal(call.call_id, renew_at))
    return {"channel": call.channel, "media": credentials.media}


def _token_ttl_s() -> int:
    from django.conf import settings

    return settings.AGORA_TOKEN_TTL_S


def call_renew_media(*, call_id: str, now: datetime | None = None) -> bool:
    """Push fresh media credentials (``call.media``) to both sides of a live call and schedule
    the next renewal. Returns False when there is nothing to renew (call over, or no tokens)."""
    now = now or timezone.now()
    if not media.agora_enabled():
        return False
    with _atomic(), rows.pipelined(commit=True):
        profiles, call = lock_participants_and_call(call_id)
        if call.phase not in LIVE_PHASES:
            return False
        outbox = Outbox(now)
        expires_at_ms = None
        for side, user_id in ((Side.caller, call.caller_id), (Side.callee, call.callee_id)):
            credentials = media.credentials_for(channel=call.channel, user_id=user_id,
                                                now_ms=to_ms(now))
            expires_at_ms = credentials.expires_at_ms
            device = call.caller_device if side is Side.caller else call.callee_device
            outbox.add(user_id, {"name": "call.media", "call_id": call.call_id,
                                 "media": credentials.media,
                                 "expires_at_ms": credentials.expires_at_ms},
                       call_id=call.call_id, only_device=device)
        outbox.flush(profiles)
        CallEvent.objects.create(call=call, at=now, kind="media_renewed",
                                 payload={"expires_at_ms": expires_at_ms})
        renew_at = from_ms(expires_at_ms) - timedelta(seconds=media.TOKEN_RENEW_BEFORE_S)
        transaction.on_commit(lambda: schedule_media_renewal(call_id, renew_at))
    return True


def schedule_media_renewal(call_id: str, at: datetime) -> None:
    from calls.tasks import media_renewal_task

    media_renewal_task.apply_async(args=[call_id], eta=at)


def _merge_costs(call: CallSession, side: Side, costs: dict[str, int] | None) -> set[str]:
    """Add a side's client-measured cost nodes to the call (a later value of a node wins)."""
    if not costs:
        return set()
    merged = {**call.costs, side.value: {**call.costs.get(side.value, {}), **costs}}
    if merged == call.costs:
        return set()
    call.costs = merged
    return {"costs"}


def call_report_media(*, user, device_id: str, call_id: str, milestone: Milestone,
                      at_ms: int | None = None, code: str | None = None,
                      costs: dict[str, int] | None = None,
                      now: datetime | None = None) -> CallSession:
    """A device reports a media milestone, optionally with its client-measured cost nodes."""
    payload = {"milestone": milestone.value}
    if at_ms is not None:
        payload["at_ms"] = at_ms
    if code:
        payload["code"] = code
    if costs:
        payload["costs"] = costs

    def annotate(call: CallSession, side: Side, moment: datetime) -> set[str]:
        return _stamp_milestone(call, side, milestone, moment) | _merge_costs(call, side, costs)

    return _intent(InputKind.media, user=user, device_id=device_id, call_id=call_id, now=now,
                   milestone=milestone, payload=payload, annotate=annotate)


def _stamp_milestone(call: CallSession, side: Side, milestone: Milestone,
                     moment: datetime) -> set[str]:
    """Stamp a side's milestone on the call record (the first report counts)."""
    suffix = MILESTONE_FIELDS.get(milestone)
    name = f"{side.value}_{suffix}" if suffix else None
    if name and getattr(call, name) is None:
        setattr(call, name, moment)
        return {name}
    return set()


def call_timeout(*, call_id: str, now: datetime | None = None) -> CallSession:
    """The ring timer fired: end the call if it is still not connected at its deadline.

    Nearly every timer fires for a call that connected or ended long before; phases only move
    forward, so a call seen settled without a lock is settled for good and needs no transaction.
    """
    settled = (CallSession.objects.filter(call_id=call_id)
               .exclude(phase__in=(Phase.ringing.value, Phase.accepted.value)).first())
    if settled is not None:
        return settled
    return _step_call(call_id=call_id, now=now, inp=Input(InputKind.ring_timeout),
                      record=Record("ring_timeout"))


def call_mark_delivered(*, call_id: str, device_id: str, now: datetime | None = None) -> CallSession:
    """A callee device acknowledged the incoming call: the caller gets remoteUserRecvCall."""
    return _step_call(call_id=call_id, now=now, inp=Input(InputKind.delivered),
                      record=Record("delivered", device_id=device_id))


def call_end_by_server(*, call_id: str, staff_user=None, now: datetime | None = None) -> CallSession:
    return _step_call(call_id=call_id, now=now, inp=Input(InputKind.end_by_server),
                      record=Record("end_by_server", staff_user.pk if staff_user else None))


# A sweep reads the calls it ends in batches of this many.
SWEEP_BATCH = 500


def calls_sweep_overdue(*, now: datetime | None = None) -> int:
    """End every call still not connected at its ring deadline: the ring timer's slot task, and
    housekeeping's catch for a lost one. Each call in its own transaction. Returns the count."""
    now = now or timezone.now()
    ended, seen = 0, set()
    while True:
        overdue = [call_id for call_id in CallSession.objects.filter(
            phase__in=(Phase.ringing.value, Phase.accepted.value), deadline_at__lte=now,
        ).order_by("deadline_at").values_list("call_id", flat=True)[:SWEEP_BATCH]
            if call_id not in seen]
        if not overdue:
            return ended
        for call_id in overdue:
            seen.add(call_id)
            if call_timeout(call_id=call_id, now=now).phase == Phase.ended.value:
                ended += 1


# Replies to client frames are kept this long: the spec's idempotency window.
CLIENT_FRAME_RETENTION_S = 600
# Stored events older than this concern calls long over (replay covers 10 minutes).
USER_EVENT_RETENTION_S = 86_400


def records_prune(*, now: datetime | None = None) -> int:
    from calls.models import ClientFrame, UserEvent

    now = now or timezone.now()
    frames, _ = ClientFrame.objects.filter(
        created_at__lt=now - timedelta(seconds=CLIENT_FRAME_RETENTION_S)).delete()
    events, _ = UserEvent.objects.filter(
        created_at__lt=now - timedelta(seconds=USER_EVENT_RETENTION_S)).delete()
    return frames + events


def client_frame_once(*, user, frame_id: str, handle,
                      events_out: list[StoredEvent] | None = None) -> dict:
    """Answer a client frame exactly once per (user, id): ``handle()`` returns the reply data.

    ``events_out``, when given, receives the events the frame's transaction stored for ``user``
    once it has committed (nothing on an error or a repeated frame): the socket may send its own
    device's share with the reply instead of as frames of their own.

    The reply is stored in the transaction that made the frame's effects, so a frame re-sent
    (after a lost reply, on a new socket) gets the same reply and does nothing again. An error
    rolls the frame's transaction back whole; its reply is then stored on its own.

    Nothing is read first: almost every frame is new, and the unique (user, frame_id) key is the
    check. A repeated frame runs its handler again inside the transaction, fails to store its reply
    on that key, rolls back whole (effects, events and timers with it) and gets the stored reply.
    """
    from django.db import IntegrityError

    from calls.models import ClientFrame
    from calls.protocol import reply_error, reply_ok

    def stored_reply():
        return ClientFrame.objects.filter(user=user, frame_id=frame_id).values_list(
            "reply", flat=True).first()

    def store_reply(reply: dict) -> None:
        rows.insert_values(ClientFrame, CLIENT_FRAME_FIELDS,
                           [(user.pk, frame_id, reply, timezone.now())])

    try:
        try:
            _frame_scope.active = True
            with (transaction.atomic(), rows.pipelined(commit=True),
                  collected_events(user.pk) as made):
                reply = reply_ok(frame_id, handle())
                store_reply(reply)
            if events_out is not None:
                events_out.extend(made)
            return reply
        finally:
            _frame_scope.active = False
    except ServiceError as error:
        reply = reply_error(frame_id, error.code, error.message)
        try:
            store_reply(reply)
        except IntegrityError:
            return stored_reply() or reply
        return reply
    except IntegrityError:
        # The same frame was answered before (or by a concurrent attempt): ours rolled back.
        stored = stored_reply()
        if stored is None:
            raise
        return stored


# ---- media credentials and signaling --------------------------------------------------------


def _live_call_of(user, call_id: str) -> CallSession:
    call = CallSession.objects.filter(call_id=call_id).first()
    if call is None:
        raise ServiceError("not_found", f"no call {call_id}")
    if user.pk not in (call.caller_id, call.callee_id):
        raise ServiceError("forbidden", "you are not a participant of this call")
    if call.phase not in LIVE_PHASES:
        raise ServiceError("state_mismatch", "the call has ended")
    return call


def call_media_credentials(*, user, call_id: str, now: datetime | None = None) -> dict:
    now = now or timezone.now()
    call = _live_call_of(user, call_id)
    credentials = media.credentials_for(channel=call.channel, user_id=user.pk, now_ms=to_ms(now))
    return {"media": credentials.media}


def call_relay_signal(*, user, device_id: str, call_id: str, payload: dict,
                      to_device: str | None = None, now: datetime | None = None) -> None:
    """Relay a media-negotiation payload to the other participant's device(s), as an event."""
    now = now or timezone.now()
    call = _live_call_of(user, call_id)
    if user.pk == call.caller_id:
        peer_id, default_device = call.callee_id, call.callee_device
    else:
        peer_id, default_device = call.caller_id, call.caller_device
    target = to_device or default_device or ""
    frame = {"name": "call.signal", "call_id": call.call_id, "from_device": device_id,
             "payload": payload}
    with _atomic():
        profiles = lock_profiles([peer_id])
        outbox = Outbox(now)
        outbox.add(peer_id, frame, call_id=call.call_id, only_device=target)
        outbox.flush(profiles)


# ---- connection loss ------------------------------------------------------------------------


def call_peer_gone(*, call_id: str, user_id: int, now: datetime | None = None) -> CallSession:
    """Every device of ``user_id`` dropped during the call: the peer hears remoteReconnecting and
    the grace timer starts."""
    from django.conf import settings

    call = _step_side(call_id, user_id, InputKind.peer_disconnected, now, "peer_disconnected")
    if call.phase in LIVE_PHASES:
        deadline = (now or timezone.now()) + timedelta(seconds=settings.DUET_RECONNECT_GRACE_S)
        transaction.on_commit(lambda: schedule_connection_grace(call_id, user_id, deadline))
    return call


def call_peer_back(*, call_id: str, user_id: int, now: datetime | None = None) -> CallSession:
    """A device of a user who was away came back within the grace."""
    return _step_side(call_id, user_id, InputKind.peer_reconnected, now, "peer_reconnected")


def call_connection_lost(*, call_id: str, user_id: int, now: datetime | None = None) -> CallSession:
    """The grace of ``user_id`` ran out: the call ends (ignored if they came back)."""
    return _step_side(call_id, user_id, InputKind.peer_lost, now, "peer_lost")


def _step_side(call_id: str, user_id: int, kind: InputKind, now: datetime | None,
               record_kind: str):
    caller_id, callee_id = _participants(call_id)
    side = Side.caller if user_id == caller_id else Side.callee
    return _step_call(call_id=call_id, now=now, inp=Input(kind, side=side),
                      record=Record(record_kind, user_id))


def call_media_reset(*, user, device_id: str, now: datetime | None = None) -> CallSession | None:
    """A device of ``user`` came back without the media connections it had (a reloaded page says
    so in its ``hello``): the first remote frame it reported for the user's live call came through
    connections that are gone, so it no longer counts and its side turns connected on a frame of
    the new ones. A side already connected stays so. Returns the call (None without a live one).
    """
    call_id = (Profile.objects.filter(user_id=user.pk, active_call__isnull=False)
               .values_list("active_call__call_id", flat=True).first())
    if call_id is None:
        return None
    caller_id, _ = _participants(call_id)
    side = Side.caller if user.pk == caller_id else Side.callee
    # A device that chose not to wait for a first frame (its call or accept said so, and the
    # timeline keeps it) keeps that choice: there is no frame of its to forget.
    waived = CallEvent.objects.filter(
        call__call_id=call_id, actor_id=user.pk, device_id=device_id, kind__in=("dial", "accept"),
        payload__wait_first_frame=False).exists()
    return _step_call(call_id=call_id, now=now,
                      inp=Input(InputKind.media_reset, side=side, device_id=device_id,
                                wait_first_frame=not waived),
                      record=Record("media_reset", user.pk, device_id))


def schedule_connection_grace(call_id: str, user_id: int, deadline: datetime) -> None:
    from calls.tasks import connection_grace_task

    connection_grace_task.apply_async(args=[call_id, user_id], eta=deadline)
