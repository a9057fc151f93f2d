"""ASGI entry point: Django for HTTP, the authenticated call socket for WebSockets."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
django_asgi_app = get_asgi_application()  # sets Django up before anything imports models

from channels.security.websocket import WebsocketDenier  # noqa: E402

from calls.consumers import CallConsumer  # noqa: E402
from calls.routing import CALL_SOCKET_PATH  # noqa: E402


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


def application(scope, receive, send):
    """Route a connection: HTTP to Django, the call socket to a fresh CallConsumer.

    A plain function returning the coroutine to run, not an ``async def`` awaiting it, and no
    router or middleware objects around the consumer: each of those stays suspended for as long
    as a socket is open, with a coroutine frame and often a copy of the scope, and at 10,000 idle
    sockets per process that is what the memory goes to (docs/benchmarks.md, "The targets,
    stated plainly": idle users).
    The door (Origin, session user) is the consumer's ``connect`` (calls.gate).
    """
    kind = scope["type"]
    if kind == "http":
        return django_asgi_app(scope, receive, send)
    if kind == "websocket":
        if scope["path"] == CALL_SOCKET_PATH:
            return CallConsumer()(scope, receive, send)
        return WebsocketDenier()(scope, receive, send)
    raise ValueError(f"no application for the ASGI connection type {kind!r}")


# Called once per connection with (scope, receive, send) -- ASGI 3, not the (scope) -> app form
# asgiref would otherwise assume for a plain function.
application._asgi_single_callable = True
