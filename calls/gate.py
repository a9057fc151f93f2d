"""The call socket's door: the Origin check and the signed-in user, kept small.

It does what ``AllowedHostsOriginValidator(AuthMiddlewareStack(consumer))`` does: refuse a
foreign Origin, read the session cookie, and find the session's user (verified against its
session hash, as Django does). It is called from the consumer's ``connect`` rather than wrapped
around it as middleware, because a middleware stays suspended in its ``await`` for as long as the
socket is open, holding its coroutine frame, its copy of the scope and whatever it looked up:
about 7 KiB per idle socket for Channels' stack, and still 2-3 KiB for a one-layer gate
(docs/benchmarks.md, "The targets, stated plainly": idle users). What the socket keeps
afterwards is the user's id and username (:class:`SocketUser`).
"""

from __future__ import annotations

from types import SimpleNamespace
from urllib.parse import urlparse

from channels.security.websocket import AllowedHostsOriginValidator
from django.conf import settings
from django.contrib import auth
from django.contrib.auth import get_user_model
from django.http.cookie import parse_cookie
from django.utils.module_loading import import_string

# Scope keys the call socket does not read after its door; dropped so that an idle socket does
# not keep them (daphne builds a fresh scope, and a fresh "asgi" dict, per connection).
UNUSED_SCOPE_KEYS = ("asgi", "headers", "query_string", "raw_path", "root_path", "subprotocols",
                     "client", "server", "path_remaining", "url_route", "cookies", "session")


class SocketUser:
    """What a socket remembers of its user: the id and the username.

    ``model()`` gives a User instance with only those two fields loaded (the others load on
    access), made afresh for each frame's service call: a model instance kept per socket costs
    about 750 bytes, this about 100.
    """

    __slots__ = ("pk", "username")
    is_authenticated = True

    def __init__(self, pk: int, username: str):
        self.pk = pk
        self.username = username

    def model(self):
        user_model = get_user_model()
        return user_model.from_db(None, [user_model._meta.pk.attname, user_model.USERNAME_FIELD],
                                  [self.pk, self.username])


def origin_allowed(headers) -> bool:
    """Channels' own rule (AllowedHostsOriginValidator): the Origin must match ALLOWED_HOSTS."""
    parsed = None
    for name, value in headers:
        if name == b"origin":
            try:
                parsed = urlparse(value.decode("latin1"))
            except UnicodeDecodeError:
                pass
    # Built per call (it only stores the list): settings may change, in tests at least.
    return AllowedHostsOriginValidator(None).valid_origin(parsed)


def session_key(headers) -> str | None:
    for name, value in headers:
        if name == b"cookie":
            return parse_cookie(value.decode("latin1")).get(settings.SESSION_COOKIE_NAME)
    return None


_SessionStore = None


def socket_user(session_key: str | None) -> SocketUser | None:
    """The user signed in with this session key (Django's own checks), or None. Runs in a
    database thread."""
    global _SessionStore
    if _SessionStore is None:
        _SessionStore = import_string(f"{settings.SESSION_ENGINE}.SessionStore")
    if not session_key:
        return None
    user = auth.get_user(SimpleNamespace(session=_SessionStore(session_key)))
    if not user.is_authenticated:
        return None
    return SocketUser(user.pk, user.get_username())


def trim_scope(scope: dict) -> None:
    for key in UNUSED_SCOPE_KEYS:
        scope.pop(key, None)
