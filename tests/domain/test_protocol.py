"""Client frames on the wire: calls.protocol.parse_frame for every frame type (no I/O, no DB).

A valid frame parses to exactly its known fields (enums as enums, unknown fields dropped); an
invalid one raises ProtocolError with the wire error code, carrying the frame id when the id was
read and valid.
"""

from __future__ import annotations

import json

import pytest

from calls.domain.machine import CallType, Milestone
from calls.protocol import Frame, ProtocolError, parse_frame

CALL_ID = "0123456789abcdef0123456789abcdef"  # 32 hex characters, as the server makes them


def text(frame: dict) -> str:
    """The frame as a client sends it: JSON text, non-ASCII characters as they are."""
    return json.dumps(frame, ensure_ascii=False)


def refused(raw: str | bytes | None) -> ProtocolError:
    with pytest.raises(ProtocolError) as raised:
        parse_frame(raw)
    return raised.value


# ---- valid frames ---------------------------------------------------------------------------

VALID = [
    pytest.param({"id": "f1", "type": "hello", "device_id": "alice-phone"},
                 Frame("hello", "f1", {"device_id": "alice-phone"}), id="hello"),
    pytest.param({"id": "f1", "type": "hello", "device_id": "d" * 64, "last_seq": 0},
                 Frame("hello", "f1", {"device_id": "d" * 64, "last_seq": 0}),
                 id="hello-last_seq-0-and-64-char-device"),
    pytest.param({"id": "f1", "type": "hello", "device_id": "p", "last_seq": 2**53 - 1,
                  "watch": [3, 2, 3, 1]},
                 Frame("hello", "f1", {"device_id": "p", "last_seq": 2**53 - 1,
                                       "watch": [3, 2, 1]}),
                 id="hello-watch-deduplicated-in-order"),
    pytest.param({"id": "f1", "type": "hello", "device_id": "p", "watch": list(range(1, 201))},
                 Frame("hello", "f1", {"device_id": "p", "watch": list(range(1, 201))}),
                 id="hello-watch-200-ids"),
    pytest.param({"id": "f1", "type": "hello", "device_id": "p", "last_seq": None,
                  "watch": None, "media_reset": None},
                 Frame("hello", "f1", {"device_id": "p"}), id="hello-null-optionals-omitted"),
    pytest.param({"id": "f1", "type": "hello", "device_id": "p", "last_seq": 4,
                  "media_reset": True},
                 Frame("hello", "f1", {"device_id": "p", "last_seq": 4, "media_reset": True}),
                 id="hello-media-reset"),
    pytest.param({"id": "f1", "type": "hello", "device_id": "p", "media_reset": False},
                 Frame("hello", "f1", {"device_id": "p", "media_reset": False}),
                 id="hello-no-media-reset"),
    pytest.param({"id": "f2", "type": "call", "to": 2, "call_type": "video"},
                 Frame("call", "f2", {"to": 2, "call_type": CallType.video}), id="call"),
    pytest.param({"id": "f2", "type": "call", "to": 2, "call_type": "audio",
                  "extension": {"topic": "hi"}, "timeout_ms": 5000, "room": 7},
                 Frame("call", "f2", {"to": 2, "call_type": CallType.audio,
                                      "extension": {"topic": "hi"}, "timeout_ms": 5000,
                                      "room": 7}),
                 id="call-all-optionals-min-timeout"),
    pytest.param({"id": "f2", "type": "call", "to": 1, "call_type": "video",
                  "timeout_ms": 120_000, "extension": {}},
                 Frame("call", "f2", {"to": 1, "call_type": CallType.video,
                                      "timeout_ms": 120_000, "extension": {}}),
                 id="call-max-timeout-empty-extension"),
    pytest.param({"id": "f2", "type": "call", "to": 2, "call_type": "video",
                  "extension": {"k": "x" * 4088}},
                 Frame("call", "f2", {"to": 2, "call_type": CallType.video,
                                      "extension": {"k": "x" * 4088}}),
                 id="call-extension-exactly-4KiB"),
    pytest.param({"id": "f3", "type": "cancel", "call_id": CALL_ID},
                 Frame("cancel", "f3", {"call_id": CALL_ID}), id="cancel"),
    pytest.param({"id": "f3", "type": "cancel", "call_id": CALL_ID, "reason": ""},
                 Frame("cancel", "f3", {"call_id": CALL_ID, "reason": ""}),
                 id="cancel-empty-reason"),
    pytest.param({"id": "f4", "type": "accept", "call_id": "c"},
                 Frame("accept", "f4", {"call_id": "c"}), id="accept-1-char-call-id"),
    pytest.param({"id": "f5", "type": "reject", "call_id": CALL_ID, "reason": "r" * 200},
                 Frame("reject", "f5", {"call_id": CALL_ID, "reason": "r" * 200}),
                 id="reject-200-char-reason"),
    pytest.param({"id": "f6", "type": "hangup", "call_id": CALL_ID, "reason": "bye"},
                 Frame("hangup", "f6", {"call_id": CALL_ID, "reason": "bye"}), id="hangup"),
    pytest.param({"id": "f7", "type": "media", "call_id": CALL_ID, "milestone": "joined"},
                 Frame("media", "f7", {"call_id": CALL_ID, "milestone": Milestone.joined}),
                 id="media"),
    pytest.param({"id": "f7", "type": "media", "call_id": CALL_ID, "milestone": "error",
                  "at_ms": 0, "code": "NOT_READABLE",
                  "costs": {"render": 12, "decode": 3.7, "n" * 64: 3_600_000, "zero": 0}},
                 Frame("media", "f7", {"call_id": CALL_ID, "milestone": Milestone.error,
                                       "at_ms": 0, "code": "NOT_READABLE",
                                       "costs": {"render": 12, "decode": 3, "n" * 64: 3_600_000,
                                                 "zero": 0}}),
                 id="media-all-optionals-costs-truncated-to-ms"),
    pytest.param({"id": "f7", "type": "media", "call_id": CALL_ID,
                  "milestone": "first_remote_frame",
                  "costs": {f"node{i}": i for i in range(20)}},
                 Frame("media", "f7", {"call_id": CALL_ID,
                                       "milestone": Milestone.first_remote_frame,
                                       "costs": {f"node{i}": i for i in range(20)}}),
                 id="media-20-costs"),
    pytest.param({"id": "f8", "type": "signal", "call_id": CALL_ID, "payload": {"sdp": "v=0"}},
                 Frame("signal", "f8", {"call_id": CALL_ID, "payload": {"sdp": "v=0"}}),
                 id="signal"),
    pytest.param({"id": "f8", "type": "signal", "call_id": CALL_ID, "payload": {},
                  "to_device": "bob-phone"},
                 Frame("signal", "f8", {"call_id": CALL_ID, "payload": {},
                                        "to_device": "bob-phone"}),
                 id="signal-to-device"),
    pytest.param({"id": "f9", "type": "token", "call_id": CALL_ID},
                 Frame("token", "f9", {"call_id": CALL_ID}), id="token"),
    pytest.param({"type": "ack", "seq": 41}, Frame("ack", None, {"seq": 41}),
                 id="ack-without-id"),
    pytest.param({"id": "f10", "type": "ack", "seq": 0}, Frame("ack", "f10", {"seq": 0}),
                 id="ack-with-id"),
    pytest.param({"id": "i" * 64, "type": "token", "call_id": CALL_ID},
                 Frame("token", "i" * 64, {"call_id": CALL_ID}), id="64-char-id"),
    pytest.param({"id": "f11", "type": "accept", "call_id": CALL_ID, "extra": [1, 2]},
                 Frame("accept", "f11", {"call_id": CALL_ID}), id="unknown-fields-dropped"),
]


