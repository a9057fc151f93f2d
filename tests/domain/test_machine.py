"""The pure call machine, walked with no I/O (no Django: plain pytest functions).

EXPECTED is the machine's contract written out: for every phase, every input kind and every
acting side (caller, callee, or none: a stranger for intents, no side for server inputs) the
exact new snapshot and effects, or the exact refusal. The completeness tests at the end make a
new phase or input kind without a row here fail the suite; a changed table entry fails its row.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace

import pytest

from calls.domain.codes import CallEvent as E
from calls.domain.codes import CallState
from calls.domain.codes import StateReason as R
from calls.domain.machine import (
    Audience, CallSnapshot, CallType, DialOutcome, EndReason, Input, InputKind, Milestone, Phase,
    RuleViolation, SendEvent, SendState, Side, Stamp, StartRingTimer, StopRingTimer, Transition,
    decide_dial, new_call, step,
)

NOW_MS = 1_700_000_000_000
TIMEOUT_MS = 15_000
DEADLINE_MS = NOW_MS + TIMEOUT_MS
CALLER_ID, CALLEE_ID, STRANGER_ID, THIRD_ID = 1, 2, 3, 4
CALLER_DEVICE, CALLEE_DEVICE, OTHER_CALLEE_DEVICE = "alice-phone", "bob-phone", "bob-tablet"
OTHER_CALLER_DEVICE, STRANGER_DEVICE = "alice-laptop", "carol-phone"

CALLER, CALLEE = Side.caller, Side.callee
SIDES = (CALLER, CALLEE, None)
ALL, ACTIVE, OTHERS = Audience.all, Audience.active, Audience.others
P = CallState.prepared

RINGING = CallSnapshot(phase=Phase.ringing, call_type=CallType.video, caller_id=CALLER_ID,
                       callee_id=CALLEE_ID, deadline_ms=DEADLINE_MS, caller_device=CALLER_DEVICE)
ACCEPTED = replace(RINGING, phase=Phase.accepted, callee_device=CALLEE_DEVICE, delivered=True)
CONNECTED = replace(ACCEPTED, phase=Phase.connected, caller_has_frame=True,
                    callee_frame_devices=frozenset({CALLEE_DEVICE}), caller_connected=True,
                    callee_connected=True)
ENDED = replace(CONNECTED, phase=Phase.ended, end_reason=EndReason.hangup, ended_by=CALLER)
SNAPSHOTS = {Phase.ringing: RINGING, Phase.accepted: ACCEPTED, Phase.connected: CONNECTED,
             Phase.ended: ENDED}

INTENT_KINDS = {InputKind.cancel, InputKind.accept, InputKind.reject, InputKind.hangup,
                InputKind.media}
PEER_KINDS = {InputKind.peer_disconnected, InputKind.peer_reconnected, InputKind.peer_lost}
USER_OF = {CALLER: CALLER_ID, CALLEE: CALLEE_ID, None: STRANGER_ID}
DEVICE_OF = {CALLER: CALLER_DEVICE, CALLEE: CALLEE_DEVICE, None: STRANGER_DEVICE}


def table_input(kind: InputKind, side: Side | None) -> Input:
    """The input of one table row: intents by that side's device (media: its first remote frame),
    peer inputs about that side, a media reset by that side's device, server inputs carrying the
    side (which they ignore); the ring timer fires at the deadline."""
    if kind in INTENT_KINDS:
        milestone = Milestone.first_remote_frame if kind is InputKind.media else None
        return Input(kind, user_id=USER_OF[side], device_id=DEVICE_OF[side], milestone=milestone,
                     now_ms=NOW_MS)
    if kind is InputKind.media_reset:
        return Input(kind, side=side, device_id=DEVICE_OF[side], now_ms=NOW_MS)
    now_ms = DEADLINE_MS if kind is InputKind.ring_timeout else NOW_MS
    return Input(kind, side=side, now_ms=now_ms)


# ---- expectations ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Applies:
    """The input is accepted: these snapshot fields change, and these are the effects, in order."""

    changes: dict = field(default_factory=dict)
    effects: tuple = ()
    given: dict = field(default_factory=dict)  # set on the phase's snapshot before the input


@dataclass(frozen=True)
class Refused:
    code: str


@dataclass(frozen=True)
class Misuse:
    """A server input built wrongly by the caller of the machine: a programming error."""

    error: type[Exception]


UNCHANGED = Applies()
FORBIDDEN = Refused("forbidden")
MISMATCH = Refused("state_mismatch")
NO_SIDE = Misuse(ValueError)


def away(side: Side) -> dict:
    return {f"{side.value}_away": True}


def ended(end_reason: EndReason, ended_by: Side | None = None, **more) -> dict:
    return {"phase": Phase.ended, "end_reason": end_reason, "ended_by": ended_by, **more}


def any_side(phase: Phase, kind: InputKind, expectation) -> dict:
    """A server input that names no side: the same result whatever side it carries."""
    return {(phase, kind, side): expectation for side in SIDES}


K = InputKind
RG, AC, CO, EN = Phase.ringing, Phase.accepted, Phase.connected, Phase.ended

EXPECTED = {
    # ---- ringing: nobody answered yet, every callee device hears about the call (ALL)
    (RG, K.cancel, CALLER): Applies(ended(EndReason.cancelled, CALLER), (
        Stamp("ended"),
        SendState(CALLER, P, R.localCancelled, E.localCancelled, ALL),
        SendState(CALLEE, P, R.remoteCancelled, E.remoteCancelled, ALL),
        StopRingTimer())),
    (RG, K.cancel, CALLEE): FORBIDDEN,
    (RG, K.cancel, None): FORBIDDEN,
    (RG, K.accept, CALLER): FORBIDDEN,
    (RG, K.accept, CALLEE): Applies(
        {"phase": Phase.accepted, "delivered": True, "callee_device": CALLEE_DEVICE}, (
            Stamp("delivered"),
            SendEvent(CALLER, E.remoteUserRecvCall, ALL),
            Stamp("accepted"),
            SendState(CALLEE, CallState.connecting, R.localAccepted, E.localAccepted, ACTIVE),
            SendState(CALLEE, P, R.answeredElsewhere, E.answeredElsewhere, OTHERS),
            SendState(CALLER, CallState.connecting, R.remoteAccepted, E.remoteAccepted, ALL))),
    (RG, K.accept, None): FORBIDDEN,
    (RG, K.reject, CALLER): FORBIDDEN,
    (RG, K.reject, CALLEE): Applies(ended(EndReason.rejected, CALLEE), (
        Stamp("ended"),
        SendState(CALLEE, P, R.localRejected, E.localRejected, ALL),
        SendState(CALLER, P, R.remoteRejected, E.remoteRejected, ALL),
        StopRingTimer())),
    (RG, K.reject, None): FORBIDDEN,
    (RG, K.hangup, CALLER): MISMATCH,
    (RG, K.hangup, CALLEE): MISMATCH,
    (RG, K.hangup, None): FORBIDDEN,
    (RG, K.media, CALLER): Applies({"caller_has_frame": True}),
    (RG, K.media, CALLEE): Applies({"callee_frame_devices": frozenset({CALLEE_DEVICE})}),
    (RG, K.media, None): FORBIDDEN,
    **any_side(RG, K.delivered, Applies({"delivered": True}, (
        Stamp("delivered"),
        SendEvent(CALLER, E.remoteUserRecvCall, ALL)))),
    **any_side(RG, K.ring_timeout, Applies(ended(EndReason.timeout), (
        Stamp("ended"),
        SendState(CALLER, P, R.callingTimeout, E.callingTimeout, ALL),
        SendState(CALLEE, P, R.remoteCallingTimeout, E.remoteCallingTimeout, ALL),
        StopRingTimer()))),
    **any_side(RG, K.recalled, Applies(ended(EndReason.recalled), (
        Stamp("ended"),
        SendState(CALLER, P, R.cancelByCallerRecall, None, ALL),
        SendState(CALLEE, P, R.cancelByCallerRecall, None, ALL),
        StopRingTimer()))),
    (RG, K.peer_disconnected, CALLER): Applies(
        {"caller_away": True}, (SendEvent(CALLEE, E.remoteReconnecting, ALL),)),
    (RG, K.peer_disconnected, CALLEE): Applies(
        {"callee_away": True}, (SendEvent(CALLER, E.remoteReconnecting, ALL),)),
    (RG, K.peer_disconnected, None): NO_SIDE,
    (RG, K.peer_reconnected, CALLER): Applies(
        {"caller_away": False}, (SendEvent(CALLEE, E.remoteReconnected, ALL),),
        given=away(CALLER)),
    (RG, K.peer_reconnected, CALLEE): Applies(
        {"callee_away": False}, (SendEvent(CALLER, E.remoteReconnected, ALL),),
        given=away(CALLEE)),
    (RG, K.peer_reconnected, None): NO_SIDE,
    (RG, K.peer_lost, CALLER): Applies(ended(EndReason.connection_lost, caller_away=False), (
        Stamp("ended"),
        SendState(CALLEE, P, R.remoteConnectionLost, None, ALL),
        SendState(CALLER, P, R.rtmLost, None, ALL),
        StopRingTimer()), given=away(CALLER)),
    (RG, K.peer_lost, CALLEE): Applies(ended(EndReason.connection_lost, callee_away=False), (
        Stamp("ended"),
        SendState(CALLER, P, R.remoteConnectionLost, None, ALL),
        SendState(CALLEE, P, R.rtmLost, None, ALL),
        StopRingTimer()), given=away(CALLEE)),
    (RG, K.peer_lost, None): NO_SIDE,
    **any_side(RG, K.end_by_server, Applies(ended(EndReason.ended_by_server), (
        Stamp("ended"),
        SendState(CALLER, P, R.endedByServer, None, ALL),
        SendState(CALLEE, P, R.endedByServer, None, ALL),
        StopRingTimer()))),
    # a reloaded page's frame is forgotten, silently: its side waits for its new connection's
    (RG, K.media_reset, CALLER): Applies({"caller_has_frame": False},
                                         given={"caller_has_frame": True}),
    (RG, K.media_reset, CALLEE): Applies(
        {"callee_frame_devices": frozenset({OTHER_CALLEE_DEVICE})},
        given={"callee_frame_devices": frozenset({CALLEE_DEVICE, OTHER_CALLEE_DEVICE})}),
    (RG, K.media_reset, None): NO_SIDE,

    # ---- accepted: only the answering callee device hears about the call (ACTIVE)
    (AC, K.cancel, CALLER): MISMATCH,
    (AC, K.cancel, CALLEE): FORBIDDEN,
    (AC, K.cancel, None): FORBIDDEN,
    (AC, K.accept, CALLER): FORBIDDEN,
    (AC, K.accept, CALLEE): MISMATCH,
    (AC, K.accept, None): FORBIDDEN,
    (AC, K.reject, CALLER): FORBIDDEN,
    (AC, K.reject, CALLEE): MISMATCH,
    (AC, K.reject, None): FORBIDDEN,
    (AC, K.hangup, CALLER): Applies(ended(EndReason.hangup, CALLER), (
        Stamp("ended"),
        SendState(CALLER, P, R.localHangup, E.localHangup, ALL),
        SendState(CALLEE, P, R.remoteHangup, E.remoteHangup, ACTIVE),
        StopRingTimer())),
    (AC, K.hangup, CALLEE): Applies(ended(EndReason.hangup, CALLEE), (
        Stamp("ended"),
        SendState(CALLEE, P, R.localHangup, E.localHangup, ACTIVE),
        SendState(CALLER, P, R.remoteHangup, E.remoteHangup, ALL),
        StopRingTimer())),
    (AC, K.hangup, None): FORBIDDEN,
    (AC, K.media, CALLER): Applies({"caller_has_frame": True, "caller_connected": True}, (
        Stamp("caller_connected"),
        SendState(CALLER, CallState.connected, R.recvRemoteFirstFrame, None, ALL))),
    (AC, K.media, CALLEE): Applies(
        {"callee_frame_devices": frozenset({CALLEE_DEVICE}), "callee_connected": True}, (
            Stamp("callee_connected"),
            SendState(CALLEE, CallState.connected, R.recvRemoteFirstFrame, None, ACTIVE))),
    (AC, K.media, None): FORBIDDEN,
    **any_side(AC, K.delivered, UNCHANGED),
    **any_side(AC, K.ring_timeout, Applies(ended(EndReason.timeout), (
        Stamp("ended"),
        SendState(CALLER, P, R.callingTimeout, E.callingTimeout, ALL),
        SendState(CALLEE, P, R.remoteCallingTimeout, E.remoteCallingTimeout, ACTIVE),
        StopRingTimer()))),
    **any_side(AC, K.recalled, UNCHANGED),
    (AC, K.peer_disconnected, CALLER): Applies(
        {"caller_away": True}, (SendEvent(CALLEE, E.remoteReconnecting, ACTIVE),)),
    (AC, K.peer_disconnected, CALLEE): Applies(
        {"callee_away": True}, (SendEvent(CALLER, E.remoteReconnecting, ALL),)),
    (AC, K.peer_disconnected, None): NO_SIDE,
    (AC, K.peer_reconnected, CALLER): Applies(
        {"caller_away": False}, (SendEvent(CALLEE, E.remoteReconnected, ACTIVE),),
        given=away(CALLER)),
    (AC, K.peer_reconnected, CALLEE): Applies(
        {"callee_away": False}, (SendEvent(CALLER, E.remoteReconnected, ALL),),
        given=away(CALLEE)),
    (AC, K.peer_reconnected, None): NO_SIDE,
    (AC, K.peer_lost, CALLER): Applies(ended(EndReason.connection_lost, caller_away=False), (
        Stamp("ended"),
        SendState(CALLEE, P, R.remoteConnectionLost, None, ACTIVE),
        SendState(CALLER, P, R.rtmLost, None, ALL),
        StopRingTimer()), given=away(CALLER)),
    (AC, K.peer_lost, CALLEE): Applies(ended(EndReason.connection_lost, callee_away=False), (
        Stamp("ended"),
        SendState(CALLER, P, R.remoteConnectionLost, None, ALL),
        SendState(CALLEE, P, R.rtmLost, None, ACTIVE),
        StopRingTimer()), given=away(CALLEE)),
    (AC, K.peer_lost, None): NO_SIDE,
    **any_side(AC, K.end_by_server, Applies(ended(EndReason.ended_by_server), (
        Stamp("ended"),
        SendState(CALLER, P, R.endedByServer, None, ALL),
        SendState(CALLEE, P, R.endedByServer, None, ACTIVE),
        StopRingTimer()))),
    # a side that is connected stays so: its frame did its work
    (AC, K.media_reset, CALLER): Applies(given={"caller_has_frame": True,
                                                "caller_connected": True}),
    (AC, K.media_reset, CALLEE): Applies(given={"callee_frame_devices": frozenset({CALLEE_DEVICE}),
                                                "callee_connected": True}),
    (AC, K.media_reset, None): NO_SIDE,

    # ---- connected: as accepted, but the ring timer is already stopped
    (CO, K.cancel, CALLER): MISMATCH,
    (CO, K.cancel, CALLEE): FORBIDDEN,
    (CO, K.cancel, None): FORBIDDEN,
    (CO, K.accept, CALLER): FORBIDDEN,
    (CO, K.accept, CALLEE): MISMATCH,
    (CO, K.accept, None): FORBIDDEN,
    (CO, K.reject, CALLER): FORBIDDEN,
    (CO, K.reject, CALLEE): MISMATCH,
    (CO, K.reject, None): FORBIDDEN,
    (CO, K.hangup, CALLER): Applies(ended(EndReason.hangup, CALLER), (
        Stamp("ended"),
        SendState(CALLER, P, R.localHangup, E.localHangup, ALL),
        SendState(CALLEE, P, R.remoteHangup, E.remoteHangup, ACTIVE))),
    (CO, K.hangup, CALLEE): Applies(ended(EndReason.hangup, CALLEE), (
        Stamp("ended"),
        SendState(CALLEE, P, R.localHangup, E.localHangup, ACTIVE),
        SendState(CALLER, P, R.remoteHangup, E.remoteHangup, ALL))),
    (CO, K.hangup, None): FORBIDDEN,
    (CO, K.media, CALLER): UNCHANGED,
    (CO, K.media, CALLEE): UNCHANGED,
    (CO, K.media, None): FORBIDDEN,
    **any_side(CO, K.delivered, UNCHANGED),
    **any_side(CO, K.ring_timeout, UNCHANGED),
    **any_side(CO, K.recalled, UNCHANGED),
    (CO, K.peer_disconnected, CALLER): Applies(
        {"caller_away": True}, (SendEvent(CALLEE, E.remoteReconnecting, ACTIVE),)),
    (CO, K.peer_disconnected, CALLEE): Applies(
        {"callee_away": True}, (SendEvent(CALLER, E.remoteReconnecting, ALL),)),
    (CO, K.peer_disconnected, None): NO_SIDE,
    (CO, K.peer_reconnected, CALLER): Applies(
        {"caller_away": False}, (SendEvent(CALLEE, E.remoteReconnected, ACTIVE),),
        given=away(CALLER)),
    (CO, K.peer_reconnected, CALLEE): Applies(
        {"callee_away": False}, (SendEvent(CALLER, E.remoteReconnected, ALL),),
        given=away(CALLEE)),
    (CO, K.peer_reconnected, None): NO_SIDE,
    (CO, K.peer_lost, CALLER): Applies(ended(EndReason.connection_lost, caller_away=False), (
        Stamp("ended"),
        SendState(CALLEE, P, R.remoteConnectionLost, None, ACTIVE),
        SendState(CALLER, P, R.rtmLost, None, ALL)), given=away(CALLER)),
    (CO, K.peer_lost, CALLEE): Applies(ended(EndReason.connection_lost, callee_away=False), (
        Stamp("ended"),
        SendState(CALLER, P, R.remoteConnectionLost, None, ALL),
        SendState(CALLEE, P, R.rtmLost, None, ACTIVE)), given=away(CALLEE)),
    (CO, K.peer_lost, None): NO_SIDE,
    **any_side(CO, K.end_by_server, Applies(ended(EndReason.ended_by_server), (
        Stamp("ended"),
        SendState(CALLER, P, R.endedByServer, None, ALL),
        SendState(CALLEE, P, R.endedByServer, None, ACTIVE)))),
    (CO, K.media_reset, CALLER): UNCHANGED,
    (CO, K.media_reset, CALLEE): UNCHANGED,
    (CO, K.media_reset, None): NO_SIDE,

    # ---- ended: intents are too late, server inputs no longer apply
    (EN, K.cancel, CALLER): MISMATCH,
    (EN, K.cancel, CALLEE): FORBIDDEN,
    (EN, K.cancel, None): FORBIDDEN,
    (EN, K.accept, CALLER): FORBIDDEN,
    (EN, K.accept, CALLEE): MISMATCH,
    (EN, K.accept, None): FORBIDDEN,
    (EN, K.reject, CALLER): FORBIDDEN,
    (EN, K.reject, CALLEE): MISMATCH,
    (EN, K.reject, None): FORBIDDEN,
    (EN, K.hangup, CALLER): MISMATCH,
    (EN, K.hangup, CALLEE): MISMATCH,
    (EN, K.hangup, None): FORBIDDEN,
    (EN, K.media, CALLER): MISMATCH,  # first_remote_frame is not a late milestone
    (EN, K.media, CALLEE): MISMATCH,
    (EN, K.media, None): FORBIDDEN,
    **any_side(EN, K.delivered, UNCHANGED),
    **any_side(EN, K.ring_timeout, UNCHANGED),
    **any_side(EN, K.recalled, UNCHANGED),
    (EN, K.peer_disconnected, CALLER): UNCHANGED,
    (EN, K.peer_disconnected, CALLEE): UNCHANGED,
    (EN, K.peer_disconnected, None): NO_SIDE,
    (EN, K.peer_reconnected, CALLER): Applies(given=away(CALLER)),
    (EN, K.peer_reconnected, CALLEE): Applies(given=away(CALLEE)),
    (EN, K.peer_reconnected, None): NO_SIDE,
    (EN, K.peer_lost, CALLER): Applies(given=away(CALLER)),
    (EN, K.peer_lost, CALLEE): Applies(given=away(CALLEE)),
    (EN, K.peer_lost, None): NO_SIDE,
    **any_side(EN, K.end_by_server, MISMATCH),
    (EN, K.media_reset, CALLER): UNCHANGED,
    (EN, K.media_reset, CALLEE): UNCHANGED,
    (EN, K.media_reset, None): NO_SIDE,
}

ALL_COMBINATIONS = list(itertools.product(Phase, InputKind, SIDES))


def combination_id(combination) -> str:
    phase, kind, side = combination
    return f"{phase.value}-{kind.value}-{side.value if side else 'no_side'}"


# ---- the whole table ------------------------------------------------------------------------


@pytest.mark.parametrize("combination", ALL_COMBINATIONS, ids=combination_id)
def test_every_phase_input_and_side(combination):
    # given
    phase, kind, side = combination
    expected = EXPECTED[combination]
    call = replace(SNAPSHOTS[phase], **getattr(expected, "given", {}))
    inp = table_input(kind, side)
    # when / then
    if isinstance(expected, Refused):
        with pytest.raises(RuleViolation) as raised:
            step(call, inp)
        assert raised.value.code == expected.code
    elif isinstance(expected, Misuse):
        with pytest.raises(expected.error):
            step(call, inp)
    else:
        transition = step(call, inp)
        assert transition == Transition(replace(call, **expected.changes), expected.effects)


def test_every_phase_input_and_side_has_an_expectation():
    # given
    combinations = set(ALL_COMBINATIONS)
    # when
    missing = combinations - EXPECTED.keys()
    unknown = EXPECTED.keys() - combinations
    # then
    assert sorted(map(combination_id, missing)) == []
    assert sorted(map(combination_id, unknown)) == []


def test_the_expectation_table_has_one_row_per_combination():
    # given
    phases, kinds = len(Phase), len(InputKind)
    # when
    rows = len(EXPECTED)
    # then
    assert rows == phases * kinds * len(SIDES) == 4 * 13 * 3


# ---- dialing --------------------------------------------------------------------------------


def dial(*, caller_id: int = CALLER_ID, callee_id: int = CALLEE_ID,
         call_type: CallType = CallType.video, caller_device: str = CALLER_DEVICE,
         caller_active: CallSnapshot | None = None, callee_active: CallSnapshot | None = None,
         callee_online: bool = True, wait_first_frame: bool = True):
    return decide_dial(caller_id=caller_id, callee_id=callee_id, call_type=call_type,
                       now_ms=NOW_MS, timeout_ms=TIMEOUT_MS, caller_device=caller_device,
                       caller_active=caller_active, callee_active=callee_active,
                       callee_online=callee_online, wait_first_frame=wait_first_frame)


def fresh_call(call_type: CallType = CallType.video) -> CallSnapshot:
    return CallSnapshot(phase=Phase.ringing, call_type=call_type, caller_id=CALLER_ID,
                        callee_id=CALLEE_ID, deadline_ms=DEADLINE_MS, caller_device=CALLER_DEVICE)


def test_new_call_rings_until_its_deadline():
    # given / when
    call = new_call(caller_id=CALLER_ID, callee_id=CALLEE_ID, call_type=CallType.audio,
                    now_ms=NOW_MS, timeout_ms=TIMEOUT_MS, caller_device=CALLER_DEVICE)
    # then
    assert call == fresh_call(CallType.audio)


RING_NOTES = {
    CallType.video: (
        SendState(CALLER, CallState.calling, R.localVideoCall, E.localVideoCall, ALL),
        SendState(CALLEE, CallState.calling, R.remoteVideoCall, E.remoteVideoCall, ALL)),
    CallType.audio: (
        SendState(CALLER, CallState.calling, R.localAudioCall, E.localAudioCall, ALL),
        SendState(CALLEE, CallState.calling, R.remoteAudioCall, E.remoteAudioCall, ALL)),
}
CALL_TYPES = pytest.mark.parametrize("call_type", list(CallType), ids=lambda t: t.value)


@CALL_TYPES
def test_dialing_a_free_online_callee_rings_both_sides(call_type):
    # given a free caller and a free, online callee
    # when
    decision = dial(call_type=call_type)
    # then
    assert decision.outcome is DialOutcome.ring
    assert decision.created == Transition(fresh_call(call_type),
                                          RING_NOTES[call_type] + (StartRingTimer(DEADLINE_MS),))
    assert decision.existing is None


def call_between(caller_id: int, callee_id: int, phase: Phase) -> CallSnapshot:
    return replace(SNAPSHOTS[phase], caller_id=caller_id, callee_id=callee_id)


@pytest.mark.parametrize(("callee_active", "callee_online"), [
    pytest.param(call_between(THIRD_ID, CALLEE_ID, Phase.ringing), True, id="callee-ringing"),
    pytest.param(call_between(CALLEE_ID, THIRD_ID, Phase.accepted), True, id="callee-accepted"),
    pytest.param(call_between(THIRD_ID, CALLEE_ID, Phase.connected), True,
                 id="callee-connected"),
    pytest.param(call_between(THIRD_ID, CALLEE_ID, Phase.connected), False,
                 id="busy-wins-over-offline"),
])
def test_dialing_a_callee_in_another_call_ends_at_once_as_busy(callee_active, callee_online):
    # given the callee is in a call with a third user
    # when
    decision = dial(callee_active=callee_active, callee_online=callee_online)
    # then only the caller hears, with remoteCallBusy
    assert decision.outcome is DialOutcome.busy
    assert decision.created == Transition(
        replace(fresh_call(), phase=Phase.ended, end_reason=EndReason.busy),
        (Stamp("ended"), SendState(CALLER, P, R.remoteCallBusy, E.remoteCallBusy, ALL)))
    assert decision.existing is None


def test_dialing_a_callee_without_a_connected_device_ends_at_once_as_offline():
    # given the callee is free but has no connected device
    # when
    decision = dial(callee_online=False)
    # then
    assert decision.outcome is DialOutcome.offline
    assert decision.created == Transition(
        replace(fresh_call(), phase=Phase.ended, end_reason=EndReason.offline),
        (Stamp("ended"), SendState(CALLER, P, R.remoteOffline, E.remoteOffline, ALL)))
    assert decision.existing is None


@CALL_TYPES
def test_dialing_the_same_callee_again_while_ringing_replaces_the_call(call_type):
    # given the caller's call to the callee still rings (it is both users' active call)
    # when the caller dials the same callee again
    decision = dial(call_type=call_type, caller_active=RINGING, callee_active=RINGING)
    # then the first call ends with cancelByCallerRecall and a new call rings
    assert decision.outcome is DialOutcome.recall
    assert decision.existing == Transition(
        replace(RINGING, phase=Phase.ended, end_reason=EndReason.recalled), (
            Stamp("ended"),
            SendState(CALLER, P, R.cancelByCallerRecall, None, ALL),
            SendState(CALLEE, P, R.cancelByCallerRecall, None, ALL),
            StopRingTimer()))
    assert decision.created == Transition(fresh_call(call_type),
                                          RING_NOTES[call_type] + (StartRingTimer(DEADLINE_MS),))


@pytest.mark.parametrize("delivered", [False, True], ids=["not-yet-delivered", "delivered"])
def test_glare_accepts_the_ringing_call_instead_of_making_a_second(delivered):
    # given the callee's side is ringing: alice calls bob
    ringing = replace(RINGING, delivered=delivered)
    # when bob dials alice from his phone
    decision = dial(caller_id=CALLEE_ID, callee_id=CALLER_ID, caller_device=CALLEE_DEVICE,
                    caller_active=ringing, callee_active=ringing)
    # then bob's dial accepts alice's call on bob's phone; no new call is made
    assert decision.outcome is DialOutcome.glare
    assert decision.created is None
    delivery = () if delivered else (Stamp("delivered"),
                                     SendEvent(CALLER, E.remoteUserRecvCall, ALL))
    assert decision.existing == Transition(
        replace(ringing, phase=Phase.accepted, delivered=True, callee_device=CALLEE_DEVICE),
        delivery + (
            Stamp("accepted"),
            SendState(CALLEE, CallState.connecting, R.localAccepted, E.localAccepted, ACTIVE),
            SendState(CALLEE, P, R.answeredElsewhere, E.answeredElsewhere, OTHERS),
            SendState(CALLER, CallState.connecting, R.remoteAccepted, E.remoteAccepted, ALL)))


def test_dialing_yourself_is_refused():
    # given / when
    with pytest.raises(RuleViolation) as raised:
        dial(callee_id=CALLER_ID)
    # then
    assert raised.value.code == "self_call"


def same_call(call: CallSnapshot) -> tuple[CallSnapshot, CallSnapshot]:
    """A call between the two dialing users is both users' active call."""
    return call, call


