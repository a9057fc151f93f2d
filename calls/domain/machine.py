"""The 1v1 call state machine: pure, table-driven, no I/O.

Theory of operation
-------------------
The server owns every call. A call has two participants, the caller and the callee, and one
server phase:

    ringing --accept--> accepted --both sides have a first frame--> connected
       |                   |                                           |
       +--cancel, reject, timeout, recall, connection lost, server--> ended <--hangup, ...--+

Each participant also has a CallAPI state for the call (prepared, calling, connecting, connected),
which is what clients see. A side is *connected* once the call is accepted and that side's active
device reported ``first_remote_frame`` (CallAPI: "connected = accepted + first frame"); the record
is ``connected`` when both sides are. The ring deadline runs from the start until then.

The machine takes a :class:`CallSnapshot` and an :class:`Input` and returns a :class:`Transition`:
the new snapshot plus the effects to perform (notifications to send, milestones to stamp, timers
to arm or clear). It never raises for a valid snapshot except with :class:`RuleViolation`, whose
``code`` is a wire error code (``state_mismatch``, ``forbidden``, ``self_call``).

Rules kept here and nowhere else:
- user intents that the table does not allow in the current phase are ``state_mismatch``; intents
  by the wrong participant are ``forbidden``;
- server inputs (ring timeout, delivery receipt, connection loss and return, media reset) are
  idempotent: when they no longer apply (fired late, fired twice) they change nothing and are not
  errors;
- a first remote frame counts for the device that saw it until that device says it lost its media
  connections (``media_reset``: a reloaded page), unless its side is connected already;
- after ``accept`` only the accepting callee device hears about the call; the caller's devices all
  follow it;
- dialing decides busy, offline, recall, glare and "already in a call" (:func:`decide_dial`).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace

from .codes import CallEvent, CallState, StateReason

__all__ = [
    "Audience", "CallSnapshot", "CallType", "DialDecision", "DialOutcome", "EndReason", "Input",
    "InputKind", "Milestone", "Phase", "RuleViolation", "SendEvent", "SendState", "Side",
    "Stamp", "StartRingTimer", "StopRingTimer", "Transition", "decide_dial", "new_call", "step",
]


class Phase(str, enum.Enum):
    ringing = "ringing"
    accepted = "accepted"
    connected = "connected"
    ended = "ended"

    @property
    def is_live(self) -> bool:
        return self is not Phase.ended


class CallType(str, enum.Enum):
    video = "video"
    audio = "audio"


class Side(str, enum.Enum):
    caller = "caller"
    callee = "callee"

    @property
    def peer(self) -> Side:
        return Side.callee if self is Side.caller else Side.caller


class EndReason(str, enum.Enum):
    """Why a call record ended, neutral of perspective (the admin filters on it)."""

    cancelled = "cancelled"
    rejected = "rejected"
    hangup = "hangup"
    timeout = "timeout"
    busy = "busy"
    offline = "offline"
    recalled = "recalled"
    connection_lost = "connection_lost"
    ended_by_server = "ended_by_server"


class Milestone(str, enum.Enum):
    """Media milestones a device reports with the ``media`` frame."""

    joined = "joined"
    remote_joined = "remote_joined"
    local_frame = "local_frame"
    published = "published"
    first_remote_frame = "first_remote_frame"
    left = "left"
    remote_left = "remote_left"
    error = "error"


class InputKind(str, enum.Enum):
    # intents from a participant's device
    cancel = "cancel"
    accept = "accept"
    reject = "reject"
    hangup = "hangup"
    media = "media"
    # server-originated
    delivered = "delivered"  # a callee device acknowledged the incoming call
    ring_timeout = "ring_timeout"
    recalled = "recalled"  # the caller dialed the same callee again while this call rang
    peer_disconnected = "peer_disconnected"  # every device of `side` dropped; grace starts
    peer_reconnected = "peer_reconnected"  # a device of `side` came back within the grace
    peer_lost = "peer_lost"  # the grace of `side` expired
    end_by_server = "end_by_server"
    # a device of `side` came back without the media connections it had (a reloaded page): its
    # first remote frame no longer counts
    media_reset = "media_reset"


INTENTS = frozenset({InputKind.cancel, InputKind.accept, InputKind.reject, InputKind.hangup,
                     InputKind.media})
# Which participant may send an intent (None: either).
INTENT_SIDE: dict[InputKind, Side | None] = {
    InputKind.cancel: Side.caller,
    InputKind.accept: Side.callee,
    InputKind.reject: Side.callee,
    InputKind.hangup: None,
    InputKind.media: None,
}


class Audience(str, enum.Enum):
    """Which devices of a side receive a notification."""

    all = "all"
    active = "active"  # the callee device that accepted (all devices before accept)
    others = "others"  # every callee device but the one that accepted


@dataclass(frozen=True)
class CallSnapshot:
    """What the machine needs to know about a call; the service maps it to and from the record."""

    phase: Phase
    call_type: CallType
    caller_id: int
    callee_id: int
    deadline_ms: int
    caller_device: str | None = None
    callee_device: str | None = None  # the device that accepted
    delivered: bool = False
    caller_has_frame: bool = False
    callee_frame_devices: frozenset[str] = frozenset()
    caller_connected: bool = False
    callee_connected: bool = False
    caller_away: bool = False  # every device of the caller dropped; the grace runs
    callee_away: bool = False
    end_reason: EndReason | None = None
    ended_by: Side | None = None

    def is_away(self, side: Side) -> bool:
        return self.caller_away if side is Side.caller else self.callee_away

    def side_of(self, user_id: int | None) -> Side | None:
        if user_id == self.caller_id:
            return Side.caller
        if user_id == self.callee_id:
            return Side.callee
        return None

    def user_of(self, side: Side) -> int:
        return self.caller_id if side is Side.caller else self.callee_id


@dataclass(frozen=True)
class Input:
    kind: InputKind
    user_id: int | None = None  # the acting user, for intents
    device_id: str | None = None
    side: Side | None = None  # the side concerned, for peer_* inputs
    milestone: Milestone | None = None  # media; accept: first_remote_frame if it came first
    now_ms: int = 0
    # accept: False when the answering device does not wait for a first remote frame to connect
    # (CallAPI's firstFrameWaittingDisabled); media_reset: False when the device chose so on its
    # call or accept, so that the choice outlives the frame that is forgotten
    wait_first_frame: bool = True


# ---- effects -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SendState:
    """Send ``call.state`` (and ``call.event`` when ``event`` is set) to one side."""

    side: Side
    state: CallState
    reason: StateReason
    event: CallEvent | None = None
    audience: Audience = Audience.all


@dataclass(frozen=True)
class SendEvent:
    """Send a ``call.event`` with no state change to one side."""

    side: Side
    event: CallEvent
    audience: Audience = Audience.all


@dataclass(frozen=True)
class Stamp:
    """Record the time of a milestone on the call (the service maps names to fields)."""

    name: str


@dataclass(frozen=True)
class StartRingTimer:
    deadline_ms: int


@dataclass(frozen=True)
class StopRingTimer:
    pass


Effect = SendState | SendEvent | Stamp | StartRingTimer | StopRingTimer


@dataclass(frozen=True)
class Transition:
    call: CallSnapshot
    effects: tuple[Effect, ...] = ()

    @property
    def changed(self) -> bool:
        return bool(self.effects)


class RuleViolation(Exception):
    """An input that the rules do not allow. ``code`` is the wire error code."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