@pytest.mark.parametrize(("frame", "expected"), VALID)
def test_a_valid_frame_parses_to_its_fields(frame, expected):
    # given
    raw = text(frame)
    # when
    parsed = parse_frame(raw)
    # then
    assert parsed == expected


def test_a_frame_may_arrive_as_utf8_bytes():
    # given
    raw = text({"id": "f1", "type": "hangup", "call_id": CALL_ID, "reason": "tschüss"})
    # when
    parsed = parse_frame(raw.encode("utf-8"))
    # then
    assert parsed == Frame("hangup", "f1", {"call_id": CALL_ID, "reason": "tschüss"})


# ---- size -----------------------------------------------------------------------------------

MAX_FRAME_BYTES = 16 * 1024


def signal_of_utf8_bytes(size: int, filler: str) -> str:
    """A valid signal frame of exactly ``size`` UTF-8 bytes, padded mostly with ``filler``."""
    empty = text({"id": "big", "type": "signal", "call_id": CALL_ID, "payload": {"sdp": ""}})
    padding = size - len(empty.encode("utf-8"))
    count, rest = divmod(padding, len(filler.encode("utf-8")))
    frame = text({"id": "big", "type": "signal", "call_id": CALL_ID,
                  "payload": {"sdp": filler * count + "x" * rest}})
    assert len(frame.encode("utf-8")) == size
    return frame


