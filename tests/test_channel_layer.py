"""project/channel_layer.py: several groups' messages in one send, against real Redis subscribers."""

from __future__ import annotations

import asyncio

import pytest
from channels.layers import InMemoryChannelLayer
from django.conf import settings
from redis.exceptions import ConnectionError as RedisConnectionError

from project.channel_layer import PubSubChannelLayer, group_send_many


def _redis_layer(prefix: str, url: str | None = None) -> PubSubChannelLayer:
    return PubSubChannelLayer(hosts=[{"address": url or settings.REDIS_URL,
                                      "socket_timeout": 30}], prefix=prefix)


async def _next(layer, channel):
    return await asyncio.wait_for(layer.receive(channel), timeout=5)


@pytest.fixture
def redis_url():
    if not settings.REDIS_URL:
        pytest.skip("needs Redis (scripts/testenv.py provides one)")
    return settings.REDIS_URL


async def test_one_send_reaches_every_group_in_order_on_this_process_and_another(redis_url):
    # given two processes' layers on one Redis (two layer objects, two subscriber connections):
    # a device of user 1 here, and devices of users 1 and 2 on the other process
    here, there = _redis_layer("t-many"), _redis_layer("t-many")
    mine = await here.new_channel()
    theirs_1, theirs_2 = await there.new_channel(), await there.new_channel()
    await here.group_add("user.1", mine)
    await there.group_add("user.1", theirs_1)
    await there.group_add("user.2", theirs_2)
    try:
        # when one send carries three messages for two groups
        await here.group_send_many([
            ("user.1", {"type": "user.events", "n": 1}),
            ("user.2", {"type": "user.events", "n": 2}),
            ("user.1", {"type": "user.events", "n": 3}),
        ])
        # then each member of each group gets its group's messages, in the order sent
        assert [(await _next(here, mine))["n"] for _ in range(2)] == [1, 3]
        assert [(await _next(there, theirs_1))["n"] for _ in range(2)] == [1, 3]
        assert (await _next(there, theirs_2))["n"] == 2
        # and nothing else came
        for layer, channel in ((here, mine), (there, theirs_1), (there, theirs_2)):
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(layer.receive(channel), timeout=0.2)
    finally:
        await here.flush()
        await there.flush()


async def test_a_send_to_an_unreachable_redis_raises_as_group_send_does(redis_url):
    # given a layer whose Redis does not answer (nothing listens on port 1)
    layer = _redis_layer("t-down", "redis://127.0.0.1:1/0")
    try:
        # when it sends, then the failure comes back to the caller (calls.events logs it and the
        # clients recover the events by replay), as it does for group_send
        with pytest.raises(RedisConnectionError):
            await layer.group_send_many([("user.1", {"type": "user.events"})])
        with pytest.raises(RedisConnectionError):
            await layer.group_send("user.1", {"type": "user.events"})
    finally:
        await layer.flush()


async def test_a_layer_without_group_send_many_gets_each_message_in_turn():
    # given the in-memory layer (the embedded default), with members of two groups
    layer = InMemoryChannelLayer()
    first, second = await layer.new_channel(), await layer.new_channel()
    await layer.group_add("user.1", first)
    await layer.group_add("user.2", second)
    # when the helper sends three messages
    await group_send_many(layer, [("user.1", {"type": "x", "n": 1}), ("user.2", {"type": "x", "n": 2}),
                                  ("user.1", {"type": "x", "n": 3})])
    # then they arrive as three group_send calls would deliver them
    assert [(await _next(layer, first))["n"] for _ in range(2)] == [1, 3]
    assert (await _next(layer, second))["n"] == 2


async def test_a_failed_message_does_not_stop_the_others_and_its_error_is_raised():
    # given a layer that fails the second of three sends
    layer = InMemoryChannelLayer()
    member = await layer.new_channel()
    await layer.group_add("user.1", member)
    real_send = layer.group_send

    async def failing_send(group, message):
        if message["n"] == 2:
            raise OSError("the second send failed")
        await real_send(group, message)
    layer.group_send = failing_send
    # when the helper sends all three, then the failure is raised after the third went out
    with pytest.raises(OSError, match="second"):
        await group_send_many(layer, [("user.1", {"type": "x", "n": n}) for n in (1, 2, 3)])
    assert [(await _next(layer, member))["n"] for _ in range(2)] == [1, 3]


async def test_a_group_whose_sockets_all_live_here_gets_its_message_without_redis(redis_url):
    # given this process's layer with a member of user.1, and another process's layer with a
    # spy subscribed to user.1 and user.4 through Redis, and a member of user.2
    here, there = _redis_layer("t-local"), _redis_layer("t-local")
    mine = await here.new_channel()
    spy, theirs = await there.new_channel(), await there.new_channel()
    await here.group_add("user.1", mine)
    for group in ("user.1", "user.4"):
        await there.group_add(group, spy)
    await there.group_add("user.2", theirs)
    try:
        # when one send names user.1's sockets (only this process's), user.2's (the other
        # process's), user.4's (none at all), and says nothing of user.3
        await here.group_send_many(
            [("user.1", {"type": "x", "n": 1}), ("user.2", {"type": "x", "n": 2}),
             ("user.3", {"type": "x", "n": 3}), ("user.4", {"type": "x", "n": 4})],
            {"user.1": (mine,), "user.2": (theirs,), "user.4": ()})
        # then user.1's member here has its message, and the spy never saw it (no Redis), nor
        # user.4's (nobody to send it to); user.2's went through Redis to the other process
        assert (await _next(here, mine))["n"] == 1
        assert (await _next(there, theirs))["n"] == 2
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(there.receive(spy), timeout=0.3)
    finally:
        await here.flush()
        await there.flush()
