"""The channel layer: channels-redis's pub/sub layer, plus several groups' messages in one send.

A call transaction publishes one message to each of its users' groups (calls.events.publish),
usually two: the caller's and the callee's. channels-redis publishes one message per Redis round
trip, under a lock per shard, so the second user's message waited for the first one's answer: at
10 cycles/s that wait was 0.67 ms of the invite's 6.5 ms (p50, docs/benchmarks.md, "One Redis
round trip per transaction"). :meth:`PubSubChannelLayer.group_send_many` writes a transaction's
messages as one Redis pipeline (plain PUBLISH commands, no MULTI): one write, one round trip,
one hand-off to the server's loop, and the same messages, in the same order, as separate
``group_send`` calls.

Local delivery: a message for a group whose sockets the caller names and which all live in this
process goes straight into their queues (a put, 0.007 ms, against 0.2 ms of CPU and a Redis
round trip through channels-redis). Only callers that read the sockets under the right lock may
name them (calls.services._lock_profiles_where, calls.events.publish); everything else goes
through Redis.

Everything else is channels-redis's own. ``group_send_many`` uses the pub/sub layer's internals
(its shards and their lock, its channel queues and groups), so ``requirements.txt`` pins channels-redis and
``tests/test_channel_layer.py`` checks the messages against real Redis subscribers.
"""

from __future__ import annotations

from channels_redis.pubsub import RedisPubSubChannelLayer


class PubSubChannelLayer(RedisPubSubChannelLayer):
    async def group_send_many(self, messages: list[tuple[str, dict]],
                              sockets: dict[str, tuple[str, ...] | None] | None = None) -> None:
        """Send each ``(group, message)`` as ``group_send`` would, in order, with one Redis round
        trip per shard. A failure (Redis unreachable) raises, as ``group_send`` does; the messages
        of that shard may then be lost, which the callers recover from (calls.events).

        ``sockets`` may name, per group, every channel its members can have anywhere (read under
        a lock that makes it complete: calls.services). A group whose named channels all live in
        this process (none at all included) gets its message from here, into its members' queues,
        without Redis: no other process has a member to send it to. A group not named goes
        through Redis as usual."""
        layer = self._get_layer()
        by_shard: dict[object, list[tuple[str, bytes]]] = {}
        for group, message in messages:
            channel = layer._get_group_channel_name(group)
            known = sockets.get(group) if sockets else None
            if known is not None and all(name in layer.channels for name in known):
                data = self.serialize(message)
                for member in layer.groups.get(channel, ()):
                    queue = layer.channels.get(member)
                    if queue is not None:
                        queue.put_nowait(data)
                continue
            by_shard.setdefault(layer._get_shard(channel), []).append(
                (channel, self.serialize(message)))
        for shard, published in by_shard.items():
            async with shard._lock:
                shard._ensure_redis()
                pipeline = shard._redis.pipeline(transaction=False)
                for channel, data in published:
                    pipeline.publish(channel, data)
                await pipeline.execute()


async def group_send_many(layer, messages: list[tuple[str, dict]],
                          sockets: dict[str, tuple[str, ...] | None] | None = None) -> None:
    """``layer.group_send_many`` where the layer has it; otherwise each message in turn (the
    in-memory layer, channels-redis's list layer; ``sockets`` does not matter to them). Every
    message is tried; the first failure is raised after the others were sent."""
    many = getattr(layer, "group_send_many", None)
    if many is not None:
        await many(messages, sockets)
        return
    failure = None
    for group, message in messages:
        try:
            await layer.group_send(group, message)
        except Exception as error:  # noqa: BLE001 - re-raised below, after the rest were sent
            failure = failure or error
    if failure is not None:
        raise failure