@pytest.mark.parametrize("filler", ["x", "é", "€", "😀"],
                         ids=["ascii", "2-byte", "3-byte", "4-byte"])
def test_a_frame_of_exactly_16_kib_is_accepted(filler):
    # given
    raw = signal_of_utf8_bytes(MAX_FRAME_BYTES, filler)
    # when
    parsed = parse_frame(raw)
    # then
    assert parsed.type == "signal"
    assert parsed.id == "big"


def test_a_frame_one_byte_over_16_kib_is_too_large_and_unread():
    # given
    raw = signal_of_utf8_bytes(MAX_FRAME_BYTES + 1, "x")
    # when
    error = refused(raw)
    # then it is refused unread: its id is not known
    assert (error.code, error.frame_id) == ("too_large", None)


@pytest.mark.parametrize("filler", ["é", "€", "😀"], ids=["2-byte", "3-byte", "4-byte"])
def test_the_size_limit_counts_utf8_bytes_not_characters(filler):
    # given a frame of fewer than 16 K characters but more than 16 KiB of UTF-8
    raw = signal_of_utf8_bytes(MAX_FRAME_BYTES + 1, filler)
    assert len(raw) < MAX_FRAME_BYTES
    # when
    error = refused(raw)
    # then
    assert (error.code, error.frame_id) == ("too_large", None)


def test_bytes_over_16_kib_are_too_large():
    # given
    raw = signal_of_utf8_bytes(MAX_FRAME_BYTES + 1, "x").encode("utf-8")
    # when
    error = refused(raw)
    # then
    assert (error.code, error.frame_id) == ("too_large", None)


# ---- envelope errors ------------------------------------------------------------------------


@pytest.mark.parametrize("raw", [
    pytest.param(None, id="no-text"),
    pytest.param("", id="empty"),
    pytest.param("{", id="truncated"),
    pytest.param("{'id': 'f1'}", id="single-quotes"),
    pytest.param(b"\xff\xfe{}", id="bytes-not-utf8"),
    pytest.param('{"id": "f1", "type": "ack", "seq": 1} trailing', id="trailing-text"),
])
def test_text_that_is_not_json_is_an_invalid_message_without_id(raw):
    # given / when
    error = refused(raw)
    # then
    assert (error.code, error.frame_id) == ("invalid_message", None)


@pytest.mark.parametrize("raw", [
    pytest.param("[]", id="array"),
    pytest.param('["id", "f1"]', id="array-of-strings"),
    pytest.param('"hello"', id="string"),
    pytest.param("42", id="number"),
    pytest.param("null", id="null"),
    pytest.param("true", id="boolean"),
])
def test_json_that_is_not_an_object_is_an_invalid_message_without_id(raw):
    # given / when
    error = refused(raw)
    # then
    assert (error.code, error.frame_id) == ("invalid_message", None)


@pytest.mark.parametrize("frame_id", [
    pytest.param(7, id="number"),
    pytest.param(True, id="boolean"),
    pytest.param(["f1"], id="list"),
    pytest.param({"id": "f1"}, id="object"),
    pytest.param("", id="empty-string"),
    pytest.param("i" * 65, id="65-chars"),
])
def test_a_mistyped_or_overlong_id_is_an_invalid_message_without_id(frame_id):
    # given an otherwise valid frame
    raw = text({"id": frame_id, "type": "token", "call_id": CALL_ID})
    # when
    error = refused(raw)
    # then
    assert (error.code, error.frame_id) == ("invalid_message", None)


@pytest.mark.parametrize("frame_type", ["hello", "call", "cancel", "accept", "reject", "hangup",
                                        "media", "signal", "token"])
def test_a_missing_id_is_an_invalid_message_for_every_answered_frame(frame_type):
    # given
    raw = text({"type": frame_type})
    # when
    error = refused(raw)
    # then
    assert (error.code, error.frame_id) == ("invalid_message", None)


@pytest.mark.parametrize("frame", [
    pytest.param({"id": "f1"}, id="missing"),
    pytest.param({"id": "f1", "type": None}, id="null"),
    pytest.param({"id": "f1", "type": 3}, id="number"),
    pytest.param({"id": "f1", "type": ["hello"]}, id="list"),
])
def test_a_missing_or_mistyped_type_is_an_invalid_message_with_the_id(frame):
    # given / when
    error = refused(text(frame))
    # then
    assert (error.code, error.frame_id) == ("invalid_message", "f1")