# ---- the table -----------------------------------------------------------------------------

# A notification in a rule, relative to the acting side: ("actor" | "peer" | "caller" | "callee").
@dataclass(frozen=True)
class Note:
    to: str
    state: CallState | None
    reason: StateReason | None
    event: CallEvent | None


@dataclass(frozen=True)
class Rule:
    to: Phase | None  # None: the phase does not change
    end: EndReason | None = None
    notes: tuple[Note, ...] = ()
    stamps: tuple[str, ...] = ()
    # reasons with which each side turns connected if this input completes its condition
    connect_reasons: tuple[tuple[str, StateReason], ...] = ()
    ignore: bool = False  # a server input that no longer applies: no change, no error


P = CallState.prepared
S = StateReason
E = CallEvent
IGNORE = Rule(to=None, ignore=True)

_TIMEOUT = Rule(
    to=Phase.ended, end=EndReason.timeout, stamps=("ended",),
    notes=(Note("caller", P, S.callingTimeout, E.callingTimeout),
           Note("callee", P, S.remoteCallingTimeout, E.remoteCallingTimeout)))
_HANGUP = Rule(
    to=Phase.ended, end=EndReason.hangup, stamps=("ended",),
    notes=(Note("actor", P, S.localHangup, E.localHangup),
           Note("peer", P, S.remoteHangup, E.remoteHangup)))