@pytest.mark.parametrize(("caller_active", "callee_active"), [
    pytest.param(call_between(CALLER_ID, THIRD_ID, Phase.ringing), None,
                 id="calling-someone-else"),
    pytest.param(call_between(THIRD_ID, CALLER_ID, Phase.ringing), None,
                 id="rung-by-someone-else"),
    pytest.param(call_between(CALLER_ID, THIRD_ID, Phase.accepted), None,
                 id="accepted-elsewhere"),
    pytest.param(call_between(THIRD_ID, CALLER_ID, Phase.connected), None,
                 id="connected-elsewhere"),
    pytest.param(*same_call(call_between(CALLER_ID, CALLEE_ID, Phase.accepted)),
                 id="recall-after-accept"),
    pytest.param(*same_call(call_between(CALLER_ID, CALLEE_ID, Phase.connected)),
                 id="recall-when-connected"),
    pytest.param(*same_call(call_between(CALLEE_ID, CALLER_ID, Phase.accepted)),
                 id="glare-after-accept"),
    pytest.param(*same_call(call_between(CALLEE_ID, CALLER_ID, Phase.connected)),
                 id="glare-when-connected"),
])
def test_a_caller_already_in_a_call_cannot_dial(caller_active, callee_active):
    # given the caller's live call (and the callee's, when it is the same one)
    # when
    with pytest.raises(RuleViolation) as raised:
        dial(caller_active=caller_active, callee_active=callee_active)
    # then
    assert raised.value.code == "state_mismatch"


