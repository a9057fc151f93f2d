"""The bare relay: the floor that Duet's figures are compared with.

A WebSocket consumer that forwards each text frame to its peer through the channel layer and does
nothing else: no session, no database, no JSON parsing. The route names the pair and the side;
each socket joins the group of its side (``relay.<pair>.<side>``) and sends to the other side's
group, as Duet sends to a user's group. Served by daphne with the project's settings, so the
channel layer (DUET_CHANNEL_LAYER, REDIS_URL, DUET_LAYER_PREFIX) is exactly Duet's.

    daphne -b 127.0.0.1 -p 8101 bench.relay_app:application
"""

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
django.setup()

from channels.generic.websocket import AsyncWebsocketConsumer  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path  # noqa: E402

OTHER_SIDE = {"a": "b", "b": "a"}


class RelayConsumer(AsyncWebsocketConsumer):
    async def connect(self):
        pair = self.scope["url_route"]["kwargs"]["pair"]
        side = self.scope["url_route"]["kwargs"]["side"]
        if side not in OTHER_SIDE:
            await self.close()
            return
        self.group = f"relay.{pair}.{side}"
        self.peer_group = f"relay.{pair}.{OTHER_SIDE[side]}"
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()

    async def disconnect(self, code):
        if hasattr(self, "group"):
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive(self, text_data=None, bytes_data=None):
        await self.channel_layer.group_send(self.peer_group,
                                            {"type": "relay.frame", "text": text_data})

    async def relay_frame(self, message):
        await self.send(text_data=message["text"])


application = ProtocolTypeRouter({
    "websocket": URLRouter([path("relay/<int:pair>/<str:side>/", RelayConsumer.as_asgi())]),
})
