"""The scale-out bus: a Redis stream per topic read by a consumer group.

Workers read with ``XREADGROUP``, acknowledge with ``XACK`` only after their database
commit (a whole micro-batch in one round trip), and take over entries left idle by a
dead worker with ``XAUTOCLAIM``. A retry is an entry left pending until its lease has
passed; after the last attempt it moves to a dead-letter stream (``<stream>:dead``) that
an admin can read and replay. Publishing is once per key: a Lua script sets the key and
adds the entry atomically.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from routing.bus import LEASE_EXPIRED, Delivery, RetryPolicy

GROUP = "routing"
_PUBLISH_ONCE = """
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[3]) then
  return redis.call('XADD', KEYS[2], '*', 'key', ARGV[1], 'payload', ARGV[2])
end
return false
"""


class RedisStreamBus:
    """A bus on Redis Streams for many workers on many machines."""

    def __init__(
        self,
        redis: Redis,
        policy: RetryPolicy | None = None,
        *,
        prefix: str = "cc",
        dedupe_window: timedelta = timedelta(days=7),
    ) -> None:
        self.redis = redis
        self.policy = policy or RetryPolicy()
        self.prefix = prefix
        self.dedupe_window = dedupe_window
        self._publish_once = redis.register_script(_PUBLISH_ONCE)
        self._groups: set[str] = set()

    def stream(self, topic: str) -> str:
        """The stream key of a topic."""
        return f"{self.prefix}:bus:{topic}"

    async def _ensure_group(self, topic: str) -> None:
        if topic in self._groups:
            return
        try:
            await self.redis.xgroup_create(self.stream(topic), GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._groups.add(topic)

    async def publish(self, topic: str, key: str, payload: str) -> bool:
        """Add the entry unless the key was published within the dedupe window."""
        await self._ensure_group(topic)
        seen_key = f"{self.prefix}:bus:{topic}:seen:{key}"
        result = await self._publish_once(
            keys=[seen_key, self.stream(topic)],
            args=[key, payload, int(self.dedupe_window.total_seconds())],
        )
        return result is not None

    @staticmethod
    def _fields(raw: dict[Any, Any]) -> tuple[str, str]:
        def text(value: Any) -> str:
            return value.decode() if isinstance(value, bytes) else str(value)

        fields = {text(k): text(v) for k, v in raw.items()}
        return fields.get("key", ""), fields.get("payload", "")

    async def _times_delivered(self, topic: str, entry_id: str) -> int:
        pending = await self.redis.xpending_range(
            self.stream(topic), GROUP, min=entry_id, max=entry_id, count=1
        )
        return int(pending[0]["times_delivered"]) if pending else 1

    async def claim(self, topic: str, worker: str, limit: int = 50) -> list[Delivery]:
        """Take over idle entries of dead workers first, then read new ones.

        A Redis that lost its data (restarted without persistence) has no group any
        more: the group is created again and the claim retried once.
        """
        try:
            return await self._claim(topic, worker, limit)
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            self._groups.discard(topic)
            return await self._claim(topic, worker, limit)

    async def _claim(self, topic: str, worker: str, limit: int) -> list[Delivery]:
        await self._ensure_group(topic)
        deliveries: list[Delivery] = []
        idle_ms = int(self.policy.lease.total_seconds() * 1000)
        _next, claimed, _deleted = await self.redis.xautoclaim(
            self.stream(topic), GROUP, worker, min_idle_time=idle_ms, start_id="0-0", count=limit
        )
        for raw_id, raw_fields in claimed:
            if raw_fields is None:
                continue
            entry_id = raw_id.decode() if isinstance(raw_id, bytes) else str(raw_id)
            key, payload = self._fields(raw_fields)
            attempts = await self._times_delivered(topic, entry_id)
            delivery = Delivery(entry_id, topic, key, payload, attempts, worker)
            if attempts > self.policy.max_attempts:
                await self._bury(delivery, LEASE_EXPIRED)
                continue
            deliveries.append(delivery)
        room = limit - len(deliveries)
        if room > 0:
            response = await self.redis.xreadgroup(
                GROUP, worker, {self.stream(topic): ">"}, count=room
            )
            for _stream, entries in response or []:
                for raw_id, raw_fields in entries:
                    entry_id = raw_id.decode() if isinstance(raw_id, bytes) else str(raw_id)
                    key, payload = self._fields(raw_fields)
                    deliveries.append(Delivery(entry_id, topic, key, payload, 1, worker))
        return deliveries

    async def touch(self, delivery: Delivery) -> None:
        """Reset the entry's idle time, so it is not taken over while still being worked on."""
        await self.touch_many([delivery])

    async def touch_many(self, deliveries: Sequence[Delivery]) -> None:
        """Reset the idle time of entries still being worked on: one XCLAIM per worker.

        ``JUSTID`` leaves the delivery counts (the attempts) as they are.
        """
        groups: dict[tuple[str, str], list[str]] = {}
        for delivery in deliveries:
            groups.setdefault((delivery.topic, delivery.worker), []).append(str(delivery.id))
        for (topic, worker), ids in groups.items():
            await self.redis.xclaim(
                self.stream(topic), GROUP, worker, min_idle_time=0, message_ids=ids, justid=True
            )

    async def ack(self, delivery: Delivery) -> bool:
        """Acknowledge after the database commit; the entry leaves the stream."""
        return await self.ack_many([delivery]) == 1

    async def ack_many(self, deliveries: Sequence[Delivery]) -> int:
        """Acknowledge a batch after its database commit, in one round trip.

        Returns how many entries were still pending (fewer: another worker had taken
        some over; the dedupe step makes its redelivery harmless).
        """
        by_topic: dict[str, list[str]] = {}
        for delivery in deliveries:
            by_topic.setdefault(delivery.topic, []).append(str(delivery.id))
        if not by_topic:
            return 0
        async with self.redis.pipeline(transaction=True) as pipe:
            for topic, ids in by_topic.items():
                pipe.xack(self.stream(topic), GROUP, *ids)
                pipe.xdel(self.stream(topic), *ids)
            replies = await pipe.execute()
        return sum(int(acked) for acked in replies[::2])

    async def fail(self, delivery: Delivery, error: str) -> bool:
        """Retry after the policy's backoff, or dead-letter after the last attempt.

        The entry stays pending; its idle time is set so that it becomes claimable
        again once the backoff has passed (XCLAIM … IDLE), not only after a full lease.
        """
        if delivery.attempts >= self.policy.max_attempts:
            await self._bury(delivery, error)
            return True
        stream = self.stream(delivery.topic)
        lease_ms = int(self.policy.lease.total_seconds() * 1000)
        delay_ms = int(self.policy.delay(delivery.attempts).total_seconds() * 1000)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(f"{stream}:errors", str(delivery.id), error[:4000])
            pipe.xclaim(
                stream, GROUP, delivery.worker, min_idle_time=0,
                message_ids=[str(delivery.id)], idle=max(lease_ms - delay_ms, 0), justid=True,
            )
            await pipe.execute()
        return False

    async def _bury(self, delivery: Delivery, error: str) -> None:
        stream = self.stream(delivery.topic)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xadd(
                f"{stream}:dead",
                {
                    "key": delivery.key,
                    "payload": delivery.payload,
                    "error": error[:4000],
                    "attempts": str(delivery.attempts),
                    "original_id": str(delivery.id),
                },
            )
            pipe.xack(stream, GROUP, str(delivery.id))
            pipe.xdel(stream, str(delivery.id))
            pipe.hdel(f"{stream}:errors", str(delivery.id))
            await pipe.execute()

    async def dead_letters(self, topic: str, limit: int = 100) -> list[dict[str, str]]:
        """Dead entries, newest first: key, payload, error, attempts and their dead id."""
        rows = await self.redis.xrevrange(f"{self.stream(topic)}:dead", count=limit)
        result = []
        for raw_id, raw_fields in rows:
            fields = {
                (k.decode() if isinstance(k, bytes) else k): (
                    v.decode() if isinstance(v, bytes) else v
                )
                for k, v in raw_fields.items()
            }
            fields["id"] = raw_id.decode() if isinstance(raw_id, bytes) else raw_id
            result.append(fields)
        return result

    async def replay(self, topic: str, dead_id: str) -> bool:
        """Put a dead entry back on its stream with a fresh count of attempts."""
        dead_stream = f"{self.stream(topic)}:dead"
        rows = await self.redis.xrange(dead_stream, min=dead_id, max=dead_id)
        if not rows:
            return False
        key, payload = self._fields(rows[0][1])
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xadd(self.stream(topic), {"key": key, "payload": payload})
            pipe.xdel(dead_stream, dead_id)
            await pipe.execute()
        return True

    async def pending(self, topic: str) -> int:
        """Entries in the stream not yet acknowledged or dead (new and in flight)."""
        await self._ensure_group(topic)
        return int(await self.redis.xlen(self.stream(topic)))