# ---- the ring timer -------------------------------------------------------------------------


@pytest.mark.parametrize("phase", [Phase.ringing, Phase.accepted], ids=lambda p: p.value)
@pytest.mark.parametrize("now_ms", [NOW_MS, DEADLINE_MS - 1], ids=["at-start", "1ms-early"])
def test_a_ring_timer_firing_early_is_re_armed_for_the_deadline(phase, now_ms):
    # given
    call = SNAPSHOTS[phase]
    # when
    transition = step(call, Input(InputKind.ring_timeout, now_ms=now_ms))
    # then nothing changes but the timer
    assert transition == Transition(call, (StartRingTimer(DEADLINE_MS),))


@pytest.mark.parametrize(("phase", "callee_audience"), [
    pytest.param(Phase.ringing, ALL, id="ringing"),
    pytest.param(Phase.accepted, ACTIVE, id="accepted"),
])
@pytest.mark.parametrize("now_ms", [DEADLINE_MS, DEADLINE_MS + 1, DEADLINE_MS + 60_000],
                         ids=["at-deadline", "1ms-after", "a-minute-after"])
def test_the_ring_timer_at_or_after_the_deadline_ends_an_unconnected_call(phase, callee_audience,
                                                                          now_ms):
    # given
    call = SNAPSHOTS[phase]
    # when
    transition = step(call, Input(InputKind.ring_timeout, now_ms=now_ms))
    # then
    assert transition == Transition(
        replace(call, phase=Phase.ended, end_reason=EndReason.timeout), (
            Stamp("ended"),
            SendState(CALLER, P, R.callingTimeout, E.callingTimeout, ALL),
            SendState(CALLEE, P, R.remoteCallingTimeout, E.remoteCallingTimeout,
                      callee_audience),
            StopRingTimer()))