@pytest.mark.parametrize(("frame", "frame_id"), [
    pytest.param({"id": "f1", "type": "dial"}, "f1", id="unknown"),
    pytest.param({"id": "f1", "type": "reply"}, "f1", id="server-reply"),
    pytest.param({"id": "f1", "type": "event"}, "f1", id="server-event"),
    pytest.param({"id": "f1", "type": "Hello", "device_id": "p"}, "f1", id="wrong-case"),
    pytest.param({"id": "f1", "type": ""}, "f1", id="empty"),
    pytest.param({"type": "dial"}, None, id="unknown-without-id"),
])
def test_an_unknown_type_is_refused_with_the_id_when_known(frame, frame_id):
    # given / when
    error = refused(text(frame))
    # then
    assert (error.code, error.frame_id) == ("unknown_type", frame_id)


# ---- field errors ---------------------------------------------------------------------------

BASE = {
    "hello": {"device_id": "alice-phone"},
    "call": {"to": 2, "call_type": "video"},
    "cancel": {"call_id": CALL_ID},
    "accept": {"call_id": CALL_ID},
    "reject": {"call_id": CALL_ID},
    "hangup": {"call_id": CALL_ID},
    "media": {"call_id": CALL_ID, "milestone": "joined"},
    "signal": {"call_id": CALL_ID, "payload": {}},
    "token": {"call_id": CALL_ID},
    "ack": {"seq": 1},
}
REQUIRED = [
    ("hello", "device_id"), ("call", "to"), ("call", "call_type"), ("cancel", "call_id"),
    ("accept", "call_id"), ("reject", "call_id"), ("hangup", "call_id"), ("media", "call_id"),
    ("media", "milestone"), ("signal", "call_id"), ("signal", "payload"), ("token", "call_id"),
    ("ack", "seq"),
]


def test_every_base_frame_is_valid():
    # given / when
    parsed = [parse_frame(text({"id": "f1", "type": kind, **fields}))
              for kind, fields in BASE.items()]
    # then
    assert [frame.type for frame in parsed] == list(BASE)


@pytest.mark.parametrize("missing", ["absent", "null"])
@pytest.mark.parametrize(("frame_type", "field"), REQUIRED, ids=lambda v: v)
def test_a_missing_required_field_is_an_invalid_message_with_the_id(frame_type, field, missing):
    # given
    frame = {"id": "f1", "type": frame_type, **BASE[frame_type]}
    if missing == "absent":
        del frame[field]
    else:
        frame[field] = None
    # when
    error = refused(text(frame))
    # then
    assert (error.code, error.frame_id) == ("invalid_message", "f1")
    assert error.message == f"'{field}' is required"


def bad(frame_type: str, field: str, value, label: str):
    return pytest.param(frame_type, field, value, id=f"{frame_type}-{field}-{label}")


