"""The wire format of client frames: parsing and validation, no I/O.

A frame that fails here gets an error reply and changes nothing. The limits are those of
shared/spec/protocol.md; see docs/protocol.md for Duet's additions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable

from calls.domain.machine import CallType, Milestone

# A frame larger than this is refused unread: bounds the work one client can ask of the server.
MAX_FRAME_BYTES = 16 * 1024
# Client frame ids and device ids are client-made; this bounds what we store per frame.
MAX_ID_CHARS = 64
# A call's extension travels in every call.state event of the call.
MAX_EXTENSION_BYTES = 4 * 1024
# CallAPI's ring timeout bounds.
MIN_TIMEOUT_MS = 5_000
MAX_TIMEOUT_MS = 120_000
MAX_REASON_CHARS = 200
MAX_CALL_ID_CHARS = 32
MAX_INT = 2**53 - 1  # the largest integer JavaScript clients represent exactly


class ProtocolError(Exception):
    def __init__(self, code: str, message: str, frame_id: str | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.frame_id = frame_id


@dataclass(frozen=True)
class Frame:
    type: str
    id: str | None
    fields: dict[str, Any]


Validator = Callable[[str, Any], Any]


def _string(max_chars: int, min_chars: int = 1) -> Validator:
    def check(name: str, value: Any) -> str:
        if not isinstance(value, str):
            raise ValueError(f"'{name}' must be a string")
        if not min_chars <= len(value) <= max_chars:
            raise ValueError(f"'{name}' must be {min_chars} to {max_chars} characters")
        return value
    return check


def _integer(minimum: int, maximum: int = MAX_INT) -> Validator:
    def check(name: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"'{name}' must be an integer")
        if not minimum <= value <= maximum:
            raise ValueError(f"'{name}' must be between {minimum} and {maximum}")
        return value
    return check


def _boolean(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"'{name}' must be true or false")
    return value


def _choice(enum_cls) -> Validator:
    allowed = [member.value for member in enum_cls]

    def check(name: str, value: Any):
        if value not in allowed:
            raise ValueError(f"'{name}' must be one of {', '.join(allowed)}")
        return enum_cls(value)
    return check


def _object(max_bytes: int | None = None) -> Validator:
    def check(name: str, value: Any) -> dict:
        if not isinstance(value, dict):
            raise ValueError(f"'{name}' must be an object")
        encoded = json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        if max_bytes is not None and len(encoded) > max_bytes:
            raise ValueError(f"'{name}' must be at most {max_bytes} bytes as JSON")
        return value
    return check


MAX_COSTS_ENTRIES = 20


def _costs(name: str, value: Any) -> dict[str, int]:
    """Client-measured cost nodes: {"node name": milliseconds}."""
    if not isinstance(value, dict) or len(value) > MAX_COSTS_ENTRIES:
        raise ValueError(f"'{name}' must be an object of at most {MAX_COSTS_ENTRIES} entries")
    for key, ms in value.items():
        if len(key) > MAX_ID_CHARS or isinstance(ms, bool) or not isinstance(ms, (int, float)) \
                or not 0 <= ms <= 3_600_000:
            raise ValueError(f"'{name}' maps names of at most {MAX_ID_CHARS} characters to "
                             "milliseconds from 0 to 3600000")
    return {key: int(ms) for key, ms in value.items()}


# How many users one device may watch the presence of.
MAX_WATCH_IDS = 200


def _id_list(name: str, value: Any) -> list[int]:
    if not isinstance(value, list) or len(value) > MAX_WATCH_IDS or any(
            isinstance(item, bool) or not isinstance(item, int) or not 1 <= item <= MAX_INT
            for item in value):
        raise ValueError(f"'{name}' must be a list of at most {MAX_WATCH_IDS} user ids")
    return list(dict.fromkeys(value))


REQUIRED, OPTIONAL = True, False
_CALL_ID = (_string(MAX_CALL_ID_CHARS), REQUIRED)
_REASON = (_string(MAX_REASON_CHARS, min_chars=0), OPTIONAL)

SCHEMAS: dict[str, dict[str, tuple[Validator, bool]]] = {
    "hello": {"device_id": (_string(MAX_ID_CHARS), REQUIRED), "last_seq": (_integer(0), OPTIONAL),
              "watch": (_id_list, OPTIONAL), "media_reset": (_boolean, OPTIONAL),
              "event_batches": (_boolean, OPTIONAL)},
    "call": {
        "to": (_integer(1), REQUIRED),
        "call_type": (_choice(CallType), REQUIRED),
        "extension": (_object(MAX_EXTENSION_BYTES), OPTIONAL),
        "timeout_ms": (_integer(MIN_TIMEOUT_MS, MAX_TIMEOUT_MS), OPTIONAL),
        "room": (_integer(1), OPTIONAL),
        "wait_first_frame": (_boolean, OPTIONAL),
    },
    "cancel": {"call_id": _CALL_ID, "reason": _REASON},
    "accept": {"call_id": _CALL_ID, "wait_first_frame": (_boolean, OPTIONAL),
               "first_remote_frame": (_boolean, OPTIONAL), "costs": (_costs, OPTIONAL)},
    "reject": {"call_id": _CALL_ID, "reason": _REASON},
    "hangup": {"call_id": _CALL_ID, "reason": _REASON},
    "media": {
        "call_id": _CALL_ID,
        "milestone": (_choice(Milestone), REQUIRED),
        "at_ms": (_integer(0), OPTIONAL),
        "code": (_string(MAX_REASON_CHARS), OPTIONAL),
        "costs": (_costs, OPTIONAL),
    },
    "signal": {"call_id": _CALL_ID, "payload": (_object(), REQUIRED),
               "to_device": (_string(MAX_ID_CHARS), OPTIONAL)},
    "token": {"call_id": _CALL_ID},
    "ack": {"seq": (_integer(0), REQUIRED)},
}
# Frames that get no reply.
UNANSWERED = frozenset({"ack"})


def _refuse_constant(name: str):
    """NaN and Infinity are not JSON (and PostgreSQL's jsonb refuses them)."""
    raise ValueError(f"{name} is not valid JSON")


def parse_frame(text: str | bytes | None) -> Frame:
    """Parse and validate one client frame. Raises :class:`ProtocolError`."""
    if text is None:
        raise ProtocolError("invalid_message", "frames must be JSON text")
    raw = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    if len(raw) > MAX_FRAME_BYTES:
        raise ProtocolError("too_large", f"a frame may be at most {MAX_FRAME_BYTES} bytes")
    try:
        data = json.loads(raw, parse_constant=_refuse_constant)
    except (ValueError, UnicodeDecodeError):
        raise ProtocolError("invalid_message", "the frame is not valid JSON") from None
    if not isinstance(data, dict):
        raise ProtocolError("invalid_message", "a frame must be a JSON object")
    frame_id = data.get("id")
    if frame_id is not None and not (isinstance(frame_id, str) and 0 < len(frame_id) <= MAX_ID_CHARS):
        raise ProtocolError("invalid_message", f"'id' must be a string of 1 to {MAX_ID_CHARS} characters")
    kind = data.get("type")
    if not isinstance(kind, str):
        raise ProtocolError("invalid_message", "'type' must be a string", frame_id)
    schema = SCHEMAS.get(kind)
    if schema is None:
        raise ProtocolError("unknown_type", f"unknown frame type '{kind[:40]}'", frame_id)
    if frame_id is None and kind not in UNANSWERED:
        raise ProtocolError("invalid_message", "'id' is required")
    fields: dict[str, Any] = {}
    for name, (check, required) in schema.items():
        if name not in data or data[name] is None:
            if required:
                raise ProtocolError("invalid_message", f"'{name}' is required", frame_id)
            continue
        try:
            fields[name] = check(name, data[name])
        except ValueError as error:
            raise ProtocolError("invalid_message", str(error), frame_id) from None
    return Frame(type=kind, id=frame_id, fields=fields)


def reply_ok(frame_id: str | None, data: dict | None = None) -> dict:
    return {"type": "reply", "id": frame_id, "ok": True, "data": data or {}}


def reply_error(frame_id: str | None, code: str, message: str) -> dict:
    return {"type": "reply", "id": frame_id, "ok": False, "error": {"code": code, "message": message}}