@pytest.mark.parametrize("phase", [Phase.connected, Phase.ended], ids=lambda p: p.value)
@pytest.mark.parametrize("now_ms", [NOW_MS, DEADLINE_MS, DEADLINE_MS + 60_000],
                         ids=["early", "at-deadline", "late"])
def test_a_ring_timer_that_no_longer_applies_changes_nothing(phase, now_ms):
    # given a call already connected or ended
    call = SNAPSHOTS[phase]
    # when
    transition = step(call, Input(InputKind.ring_timeout, now_ms=now_ms))
    # then no change, no effect, no error
    assert transition == Transition(call)
    assert not transition.changed


def test_a_ring_timer_firing_twice_ends_the_call_once():
    # given the timer already ended the call
    first = step(RINGING, Input(InputKind.ring_timeout, now_ms=DEADLINE_MS))
    # when it fires again
    second = step(first.call, Input(InputKind.ring_timeout, now_ms=DEADLINE_MS + 1))
    # then
    assert first.call.end_reason is EndReason.timeout
    assert second == Transition(first.call)


# ---- delivery -------------------------------------------------------------------------------


def test_the_first_delivery_receipt_tells_the_caller_once():
    # given
    call = RINGING
    # when
    first = step(call, Input(InputKind.delivered, now_ms=NOW_MS))
    second = step(first.call, Input(InputKind.delivered, now_ms=NOW_MS + 1))
    # then
    assert first == Transition(replace(call, delivered=True), (
        Stamp("delivered"), SendEvent(CALLER, E.remoteUserRecvCall, ALL)))
    assert second == Transition(first.call)


