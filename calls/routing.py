from django.urls import path

from calls.consumers import CallConsumer

websocket_urlpatterns = [
    path("ws/calls/", CallConsumer.as_asgi()),
]