_LOST = Rule(
    to=Phase.ended, end=EndReason.connection_lost, stamps=("ended",),
    notes=(Note("peer", P, S.remoteConnectionLost, None),
           Note("actor", P, S.rtmLost, None)))
_DISCONNECTED = Rule(to=None, notes=(Note("peer", None, None, E.remoteReconnecting),))
_RECONNECTED = Rule(to=None, notes=(Note("peer", None, None, E.remoteReconnected),))
_BY_SERVER = Rule(
    to=Phase.ended, end=EndReason.ended_by_server, stamps=("ended",),
    notes=(Note("caller", P, S.endedByServer, None), Note("callee", P, S.endedByServer, None)))
_MEDIA = Rule(to=None, connect_reasons=(("actor", S.recvRemoteFirstFrame),))
# No notification: the side's state does not change, it waits for the frame of its new connection.
_MEDIA_RESET = Rule(to=None)

_LIVE_COMMON: dict[InputKind, Rule] = {
    InputKind.media: _MEDIA,
    InputKind.peer_disconnected: _DISCONNECTED,
    InputKind.peer_reconnected: _RECONNECTED,
    InputKind.peer_lost: _LOST,
    InputKind.end_by_server: _BY_SERVER,
}

TABLE: dict[Phase, dict[InputKind, Rule]] = {
    Phase.ringing: {
        **_LIVE_COMMON,
        InputKind.cancel: Rule(
            to=Phase.ended, end=EndReason.cancelled, stamps=("ended",),
            notes=(Note("caller", P, S.localCancelled, E.localCancelled),
                   Note("callee", P, S.remoteCancelled, E.remoteCancelled))),
        InputKind.reject: Rule(
            to=Phase.ended, end=EndReason.rejected, stamps=("ended",),
            notes=(Note("callee", P, S.localRejected, E.localRejected),
                   Note("caller", P, S.remoteRejected, E.remoteRejected))),
        InputKind.accept: Rule(
            to=Phase.accepted, stamps=("accepted",),
            notes=(Note("callee", CallState.connecting, S.localAccepted, E.localAccepted),
                   Note("caller", CallState.connecting, S.remoteAccepted, E.remoteAccepted)),
            connect_reasons=(("callee", S.localAccepted), ("caller", S.remoteAccepted))),
        InputKind.ring_timeout: _TIMEOUT,
        InputKind.delivered: Rule(to=None, stamps=("delivered",),
                                  notes=(Note("caller", None, None, E.remoteUserRecvCall),)),
        InputKind.recalled: Rule(
            to=Phase.ended, end=EndReason.recalled, stamps=("ended",),
            notes=(Note("caller", P, S.cancelByCallerRecall, None),
                   Note("callee", P, S.cancelByCallerRecall, None))),
        InputKind.media_reset: _MEDIA_RESET,
    },
    Phase.accepted: {
        **_LIVE_COMMON,
        InputKind.hangup: _HANGUP,
        InputKind.ring_timeout: _TIMEOUT,
        InputKind.delivered: IGNORE,
        InputKind.recalled: IGNORE,
        InputKind.media_reset: _MEDIA_RESET,
    },
    Phase.connected: {
        **_LIVE_COMMON,
        InputKind.hangup: _HANGUP,
        InputKind.ring_timeout: IGNORE,
        InputKind.delivered: IGNORE,
        InputKind.recalled: IGNORE,
        InputKind.media_reset: IGNORE,  # connected stays connected (CallAPI never goes back)
    },
    Phase.ended: {
        InputKind.ring_timeout: IGNORE,
        InputKind.delivered: IGNORE,
        InputKind.recalled: IGNORE,
        InputKind.peer_disconnected: IGNORE,
        InputKind.peer_reconnected: IGNORE,
        InputKind.peer_lost: IGNORE,
        InputKind.media_reset: IGNORE,
    },
}