def accept(call: CallSnapshot, device_id: str = CALLEE_DEVICE) -> Transition:
    return step(call, Input(InputKind.accept, user_id=CALLEE_ID, device_id=device_id,
                            now_ms=NOW_MS))


ACCEPT_NOTES = (
    Stamp("accepted"),
    SendState(CALLEE, CallState.connecting, R.localAccepted, E.localAccepted, ACTIVE),
    SendState(CALLEE, P, R.answeredElsewhere, E.answeredElsewhere, OTHERS),
    SendState(CALLER, CallState.connecting, R.remoteAccepted, E.remoteAccepted, ALL),
)


def test_an_accept_without_a_prior_receipt_proves_the_delivery():
    # given no callee device acknowledged the incoming call
    call = RINGING
    # when
    transition = accept(call)
    # then the caller gets remoteUserRecvCall before remoteAccepted
    assert transition == Transition(
        replace(call, phase=Phase.accepted, delivered=True, callee_device=CALLEE_DEVICE),
        (Stamp("delivered"), SendEvent(CALLER, E.remoteUserRecvCall, ALL)) + ACCEPT_NOTES)


def test_an_accept_after_a_receipt_does_not_tell_the_caller_again():
    # given
    call = replace(RINGING, delivered=True)
    # when
    transition = accept(call, OTHER_CALLEE_DEVICE)
    # then the answering device is the active one; the other devices are told
    assert transition == Transition(
        replace(call, phase=Phase.accepted, callee_device=OTHER_CALLEE_DEVICE), ACCEPT_NOTES)


