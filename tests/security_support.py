"""Shared by the tests/test_security_*.py files: settled Redis snapshots and publish counts."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import redis

from tests.helpers import wait_for

if TYPE_CHECKING:
    from tests.conftest import Stack


KOMBU_DEADLINES = "_kombu.binding_deadlines"


def full_snapshot(client: redis.Redis) -> dict[str, Any]:
    """Every key of the DB with its value, all types, in three pipelined round trips.

    Same content as tests.helpers.snapshot (plus sets and streams), fast enough to take twice per
    example of a property test on a DB that holds a whole suite's runs.
    """
    keys = sorted(str(k) for k in client.scan_iter(count=5000))
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.type(key)
    kinds = [str(k) for k in pipe.execute()]
    readers = {
        "string": lambda p, k: p.get(k),
        "hash": lambda p, k: p.hgetall(k),
        "list": lambda p, k: p.lrange(k, 0, -1),
        "set": lambda p, k: p.smembers(k),
        "zset": lambda p, k: p.zrange(k, 0, -1, withscores=True),
        "stream": lambda p, k: p.xrange(k),
    }
    pipe = client.pipeline(transaction=False)
    read: list[str] = []
    for key, kind in zip(keys, kinds, strict=True):
        if kind in readers:
            readers[kind](pipe, key)
            read.append(key)
    values = dict(zip(read, pipe.execute(), strict=True))
    out: dict[str, Any] = {}
    for key, kind in zip(keys, kinds, strict=True):
        if kind == "none":
            continue  # vanished between SCAN and TYPE
        value = values.get(key, kind)
        out[key] = sorted(value) if isinstance(value, set) else value
    return out


def settled_snapshot(stack: Stack) -> dict[str, Any]:
    """The whole test DB once the worker has acked everything (no key vanishing mid-scan)."""
    stack.counter.wait_idle()
    wait_for(lambda: not stack.redis.hlen("unacked"), 20, "the broker's unacked messages to be acked")
    state = {k: v for k, v in full_snapshot(stack.redis).items() if v is not None}
    # kombu refreshes the pidbox binding's deadline on its own: members matter, not the score
    if isinstance(state.get(KOMBU_DEADLINES), list):
        state[KOMBU_DEADLINES] = sorted(member for member, _ in state[KOMBU_DEADLINES])
    return state


def published(stack: Stack) -> int:
    return sum(stack.counter.published.values())


# Keys the broker machinery writes on its own while idle; not state the receiver could touch.
BACKGROUND_KEYS = frozenset({KOMBU_DEADLINES, "unacked_mutex"})
BACKGROUND_EVENTS = frozenset({"expired", "evicted"})


class KeyEvents:
    """Every write to one Redis DB, seen through keyspace notifications (a real Redis feature).

    ``drain()`` returns the ``(event, key)`` pairs since the last call, up to a fence published
    after them, so nothing still in flight is missed. Cheap enough to run per request of a
    property test, unlike a full snapshot. Restores ``notify-keyspace-events`` on ``close()``.
    """

    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url, decode_responses=True)
        self.db = int(self.client.connection_pool.connection_kwargs.get("db", 0))
        self.saved = str(self.client.config_get("notify-keyspace-events").get("notify-keyspace-events", ""))
        self.client.config_set("notify-keyspace-events", "KEA")
        self.fence = f"nen-test-fence-{id(self)}"
        self.pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        self.pubsub.psubscribe(f"__keyevent@{self.db}__:*")
        self.pubsub.subscribe(self.fence)
        self._count = 0

    def drain(self, timeout: float = 10.0) -> list[tuple[str, str]]:
        self._count += 1
        token = str(self._count)
        self.client.publish(self.fence, token)
        events: list[tuple[str, str]] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            message = self.pubsub.get_message(timeout=0.5)
            if message is None:
                continue
            if message["channel"] == self.fence:
                if message["data"] == token:
                    return events
                continue
            event = str(message["channel"]).rsplit(":", 1)[-1]
            key = str(message["data"])
            if event not in BACKGROUND_EVENTS and key not in BACKGROUND_KEYS:
                events.append((event, key))
        raise AssertionError(f"keyspace notification fence {token} not seen within {timeout}s")

    def close(self) -> None:
        self.pubsub.close()
        self.client.config_set("notify-keyspace-events", self.saved)
        self.client.close()
