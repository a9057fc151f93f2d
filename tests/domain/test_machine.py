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
    peer inputs about that side, server inputs carrying the side (which they ignore); the ring
    timer fires at the deadline."""
    if kind in INTENT_KINDS:
        milestone = Milestone.first_remote_frame if kind is InputKind.media else None
        return Input(kind, user_id=USER_OF[side], device_id=DEVICE_OF[side], milestone=milestone,
                     now_ms=NOW_MS)
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
    assert rows == phases * kinds * len(SIDES) == 4 * 12 * 3
