"""ASGI entry point: Django for HTTP, the authenticated call socket for WebSockets."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
django_asgi_app = get_asgi_application()  # sets Django up before anything imports models

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

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

application = ProtocolTypeRouter({
    "http": django_asgi_app,
    "websocket": AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
})