def test_a_delivery_receipt_after_the_accept_changes_nothing():
    # given
    accepted = accept(RINGING).call
    # when
    transition = step(accepted, Input(InputKind.delivered, now_ms=NOW_MS))
    # then
    assert transition == Transition(accepted)


# ---- first frames and the connected state ----------------------------------------------------


def frame(call: CallSnapshot, side: Side, device_id: str) -> Transition:
    return step(call, Input(InputKind.media, user_id=USER_OF[side], device_id=device_id,
                            milestone=Milestone.first_remote_frame, now_ms=NOW_MS))


def test_a_caller_frame_before_the_accept_connects_the_caller_at_the_accept():
    # given the caller saw a remote frame while ringing
    before = frame(RINGING, CALLER, CALLER_DEVICE)
    # when the callee accepts
    transition = accept(before.call)
    # then the caller turns connected with remoteAccepted; the call is not yet connected
    assert before == Transition(replace(RINGING, caller_has_frame=True))
    assert transition == Transition(
        replace(before.call, phase=Phase.accepted, delivered=True, callee_device=CALLEE_DEVICE,
                caller_connected=True),
        (Stamp("delivered"), SendEvent(CALLER, E.remoteUserRecvCall, ALL)) + ACCEPT_NOTES + (
            Stamp("caller_connected"),
            SendState(CALLER, CallState.connected, R.remoteAccepted, None, ALL)))


def test_a_callee_frame_before_the_accept_connects_the_callee_at_the_accept():
    # given the callee's phone saw a remote frame while ringing
    before = frame(RINGING, CALLEE, CALLEE_DEVICE)
    # when the callee accepts on that phone
    transition = accept(before.call)
    # then the callee turns connected with localAccepted
    assert before == Transition(replace(RINGING, callee_frame_devices=frozenset({CALLEE_DEVICE})))
    assert transition == Transition(
        replace(before.call, phase=Phase.accepted, delivered=True, callee_device=CALLEE_DEVICE,
                callee_connected=True),
        (Stamp("delivered"), SendEvent(CALLER, E.remoteUserRecvCall, ALL)) + ACCEPT_NOTES + (
            Stamp("callee_connected"),
            SendState(CALLEE, CallState.connected, R.localAccepted, None, ACTIVE)))


def test_frames_on_both_sides_before_the_accept_connect_the_call_at_the_accept():
    # given both sides saw a remote frame while ringing
    call = replace(RINGING, delivered=True, caller_has_frame=True,
                   callee_frame_devices=frozenset({CALLEE_DEVICE}))
    # when
    transition = accept(call)
    # then both sides and the record turn connected and the ring timer stops
    assert transition == Transition(
        replace(call, phase=Phase.connected, callee_device=CALLEE_DEVICE, caller_connected=True,
                callee_connected=True),
        ACCEPT_NOTES + (
            Stamp("callee_connected"),
            SendState(CALLEE, CallState.connected, R.localAccepted, None, ACTIVE),
            Stamp("caller_connected"),
            SendState(CALLER, CallState.connected, R.remoteAccepted, None, ALL),
            Stamp("connected"),
            StopRingTimer()))


def test_an_accept_that_does_not_wait_for_a_frame_connects_the_callee_at_once():
    # given the callee saw no remote frame yet
    # when the callee accepts without waiting for one (CallAPI's firstFrameWaittingDisabled)
    transition = step(RINGING, Input(InputKind.accept, user_id=CALLEE_ID, device_id=CALLEE_DEVICE,
                                     now_ms=NOW_MS, wait_first_frame=False))
    # then the callee is connected at the accept; the caller still waits for its frame
    assert transition == Transition(
        replace(RINGING, phase=Phase.accepted, delivered=True, callee_device=CALLEE_DEVICE,
                callee_frame_devices=frozenset({CALLEE_DEVICE}), callee_connected=True),
        (Stamp("delivered"), SendEvent(CALLER, E.remoteUserRecvCall, ALL)) + ACCEPT_NOTES + (
            Stamp("callee_connected"),
            SendState(CALLEE, CallState.connected, R.localAccepted, None, ACTIVE)))