# Connection-loss inputs apply only when the side is (peer_reconnected, peer_lost) or is not yet
# (peer_disconnected) away: several devices or nodes may report the same loss, and a grace timer
# may fire after the side came back. Value: the away flag the input requires.
AWAY_GUARDS = {
    InputKind.peer_disconnected: False,
    InputKind.peer_reconnected: True,
    InputKind.peer_lost: True,
}

# Milestones still worth recording once a call has ended (a device leaving after the hang-up).
LATE_MILESTONES = frozenset({Milestone.left, Milestone.remote_left, Milestone.error})


# ---- stepping ------------------------------------------------------------------------------


def step(call: CallSnapshot, inp: Input) -> Transition:
    """Apply one input to a call. Raises :class:`RuleViolation` for a disallowed intent."""
    actor = _actor_side(call, inp)
    if inp.kind is InputKind.media and call.phase is Phase.ended:
        if inp.milestone in LATE_MILESTONES:
            return Transition(call)
        raise RuleViolation("state_mismatch", f"the call has ended; '{inp.milestone}' is too late")
    rule = TABLE[call.phase].get(inp.kind)
    if rule is None:
        raise RuleViolation("state_mismatch",
                            f"cannot {inp.kind.value} a call that is {call.phase.value}")
    if rule.ignore:
        return Transition(call)
    if inp.kind is InputKind.ring_timeout and inp.now_ms < call.deadline_ms:
        return Transition(call, (StartRingTimer(call.deadline_ms),))  # fired early: re-arm
    if inp.kind is InputKind.delivered and call.delivered:
        return Transition(call)
    if inp.kind in AWAY_GUARDS and call.is_away(actor) is not AWAY_GUARDS[inp.kind]:
        return Transition(call)  # already away / already back / came back before the grace ended
    if inp.kind is InputKind.media:
        call = _record_frame(call, actor, inp)
    if inp.kind is InputKind.media_reset:
        call = _forget_frame(call, actor, inp)
    return _apply(call, rule, actor, inp)


def _actor_side(call: CallSnapshot, inp: Input) -> Side | None:
    if inp.kind in INTENTS:
        actor = call.side_of(inp.user_id)
        if actor is None:
            raise RuleViolation("forbidden", "you are not a participant of this call")
        allowed = INTENT_SIDE[inp.kind]
        if allowed is not None and allowed is not actor:
            raise RuleViolation("forbidden", f"the {actor.value} cannot {inp.kind.value} a call")
        if inp.kind is InputKind.media and inp.milestone is None:
            raise RuleViolation("invalid_message", "media needs a milestone")
        return actor
    if inp.kind in (InputKind.peer_disconnected, InputKind.peer_reconnected, InputKind.peer_lost,
                    InputKind.media_reset):
        if inp.side is None:
            raise ValueError(f"{inp.kind.value} needs the side concerned")
        return inp.side
    return None


def _record_frame(call: CallSnapshot, actor: Side, inp: Input) -> CallSnapshot:
    """Note a first remote frame from the device that counts for its side."""
    if inp.milestone is not Milestone.first_remote_frame:
        return call
    if actor is Side.caller:
        if call.caller_device is None or inp.device_id == call.caller_device:
            return replace(call, caller_has_frame=True)
        return call
    if call.callee_device is not None and inp.device_id != call.callee_device:
        return call  # a device that did not answer: its frames do not count
    return replace(call, callee_frame_devices=call.callee_frame_devices | {inp.device_id or ""})


def _forget_frame(call: CallSnapshot, side: Side, inp: Input) -> CallSnapshot:
    """Forget the first remote frame of a device that lost its media connections, unless its side
    is already connected (its frame did its work) or the device chose not to wait for one."""
    if not inp.wait_first_frame:
        return call
    if side is Side.caller:
        if call.caller_connected or (call.caller_device is not None
                                     and inp.device_id != call.caller_device):
            return call
        return replace(call, caller_has_frame=False)
    if call.callee_connected:
        return call
    return replace(call, callee_frame_devices=call.callee_frame_devices - {inp.device_id or ""})


