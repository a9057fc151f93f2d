"""Where the call socket lives (project/asgi.py routes it; the JS client connects to it)."""

CALL_SOCKET_PATH = "/ws/calls/"