def test_an_accept_that_brings_the_first_remote_frame_connects_the_callee_at_once():
    # given the callee's device already shows the caller's picture (it came while ringing)
    # when it accepts and says so, instead of a media report of its own
    transition = step(RINGING, Input(InputKind.accept, user_id=CALLEE_ID, device_id=CALLEE_DEVICE,
                                     milestone=Milestone.first_remote_frame, now_ms=NOW_MS))
    # then the callee is connected at the accept, as with the report first; the caller still
    # waits for its own frame
    by_report = step(step(RINGING, Input(InputKind.media, user_id=CALLEE_ID,
                                         device_id=CALLEE_DEVICE,
                                         milestone=Milestone.first_remote_frame,
                                         now_ms=NOW_MS)).call,
                     Input(InputKind.accept, user_id=CALLEE_ID, device_id=CALLEE_DEVICE,
                           now_ms=NOW_MS))
    assert transition == by_report
    assert (transition.call.callee_connected, transition.call.caller_connected) == (True, False)
    assert transition.call.callee_frame_devices == frozenset({CALLEE_DEVICE})


def test_another_milestone_with_an_accept_counts_as_no_frame():
    transition = step(RINGING, Input(InputKind.accept, user_id=CALLEE_ID, device_id=CALLEE_DEVICE,
                                     milestone=Milestone.joined, now_ms=NOW_MS))
    assert not transition.call.callee_connected
    assert transition.call.callee_frame_devices == frozenset()


def test_a_call_that_does_not_wait_for_a_frame_connects_the_caller_at_the_accept():
    # given alice dialed without waiting for a first frame
    created = dial(wait_first_frame=False).created.call
    assert created == replace(RINGING, caller_has_frame=True)
    # when bob accepts without waiting either
    transition = step(created, Input(InputKind.accept, user_id=CALLEE_ID, device_id=CALLEE_DEVICE,
                                     now_ms=NOW_MS, wait_first_frame=False))
    # then the whole call is connected at the accept
    assert transition.call.phase is Phase.connected
    assert (transition.call.caller_connected, transition.call.callee_connected) == (True, True)
    assert Stamp("connected") in transition.effects


def test_glare_without_waiting_for_a_frame_connects_the_second_caller_at_once():
    # given alice's call rings bob; when bob dials alice without waiting for a first frame
    decision = dial(caller_id=CALLEE_ID, callee_id=CALLER_ID, caller_device=CALLEE_DEVICE,
                    caller_active=RINGING, callee_active=RINGING, wait_first_frame=False)
    # then bob answers alice's call and is connected at once; alice still waits for her frame
    assert decision.outcome is DialOutcome.glare
    call = decision.existing.call
    assert (call.phase, call.callee_connected, call.caller_connected) == (
        Phase.accepted, True, False)


def test_a_frame_from_a_callee_device_that_did_not_accept_does_not_count_at_the_accept():
    # given the callee's tablet saw a frame while ringing
    call = replace(RINGING, delivered=True,
                   callee_frame_devices=frozenset({OTHER_CALLEE_DEVICE}))
    # when the callee accepts on the phone
    transition = accept(call)
    # then the callee is connecting, not connected
    assert transition == Transition(
        replace(call, phase=Phase.accepted, callee_device=CALLEE_DEVICE), ACCEPT_NOTES)


@pytest.mark.parametrize(("side", "device_id"), [
    pytest.param(CALLEE, OTHER_CALLEE_DEVICE, id="callee-device-that-did-not-accept"),
    pytest.param(CALLER, OTHER_CALLER_DEVICE, id="caller-device-that-did-not-dial"),
])
def test_a_frame_after_the_accept_from_another_device_does_not_count(side, device_id):
    # given
    call = ACCEPTED
    # when
    transition = frame(call, side, device_id)
    # then
    assert transition == Transition(call)


@pytest.mark.parametrize(("side", "device_id", "given", "changes", "audience"), [
    pytest.param(CALLER, CALLER_DEVICE,
                 {"callee_frame_devices": frozenset({CALLEE_DEVICE}), "callee_connected": True},
                 {"caller_has_frame": True, "caller_connected": True}, ALL,
                 id="caller-completes"),
    pytest.param(CALLEE, CALLEE_DEVICE, {"caller_has_frame": True, "caller_connected": True},
                 {"callee_frame_devices": frozenset({CALLEE_DEVICE}), "callee_connected": True},
                 ACTIVE, id="callee-completes"),
])
def test_the_second_side_connecting_connects_the_call(side, device_id, given, changes, audience):
    # given an accepted call where the other side is already connected
    call = replace(ACCEPTED, **given)
    # when
    transition = frame(call, side, device_id)
    # then
    assert transition == Transition(replace(call, phase=Phase.connected, **changes), (
        Stamp(f"{side.value}_connected"),
        SendState(side, CallState.connected, R.recvRemoteFirstFrame, None, audience),
        Stamp("connected"),
        StopRingTimer()))


@pytest.mark.parametrize("side", [CALLER, CALLEE], ids=lambda s: s.value)
def test_a_repeated_first_frame_changes_nothing(side):
    # given the side already connected on its first frame
    once = frame(ACCEPTED, side, DEVICE_OF[side])
    # when it reports another one
    twice = frame(once.call, side, DEVICE_OF[side])
    # then
    assert twice == Transition(once.call)


OTHER_MILESTONES = [m for m in Milestone if m is not Milestone.first_remote_frame]


@pytest.mark.parametrize("milestone", OTHER_MILESTONES, ids=lambda m: m.value)
@pytest.mark.parametrize("side", [CALLER, CALLEE], ids=lambda s: s.value)
@pytest.mark.parametrize("phase", [Phase.ringing, Phase.accepted, Phase.connected],
                         ids=lambda p: p.value)
def test_milestones_other_than_the_first_frame_change_nothing_in_a_live_call(phase, side,
                                                                             milestone):
    # given
    call = SNAPSHOTS[phase]
    # when
    transition = step(call, Input(InputKind.media, user_id=USER_OF[side],
                                  device_id=DEVICE_OF[side], milestone=milestone, now_ms=NOW_MS))
    # then
    assert transition == Transition(call)


def test_a_media_report_without_a_milestone_is_an_invalid_message():
    # given / when
    with pytest.raises(RuleViolation) as raised:
        step(ACCEPTED, Input(InputKind.media, user_id=CALLER_ID, device_id=CALLER_DEVICE,
                             now_ms=NOW_MS))
    # then
    assert raised.value.code == "invalid_message"


# ---- a device that lost its media connections (a reloaded page) -----------------------------


def media_reset(call: CallSnapshot, side: Side, device_id: str, *,
                wait_first_frame: bool = True) -> Transition:
    return step(call, Input(InputKind.media_reset, side=side, device_id=device_id, now_ms=NOW_MS,
                            wait_first_frame=wait_first_frame))


