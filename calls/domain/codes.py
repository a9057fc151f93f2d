"""CallAPI's vocabulary: call states, state reasons and call events with their wire codes.

Names and numbers are those of the CallAPI reference (see shared/spec/protocol.md); codes from 50 up
are Duet's additions. This module is data only: the machine and the wire layer both read it, so a
name is spelled in exactly one place.
"""

from __future__ import annotations

import enum


class CallState(enum.IntEnum):
    """A user's CallAPI state for a call (`state` / `state_code`)."""

    idle = 0
    prepared = 1
    calling = 2
    connecting = 3
    connected = 4
    failed = 10


class StateReason(enum.IntEnum):
    """Why a user's state changed (`reason` / `reason_code`)."""

    none = 0
    joinRTCFailed = 1
    rtmSetupFailed = 2
    rtmSetupSuccessed = 3
    messageFailed = 4
    localRejected = 5
    remoteRejected = 6
    remoteAccepted = 7
    localAccepted = 8
    localHangup = 9
    remoteHangup = 10
    localCancelled = 11
    remoteCancelled = 12
    recvRemoteFirstFrame = 13
    callingTimeout = 14
    cancelByCallerRecall = 15
    rtmLost = 16
    remoteCallBusy = 17
    remoteCallingTimeout = 18
    localVideoCall = 30
    localAudioCall = 31
    remoteVideoCall = 32
    remoteAudioCall = 33
    remoteOffline = 50
    answeredElsewhere = 51
    insufficientBalance = 52
    endedByServer = 53
    remoteConnectionLost = 54


class CallEvent(enum.IntEnum):
    """A fine-grained CallAPI event (`event` / `event_code`)."""

    none = 0
    deinitialize = 1
    callingTimeout = 3
    remoteCallingTimeout = 4
    joinRTCSuccessed = 5
    stateMismatch = 9
    joinRTCStart = 10
    remoteUserRecvCall = 99
    localRejected = 100
    remoteRejected = 101
    remoteAccepted = 103
    localAccepted = 104
    localHangup = 105
    remoteHangup = 106
    remoteJoined = 107
    remoteLeft = 108
    localCancelled = 109
    remoteCancelled = 110
    localJoined = 111
    localLeft = 112
    recvRemoteFirstFrame = 113
    remoteCallBusy = 117
    captureFirstLocalVideoFrame = 119
    publishFirstLocalVideoFrame = 120
    publishFirstLocalAudioFrame = 130
    localVideoCall = 140
    localAudioCall = 141
    remoteVideoCall = 142
    remoteAudioCall = 143
    remoteOffline = 150
    answeredElsewhere = 151
    insufficientBalance = 152
    lowBalance = 153
    tokenRenewed = 154
    remoteReconnecting = 155
    remoteReconnected = 156
