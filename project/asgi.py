"""ASGI entry point: Django for HTTP, the authenticated call socket for WebSockets."""

import os
from types import SimpleNamespace
from urllib.parse import urlparse

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
django_asgi_app = get_asgi_application()  # sets Django up before anything imports models

from channels.db import database_sync_to_async  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator, WebsocketDenier  # noqa: E402
from django.conf import settings  # noqa: E402
from django.contrib import auth  # noqa: E402
from django.contrib.auth.models import AnonymousUser  # noqa: E402
from django.http.cookie import parse_cookie  # noqa: E402
from django.utils.module_loading import import_string  # noqa: E402

from calls.routing import websocket_urlpatterns  # noqa: E402


def _plain_autobahn_log_arguments() -> None:
    """autobahn (daphne's WebSocket layer) builds the arguments of a debug log line for every
    frame it sends, colouring them with click when click is installed (Celery installs it): about
    4 % of a loaded node's CPU (docs/benchmarks.md). Without colour the same arguments are plain
    strings; autobahn's own console output is the only thing that changes."""
    try:
        import autobahn.util
    except ImportError:
        return
    autobahn.util._HAS_CLICK = False


_plain_autobahn_log_arguments()


class CallSocketGate:
    """The call socket's door: the origin check and the signed-in user, in one layer.

    It does what ``AllowedHostsOriginValidator(AuthMiddlewareStack(app))`` does: refuse a foreign
    Origin, read the session cookie, and put the session's user (verified against its session
    hash, as Django does) or AnonymousUser in ``scope["user"]``. But a middleware stays suspended
    in its ``await`` for as long as the socket is open, with everything it holds: that stack kept
    five coroutine frames, five copies of the scope, the parsed cookies, the session and a full
    user (with the profile ``hello`` cached on it), about 7 KiB per idle socket (docs/memory.md).

    Here the work is done in helpers whose locals are gone before the socket idles; what stays
    is this frame, one copy of the scope and a user holding only its id and username (a User
    instance, so that it can be assigned to foreign keys; other fields load on access).
    """

    def __init__(self, inner):
        self.inner = inner
        self.origins = AllowedHostsOriginValidator(inner)  # for its valid_origin()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "websocket":
            raise ValueError("CallSocketGate serves WebSocket connections only")
        if not self._origin_allowed(scope["headers"]):
            return await WebsocketDenier()(scope, receive, send)
        user = await database_sync_to_async(socket_user)(_session_key(scope["headers"]))
        return await self.inner(dict(scope, user=user), receive, send)

    def _origin_allowed(self, headers) -> bool:
        parsed = None
        for name, value in headers:
            if name == b"origin":
                try:
                    parsed = urlparse(value.decode("latin1"))
                except UnicodeDecodeError:
                    pass
        return self.origins.valid_origin(parsed)


def _session_key(headers) -> str | None:
    for name, value in headers:
        if name == b"cookie":
            return parse_cookie(value.decode("latin1")).get(settings.SESSION_COOKIE_NAME)
    return None


_SessionStore = None


def socket_user(session_key: str | None):
    """The user signed in with this session key (Django's own checks), kept small; else
    AnonymousUser. Runs in the database thread."""
    global _SessionStore
    if _SessionStore is None:
        _SessionStore = import_string(f"{settings.SESSION_ENGINE}.SessionStore")
    if not session_key:
        return AnonymousUser()
    user = auth.get_user(SimpleNamespace(session=_SessionStore(session_key)))
    if not user.is_authenticated:
        return user
    username_field = user.USERNAME_FIELD
    return type(user).from_db(user._state.db, [user._meta.pk.attname, username_field],
                              [user.pk, getattr(user, username_field)])


application = ProtocolTypeRouter({
    "http": django_asgi_app,
    "websocket": CallSocketGate(URLRouter(websocket_urlpatterns)),
})