def _resolve(to: str, actor: Side | None) -> Side:
    if to in ("caller", "callee"):
        return Side(to)
    if actor is None:
        raise ValueError(f"a rule addressing '{to}' needs an acting side")
    return actor if to == "actor" else actor.peer


def _apply(call: CallSnapshot, rule: Rule, actor: Side | None, inp: Input) -> Transition:
    effects: list[Effect] = []
    before = call
    if inp.kind is InputKind.accept:
        if not call.delivered:  # an answer proves the delivery
            call = replace(call, delivered=True)
            effects += [Stamp("delivered"), SendEvent(Side.caller, E.remoteUserRecvCall)]
        call = replace(call, callee_device=inp.device_id)
        # a device that does not wait for a frame, or whose first remote frame came while it
        # rang (reported with the accept: one frame and one transaction less), has it
        if not inp.wait_first_frame or inp.milestone is Milestone.first_remote_frame:
            call = replace(call, callee_frame_devices=call.callee_frame_devices
                           | {inp.device_id or ""})
    effects += [Stamp(name) for name in rule.stamps]
    if "delivered" in rule.stamps:
        call = replace(call, delivered=True)
    if inp.kind is InputKind.accept:
        effects += _accept_notes(rule)
    else:
        for note in rule.notes:
            side = _resolve(note.to, actor)
            if note.state is None:
                effects.append(SendEvent(side, note.event, _audience(call, side)))
            else:
                effects.append(SendState(side, note.state, note.reason, note.event,
                                         _audience(call, side)))
    if inp.kind in AWAY_GUARDS:
        call = replace(call, **{f"{actor.value}_away": inp.kind is InputKind.peer_disconnected})
    if rule.to is not None:
        call = replace(call, phase=rule.to)
    if rule.end is not None:
        ended_by = actor if rule.end in (EndReason.cancelled, EndReason.rejected,
                                         EndReason.hangup) else None
        call = replace(call, end_reason=rule.end, ended_by=ended_by)
        if before.phase is not Phase.connected:
            effects.append(StopRingTimer())
    call, connect_effects = _settle_connected(call, rule, actor)
    effects += connect_effects
    if inp.kind is InputKind.media and not effects and call == before:
        return Transition(call)
    return Transition(call, tuple(effects))


def _accept_notes(rule: Rule) -> list[Effect]:
    """Accept: the answering device connects, the callee's other devices are told, the caller follows."""
    callee_note, caller_note = rule.notes
    return [
        SendState(Side.callee, callee_note.state, callee_note.reason, callee_note.event,
                  Audience.active),
        SendState(Side.callee, P, S.answeredElsewhere, E.answeredElsewhere, Audience.others),
        SendState(Side.caller, caller_note.state, caller_note.reason, caller_note.event,
                  Audience.all),
    ]


def _audience(call: CallSnapshot, side: Side) -> Audience:
    if side is Side.callee and call.callee_device is not None:
        return Audience.active
    return Audience.all


def _side_ready(call: CallSnapshot, side: Side) -> bool:
    if call.phase not in (Phase.accepted, Phase.connected):
        return False
    if side is Side.caller:
        return call.caller_has_frame
    return call.callee_device is not None and call.callee_device in call.callee_frame_devices


def _settle_connected(call: CallSnapshot, rule: Rule, actor: Side | None
                      ) -> tuple[CallSnapshot, list[Effect]]:
    """Turn each side connected when accepted + its first frame holds; the record when both do."""
    if call.phase is not Phase.accepted:
        return call, []
    effects: list[Effect] = []
    reasons = {_resolve(to, actor): reason for to, reason in rule.connect_reasons}
    for side in (Side.callee, Side.caller):
        already = call.caller_connected if side is Side.caller else call.callee_connected
        if already or not _side_ready(call, side) or side not in reasons:
            continue
        call = replace(call, **{f"{side.value}_connected": True})
        effects += [Stamp(f"{side.value}_connected"),
                    SendState(side, CallState.connected, reasons[side], None,
                              _audience(call, side))]
    if call.caller_connected and call.callee_connected:
        call = replace(call, phase=Phase.connected)
        effects += [Stamp("connected"), StopRingTimer()]
    return call, effects


# ---- dialing -------------------------------------------------------------------------------


