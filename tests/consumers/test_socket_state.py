"""What a socket keeps while it idles: the door (project.asgi.CallSocketGate) leaves a small user
and nothing of the session."""

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AnonymousUser

from tests.support import ORIGIN, Device, session_cookie

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
async def opened():
    opened_devices = []

    async def open_device(user, **options):
        device = await Device.open(user, **options)
        opened_devices.append(device)
        return device

    yield open_device
    for device in opened_devices:
        await device.close()


# ---- the door ---------------------------------------------------------------------------------


async def test_the_socket_user_holds_only_its_id_and_username(alice):
    from project.asgi import socket_user

    cookie = await database_sync_to_async(session_cookie)(alice)
    user = await database_sync_to_async(socket_user)(cookie)
    assert isinstance(user, get_user_model()) and user.is_authenticated
    assert (user.pk, user.get_username()) == (alice.pk, "alice")
    assert {"password", "email", "last_login", "date_joined"} <= user.get_deferred_fields()
    assert "profile" not in user._state.fields_cache


@pytest.mark.parametrize("cookie", [None, "", "no-such-session"])
async def test_no_session_is_anonymous(db, cookie):
    from project.asgi import socket_user

    assert isinstance(await database_sync_to_async(socket_user)(cookie), AnonymousUser)


async def test_a_session_from_before_a_password_change_is_refused(alice):
    from project.asgi import application

    cookie = await database_sync_to_async(session_cookie)(alice)
    alice.set_password("a new password")
    await database_sync_to_async(alice.save)()
    communicator = WebsocketCommunicator(application, "/ws/calls/", headers=[
        (b"cookie", f"sessionid={cookie}".encode()), (b"origin", ORIGIN)])
    connected, _ = await communicator.connect()
    assert connected
    assert await communicator.receive_output() == {"type": "websocket.close", "code": 4401}


async def test_a_socket_without_origin_is_refused(alice):
    from project.asgi import application

    cookie = await database_sync_to_async(session_cookie)(alice)
    communicator = WebsocketCommunicator(application, "/ws/calls/", headers=[
        (b"cookie", f"sessionid={cookie}".encode())])
    connected, _ = await communicator.connect()
    assert not connected


async def test_hello_still_reports_the_display_name(opened, alice):
    device = await opened(alice)
    assert device.hello_data["user"] == {"id": alice.pk, "username": "alice",
                                         "display_name": "Alice"}