def test_a_caller_reloaded_while_ringing_connects_on_its_new_frame_not_at_the_accept():
    # given the caller's page saw a remote frame while ringing, then was reloaded
    seen = frame(RINGING, CALLER, CALLER_DEVICE).call
    reloaded = media_reset(seen, CALLER, CALLER_DEVICE)
    # when the callee accepts
    accepted = accept(reloaded.call)
    # then the caller is connecting only
    assert reloaded == Transition(RINGING)
    assert accepted == Transition(
        replace(RINGING, phase=Phase.accepted, delivered=True, callee_device=CALLEE_DEVICE),
        (Stamp("delivered"), SendEvent(CALLER, E.remoteUserRecvCall, ALL)) + ACCEPT_NOTES)
    # when the new page's connection shows the first frame
    connected = frame(accepted.call, CALLER, CALLER_DEVICE)
    # then that frame connects the caller
    assert connected == Transition(
        replace(accepted.call, caller_has_frame=True, caller_connected=True), (
            Stamp("caller_connected"),
            SendState(CALLER, CallState.connected, R.recvRemoteFirstFrame, None, ALL)))


def test_a_callee_device_reloaded_while_ringing_is_not_connected_at_its_accept():
    # given the callee's phone saw a remote frame while ringing, then its page was reloaded
    seen = frame(RINGING, CALLEE, CALLEE_DEVICE).call
    reloaded = media_reset(seen, CALLEE, CALLEE_DEVICE).call
    # when the callee accepts on that phone
    transition = accept(reloaded)
    # then
    assert transition == Transition(
        replace(RINGING, phase=Phase.accepted, delivered=True, callee_device=CALLEE_DEVICE),
        (Stamp("delivered"), SendEvent(CALLER, E.remoteUserRecvCall, ALL)) + ACCEPT_NOTES)


@pytest.mark.parametrize(("side", "device_id"), [
    pytest.param(CALLER, OTHER_CALLER_DEVICE, id="caller-device-that-did-not-dial"),
    pytest.param(CALLEE, OTHER_CALLEE_DEVICE, id="callee-device-without-a-frame"),
])
def test_a_reset_of_a_device_whose_frame_does_not_count_changes_nothing(side, device_id):
    # given both sides' counting devices saw a frame while ringing
    call = replace(RINGING, caller_has_frame=True, callee_frame_devices=frozenset({CALLEE_DEVICE}))
    # when
    transition = media_reset(call, side, device_id)
    # then
    assert transition == Transition(call)


def test_a_caller_who_dialed_without_waiting_for_a_frame_keeps_that_choice_after_a_reset():
    # given alice dialed without waiting for a first frame, and her page was reloaded
    created = dial(wait_first_frame=False).created.call
    reloaded = media_reset(created, CALLER, CALLER_DEVICE, wait_first_frame=False)
    # when bob accepts
    transition = accept(reloaded.call)
    # then alice is still connected at the accept
    assert reloaded == Transition(created)
    assert transition.call.caller_connected is True


# ---- after the end --------------------------------------------------------------------------

LATE = {Milestone.left, Milestone.remote_left, Milestone.error}


@pytest.mark.parametrize("milestone", sorted(LATE, key=lambda m: m.value), ids=lambda m: m.value)
@pytest.mark.parametrize("side", [CALLER, CALLEE], ids=lambda s: s.value)
def test_a_late_milestone_after_the_end_is_accepted_silently(side, milestone):
    # given
    call = ENDED
    # when
    transition = step(call, Input(InputKind.media, user_id=USER_OF[side],
                                  device_id=DEVICE_OF[side], milestone=milestone, now_ms=NOW_MS))
    # then
    assert transition == Transition(call)


@pytest.mark.parametrize("milestone", [m for m in Milestone if m not in LATE],
                         ids=lambda m: m.value)
@pytest.mark.parametrize("side", [CALLER, CALLEE], ids=lambda s: s.value)
def test_any_other_milestone_after_the_end_is_a_state_mismatch(side, milestone):
    # given / when
    with pytest.raises(RuleViolation) as raised:
        step(ENDED, Input(InputKind.media, user_id=USER_OF[side], device_id=DEVICE_OF[side],
                          milestone=milestone, now_ms=NOW_MS))
    # then
    assert raised.value.code == "state_mismatch"


@pytest.mark.parametrize("milestone", sorted(LATE, key=lambda m: m.value), ids=lambda m: m.value)
def test_a_stranger_reporting_a_late_milestone_is_forbidden(milestone):
    # given / when
    with pytest.raises(RuleViolation) as raised:
        step(ENDED, Input(InputKind.media, user_id=STRANGER_ID, device_id=STRANGER_DEVICE,
                          milestone=milestone, now_ms=NOW_MS))
    # then
    assert raised.value.code == "forbidden"


# ---- connection loss ------------------------------------------------------------------------

LIVE = [Phase.ringing, Phase.accepted, Phase.connected]


def peer(kind: InputKind, side: Side) -> Input:
    return Input(kind, side=side, now_ms=NOW_MS)


@pytest.mark.parametrize("side", [CALLER, CALLEE], ids=lambda s: s.value)
@pytest.mark.parametrize("phase", LIVE, ids=lambda p: p.value)
def test_a_second_disconnection_report_changes_nothing(phase, side):
    # given the side is already away
    first = step(SNAPSHOTS[phase], peer(InputKind.peer_disconnected, side))
    # when another device or node reports the same loss
    second = step(first.call, peer(InputKind.peer_disconnected, side))
    # then
    assert first.call.is_away(side)
    assert second == Transition(first.call)


@pytest.mark.parametrize("kind", [InputKind.peer_reconnected, InputKind.peer_lost],
                         ids=lambda k: k.value)
@pytest.mark.parametrize("side", [CALLER, CALLEE], ids=lambda s: s.value)
@pytest.mark.parametrize("phase", LIVE, ids=lambda p: p.value)
def test_a_return_or_loss_of_a_side_that_is_not_away_changes_nothing(phase, side, kind):
    # given the side never left (or already came back)
    call = SNAPSHOTS[phase]
    # when
    transition = step(call, peer(kind, side))
    # then
    assert transition == Transition(call)


@pytest.mark.parametrize("side", [CALLER, CALLEE], ids=lambda s: s.value)
def test_a_grace_timer_firing_after_the_side_came_back_changes_nothing(side):
    # given the side dropped and came back
    gone = step(CONNECTED, peer(InputKind.peer_disconnected, side))
    back = step(gone.call, peer(InputKind.peer_reconnected, side))
    # when the grace timer fires
    late = step(back.call, peer(InputKind.peer_lost, side))
    # then the call goes on
    assert back.call == CONNECTED
    assert late == Transition(CONNECTED)
