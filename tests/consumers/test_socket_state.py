"""What a socket keeps while it idles: the door (calls.gate, run by the consumer's connect) leaves
a small user and nothing of the session or the unused scope; presence state is compact (sorted ids, one status byte each) and
still de-duplicates per socket; a large community's default watch list is the user's latest
call partners, not the same 200 people for everyone."""

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model
from django.utils import timezone

from calls import devices, gate, selectors
from calls.consumers import CallConsumer
from tests.support import ORIGIN, Device, session_cookie

pytestmark = pytest.mark.django_db(transaction=True)


async def push_presence(user_id: int, status: str) -> None:
    """What calls.devices.presence_publish sends to the watchers of ``user_id``."""
    await get_channel_layer().group_send(devices.presence_group(user_id), {
        "type": "presence.changed", "user_id": user_id, "status": status})


# ---- the door ---------------------------------------------------------------------------------


async def test_the_socket_user_holds_only_its_id_and_username(alice):
    cookie = await database_sync_to_async(session_cookie)(alice)
    user = await database_sync_to_async(gate.socket_user)(cookie)
    assert (user.pk, user.username) == (alice.pk, "alice")
    assert not hasattr(user, "__dict__")  # two slots, nothing else can be cached on it
    model = user.model()
    assert isinstance(model, get_user_model()) and model.is_authenticated
    assert (model.pk, model.get_username()) == (alice.pk, "alice")
    assert {"password", "email", "last_login", "date_joined"} <= model.get_deferred_fields()


@pytest.mark.parametrize("cookie", [None, "", "no-such-session"])
async def test_no_session_is_no_user(db, cookie):
    assert await database_sync_to_async(gate.socket_user)(cookie) is None


async def test_the_socket_keeps_only_the_scope_it_reads(alice):
    from project.asgi import application

    cookie = await database_sync_to_async(session_cookie)(alice)
    communicator = WebsocketCommunicator(application, "/ws/calls/", headers=[
        (b"cookie", f"sessionid={cookie}".encode()), (b"origin", ORIGIN)])
    connected, _ = await communicator.connect()
    assert connected
    # the coroutine daphne runs is the consumer's own: no router or middleware frame around it
    consumer = communicator.future.get_coro().cr_frame.f_locals["self"]
    assert isinstance(consumer, CallConsumer)
    assert set(consumer.scope) == {"type", "path"}
    await communicator.disconnect()


async def test_a_socket_elsewhere_is_refused(alice):
    from project.asgi import application

    cookie = await database_sync_to_async(session_cookie)(alice)
    communicator = WebsocketCommunicator(application, "/ws/other/", headers=[
        (b"cookie", f"sessionid={cookie}".encode()), (b"origin", ORIGIN)])
    connected, _ = await communicator.connect()
    assert not connected


async def test_a_foreign_origin_is_refused(alice):
    from project.asgi import application

    cookie = await database_sync_to_async(session_cookie)(alice)
    communicator = WebsocketCommunicator(application, "/ws/calls/", headers=[
        (b"cookie", f"sessionid={cookie}".encode()), (b"origin", b"http://evil.example")])
    connected, _ = await communicator.connect()
    assert not connected


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


# ---- presence state -----------------------------------------------------------------------------


async def test_presence_is_pushed_once_per_change_from_the_hello_snapshot(opened, alice, carol):
    await opened(alice)
    watcher = await Device.open(carol, hello=False)
    data = await watcher.ok("hello", device_id="carol-w", watch=[alice.pk])
    assert data["presence"] == [{"user_id": alice.pk, "status": "online"}]
    await push_presence(alice.pk, "online")  # what the snapshot said: not news
    await push_presence(alice.pk, "busy")
    await push_presence(alice.pk, "busy")
    await push_presence(alice.pk, "online")
    await watcher.presence_of(alice.pk, "busy")
    await watcher.presence_of(alice.pk, "online")
    await watcher.assert_silent()
    assert watcher.presence == []
    await watcher.close()


async def test_presence_follows_a_watch_list_in_any_order(opened, alice, bob, carol, dave):
    watcher = await Device.open(dave, hello=False)
    data = await watcher.ok("hello", device_id="dave-w", watch=[carol.pk, alice.pk, bob.pk])
    assert [item["user_id"] for item in data["presence"]] == [carol.pk, alice.pk, bob.pk]
    for user in (carol, alice, bob):
        await push_presence(user.pk, "busy")
    for user in (bob, carol, alice):
        await watcher.presence_of(user.pk, "busy")
    await push_presence(dave.pk, "online")  # not watched
    await watcher.assert_silent()
    assert watcher.presence == []
    await watcher.close()