BAD_VALUES = [
    # strings: type and length
    bad("hello", "device_id", 5, "number"),
    bad("hello", "device_id", "", "empty"),
    bad("hello", "device_id", "d" * 65, "65-chars"),
    bad("cancel", "call_id", "c" * 33, "33-chars"),
    bad("accept", "call_id", "", "empty"),
    bad("token", "call_id", 12, "number"),
    bad("reject", "reason", "r" * 201, "201-chars"),
    bad("hangup", "reason", 1, "number"),
    bad("cancel", "reason", ["no"], "list"),
    bad("media", "code", "", "empty"),
    bad("media", "code", "c" * 201, "201-chars"),
    bad("signal", "to_device", "d" * 65, "65-chars"),
    bad("signal", "to_device", 3, "number"),
    # integers: bool is not an int, floats and strings are not ints, ranges
    bad("call", "to", True, "bool"),
    bad("call", "to", 2.0, "float"),
    bad("call", "to", "2", "string"),
    bad("call", "to", 0, "zero"),
    bad("call", "to", -1, "negative"),
    bad("call", "to", 2**53, "beyond-js-safe-int"),
    bad("call", "timeout_ms", 4999, "below-5000"),
    bad("call", "timeout_ms", 120_001, "above-120000"),
    bad("call", "timeout_ms", False, "bool"),
    bad("call", "timeout_ms", 15000.5, "float"),
    bad("call", "room", 0, "zero"),
    # booleans: only true and false
    bad("call", "wait_first_frame", 0, "zero"),
    bad("call", "wait_first_frame", "false", "string"),
    bad("accept", "wait_first_frame", 1, "one"),
    bad("accept", "wait_first_frame", [], "list"),
    bad("hello", "media_reset", "true", "string"),
    bad("hello", "media_reset", 1, "one"),
    bad("hello", "media_reset", {}, "object"),
    bad("accept", "costs", {"x": -1}, "negative-cost"),
    bad("accept", "costs", [1], "list"),
    bad("call", "room", True, "bool"),
    bad("hello", "last_seq", -1, "negative"),
    bad("hello", "last_seq", True, "bool"),
    bad("hello", "last_seq", "3", "string"),
    bad("media", "at_ms", -1, "negative"),
    bad("media", "at_ms", 1.5, "float"),
    bad("ack", "seq", -1, "negative"),
    bad("ack", "seq", True, "bool"),
    bad("ack", "seq", "1", "string"),
    # enums
    bad("call", "call_type", "screen", "unknown"),
    bad("call", "call_type", "Video", "wrong-case"),
    bad("call", "call_type", 1, "number"),
    bad("media", "milestone", "connected", "unknown"),
    bad("media", "milestone", "FIRST_REMOTE_FRAME", "wrong-case"),
    bad("media", "milestone", ["joined"], "list"),
    # objects
    bad("call", "extension", [], "list"),
    bad("call", "extension", "{}", "string"),
    bad("call", "extension", {"k": "x" * 4089}, "4KiB-plus-1"),
    bad("signal", "payload", "v=0", "string"),
    bad("signal", "payload", [1], "list"),
    # costs: {name of at most 64 chars: 0..3600000 ms}, at most 20 entries
    bad("media", "costs", [1, 2], "list"),
    bad("media", "costs", {f"node{i}": i for i in range(21)}, "21-entries"),
    bad("media", "costs", {"n" * 65: 1}, "65-char-name"),
    bad("media", "costs", {"render": True}, "bool-ms"),
    bad("media", "costs", {"render": "12"}, "string-ms"),
    bad("media", "costs", {"render": None}, "null-ms"),
    bad("media", "costs", {"render": -1}, "negative-ms"),
    bad("media", "costs", {"render": 3_600_001}, "over-an-hour"),
    bad("media", "costs", {"render": {"ms": 1}}, "object-ms"),
    # watch: at most 200 user ids
    bad("hello", "watch", 3, "number"),
    bad("hello", "watch", list(range(1, 202)), "201-ids"),
    bad("hello", "watch", [1, 0], "zero-id"),
    bad("hello", "watch", [1, True], "bool-id"),
    bad("hello", "watch", ["1"], "string-id"),
    bad("hello", "watch", [2**53], "beyond-js-safe-int"),
]


@pytest.mark.parametrize(("frame_type", "field", "value"), BAD_VALUES)
def test_a_mistyped_or_out_of_range_field_is_an_invalid_message_with_the_id(frame_type, field,
                                                                           value):
    # given an otherwise valid frame
    frame = {"id": "f1", "type": frame_type, **BASE[frame_type], field: value}
    # when
    error = refused(text(frame))
    # then
    assert (error.code, error.frame_id) == ("invalid_message", "f1")
    assert error.message.startswith(f"'{field}' ")


def test_an_ack_with_a_bad_seq_and_no_id_is_an_invalid_message_without_id():
    # given / when
    error = refused(text({"type": "ack", "seq": -1}))
    # then
    assert (error.code, error.frame_id) == ("invalid_message", None)


# ---- numbers that JSON does not have --------------------------------------------------------


@pytest.mark.parametrize("raw", [
    pytest.param('{"id": "f1", "type": "call", "to": 2, "call_type": "video", '
                 '"extension": {"score": NaN}}', id="extension-NaN"),
    pytest.param('{"id": "f1", "type": "signal", "call_id": "c", '
                 '"payload": {"candidate": Infinity}}', id="payload-Infinity"),
    pytest.param('{"id": "f1", "type": "signal", "call_id": "c", '
                 '"payload": {"bitrate": -Infinity}}', id="payload-minus-Infinity"),
])
def test_nan_and_infinity_are_not_json(raw):
    # given a frame using JavaScript's non-JSON number literals (JSON.stringify never emits
    # them; PostgreSQL's jsonb refuses them when the extension or relayed payload is stored)
    # when
    error = refused(raw)
    # then
    assert (error.code, error.frame_id) == ("invalid_message", None)