class DialOutcome(str, enum.Enum):
    ring = "ring"  # a new call rings on every callee device
    busy = "busy"  # the callee is in another call: the new call ends at once
    offline = "offline"  # the callee has no connected device: the new call ends at once
    recall = "recall"  # the caller's ringing call to the same callee is replaced
    glare = "glare"  # the callee is ringing the caller: that call is accepted instead


@dataclass(frozen=True)
class DialDecision:
    outcome: DialOutcome
    # ring/busy/offline/recall: the new call and what creating it does
    created: Transition | None = None
    # recall: the replaced call's transition; glare: the existing call's accept
    existing: Transition | None = None


_CALL_REASONS = {
    CallType.video: (S.localVideoCall, E.localVideoCall, S.remoteVideoCall, E.remoteVideoCall),
    CallType.audio: (S.localAudioCall, E.localAudioCall, S.remoteAudioCall, E.remoteAudioCall),
}


def new_call(*, caller_id: int, callee_id: int, call_type: CallType, now_ms: int,
             timeout_ms: int, caller_device: str | None, wait_first_frame: bool = True
             ) -> CallSnapshot:
    return CallSnapshot(phase=Phase.ringing, call_type=call_type, caller_id=caller_id,
                        callee_id=callee_id, deadline_ms=now_ms + timeout_ms,
                        caller_device=caller_device, caller_has_frame=not wait_first_frame)


def decide_dial(*, caller_id: int, callee_id: int, call_type: CallType, now_ms: int,
                timeout_ms: int, caller_device: str | None, caller_active: CallSnapshot | None,
                callee_active: CallSnapshot | None, callee_online: bool,
                wait_first_frame: bool = True) -> DialDecision:
    """Decide what a ``call`` intent does, given both users' active calls and the callee's presence.

    ``caller_active``/``callee_active`` are the live calls each user is in (None: free).
    ``wait_first_frame`` False: the calling device connects without waiting for a first remote
    frame (on glare, it answers the crossing call that way). Raises :class:`RuleViolation` when the
    caller may not call at all.
    """
    if caller_id == callee_id:
        raise RuleViolation("self_call", "you cannot call yourself")
    fresh = new_call(caller_id=caller_id, callee_id=callee_id, call_type=call_type,
                     now_ms=now_ms, timeout_ms=timeout_ms, caller_device=caller_device,
                     wait_first_frame=wait_first_frame)
    if caller_active is not None:
        same_pair = {caller_active.caller_id, caller_active.callee_id} == {caller_id, callee_id}
        if caller_active.phase is Phase.ringing and same_pair:
            if caller_active.caller_id == caller_id:
                replaced = step(caller_active, Input(InputKind.recalled, now_ms=now_ms))
                return DialDecision(DialOutcome.recall, created=_ring(fresh), existing=replaced)
            accepted = step(caller_active, Input(InputKind.accept, user_id=caller_id,
                                                 device_id=caller_device, now_ms=now_ms,
                                                 wait_first_frame=wait_first_frame))
            return DialDecision(DialOutcome.glare, existing=accepted)
        raise RuleViolation("state_mismatch", "you are already in a call")
    if callee_active is not None:
        return DialDecision(DialOutcome.busy, created=_end_at_once(
            fresh, EndReason.busy, S.remoteCallBusy, E.remoteCallBusy))
    if not callee_online:
        return DialDecision(DialOutcome.offline, created=_end_at_once(
            fresh, EndReason.offline, S.remoteOffline, E.remoteOffline))
    return DialDecision(DialOutcome.ring, created=_ring(fresh))


def _ring(call: CallSnapshot) -> Transition:
    local_reason, local_event, remote_reason, remote_event = _CALL_REASONS[call.call_type]
    return Transition(call, (
        SendState(Side.caller, CallState.calling, local_reason, local_event),
        SendState(Side.callee, CallState.calling, remote_reason, remote_event),
        StartRingTimer(call.deadline_ms),
    ))


def _end_at_once(call: CallSnapshot, end: EndReason, reason: StateReason,
                 event: CallEvent) -> Transition:
    ended = replace(call, phase=Phase.ended, end_reason=end)
    return Transition(ended, (Stamp("ended"), SendState(Side.caller, P, reason, event)))
