"""Media credentials for a call: WebRTC (the default) or Agora RTC with tokens made here.

Agora is used when both ``AGORA_APP_ID`` and ``AGORA_APP_CERTIFICATE`` are set. Tokens are built
locally by agora-token-builder (no network); they expire after ``AGORA_TOKEN_TTL_S`` and are
renewed through the ``token`` frame or pushed as ``call.media`` by the renewal task.
"""

from __future__ import annotations

from dataclasses import dataclass

from agora_token_builder import RtcTokenBuilder
from django.conf import settings

# Agora's role for a user who publishes (1 = publisher).
AGORA_ROLE_PUBLISHER = 1
# Renew a token this long before it expires: long enough for a retry after a failure.
TOKEN_RENEW_BEFORE_S = 60


@dataclass(frozen=True)
class Credentials:
    media: dict
    expires_at_ms: int | None


def agora_enabled() -> bool:
    return bool(settings.AGORA_APP_ID and settings.AGORA_APP_CERTIFICATE)


def engine_config() -> dict:
    """The media part of ``hello``'s config: which engine the clients load."""
    if agora_enabled():
        return {"engine": "agora", "app_id": settings.AGORA_APP_ID}
    return {"engine": "webrtc", "ice_servers": settings.DUET_ICE_SERVERS}


def credentials_for(*, channel: str, user_id: int, now_ms: int) -> Credentials:
    if not agora_enabled():
        return Credentials({"engine": "webrtc", "ice_servers": settings.DUET_ICE_SERVERS}, None)
    expires_s = now_ms // 1000 + settings.AGORA_TOKEN_TTL_S
    token = RtcTokenBuilder.buildTokenWithUid(
        settings.AGORA_APP_ID, settings.AGORA_APP_CERTIFICATE, channel, user_id,
        AGORA_ROLE_PUBLISHER, expires_s)
    media = {"engine": "agora", "app_id": settings.AGORA_APP_ID, "channel": channel,
             "uid": user_id, "token": token, "expires_at_ms": expires_s * 1000}
    return Credentials(media, expires_s * 1000)