async def test_hello_again_changes_whom_the_socket_watches(opened, alice, bob, carol):
    watcher = await Device.open(carol, hello=False)
    await watcher.ok("hello", device_id="carol-w", watch=[alice.pk])
    await watcher.ok("hello", device_id="carol-w", watch=[bob.pk])
    await push_presence(alice.pk, "busy")
    await push_presence(bob.pk, "busy")
    await watcher.presence_of(bob.pk, "busy")
    await watcher.assert_silent()
    assert watcher.presence == []
    await watcher.ok("hello", device_id="carol-w", watch=[])
    await push_presence(bob.pk, "online")
    await watcher.assert_silent()
    assert watcher.presence == []
    await watcher.close()


# ---- the default watch list --------------------------------------------------------------------


def make_crowd(count: int) -> None:
    """``count`` more active users, named to sort before everyone else."""
    get_user_model().objects.bulk_create(
        get_user_model()(username=f"aaa-crowd-{index:04d}") for index in range(count))


async def test_a_small_community_watches_everyone_else_by_default(opened, alice, bob, carol):
    watcher = await opened(carol)
    assert [item["user_id"] for item in watcher.hello_data["presence"]] == [alice.pk, bob.pk]


async def test_a_large_community_watches_the_latest_call_partners_by_default(
        opened, alice, bob, carol, dave):
    await database_sync_to_async(make_crowd)(selectors.MAX_WATCHED_USERS)
    c = await opened(carol)
    await opened(alice)
    await opened(bob)
    for callee in (alice, bob, alice):
        call_id = (await c.ok("call", to=callee.pk, call_type="audio"))["call_id"]
        await c.ok("cancel", call_id=call_id)
    await opened(dave)  # has called nobody
    watcher = await opened(carol)
    assert watcher.hello_data["presence"] == [{"user_id": alice.pk, "status": "online"},
                                              {"user_id": bob.pk, "status": "online"}]
    await push_presence(bob.pk, "busy")
    await watcher.presence_of(bob.pk, "busy")
    loner = await opened(dave)
    assert loner.hello_data["presence"] == []


def test_call_partners_skip_inactive_users_and_keep_the_limit(alice, bob, carol, dave):
    from calls.models import CallSession

    make_crowd(selectors.MAX_WATCHED_USERS)
    now = timezone.now()
    for callee in (bob, dave, alice, bob):
        CallSession.objects.create(call_id=f"c{callee.pk}-{CallSession.objects.count()}",
                                   caller=carol, callee=callee, call_type="audio",
                                   channel="x", timeout_ms=15000, deadline_at=now,
                                   created_at=now)
    CallSession.objects.create(call_id="to-carol", caller=alice, callee=carol,
                               call_type="audio", channel="x", timeout_ms=15000,
                               deadline_at=now, created_at=now)
    assert selectors.default_watch_list(user_id=carol.pk) == [alice.pk, bob.pk, dave.pk]
    dave.is_active = False
    dave.save()
    assert selectors.default_watch_list(user_id=carol.pk) == [alice.pk, bob.pk]
    assert selectors.recent_call_partners(user_id=carol.pk, limit=1) == [alice.pk]
    assert selectors.default_watch_list(user_id=alice.pk) == [carol.pk]


# ---- a client gone before its disconnect arrives ----------------------------------------------


async def test_an_event_for_a_client_already_gone_is_dropped_and_the_socket_lives_on():
    # given a socket watching user 7, whose transport is daphne's for a client that has closed
    # (a stand-in raising daphne's own exception: the race cannot be timed in a test)
    from array import array

    from autobahn.exception import Disconnected

    consumer = CallConsumer()
    consumer.channel_name = "test.gone"
    consumer.watched = array("q", [7])
    consumer.presence_sent = bytearray(1)

    async def closed_transport(message):
        raise Disconnected("Attempt to send on a closed protocol")
    consumer.base_send = closed_transport
    # when a presence change for user 7 reaches it before its disconnect does
    await consumer.presence_changed({"type": "presence.changed", "user_id": 7, "status": "busy"})
    # then nothing is raised (an exception would end the consumer before its disconnect ran,
    # leaving the device's connection row and heartbeat behind) and the change is noted
    assert consumer.presence_sent == bytearray([3])  # busy (PRESENCE_STATUSES, from 1)
