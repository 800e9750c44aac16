"""kombu's Redis transport as patched (fastpath/kombu_redis.py): one client per channel, enough
connections, and a paused consumer woken by an ack."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import pytest
from kombu import Connection, Consumer, Producer, Queue
from kombu.message import Message

from nen_celery.fastpath import kombu_redis as redis_transport
from nen_celery.settings import Settings
from nen_celery.worker import celery_config
from tests.conftest import TEST_REDIS_URL

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", autouse=True)
def patched() -> Iterator[None]:
    """What a worker started with NEN_PATCH_KOMBU_REDIS=true does (never an import); kombu's
    own methods are put back after this module (the default is no patch)."""
    assert redis_transport.install(), "this kombu must pass the gate (fastpath/gate.py)"
    yield
    redis_transport.uninstall()


def test_a_channel_reuses_one_client_until_its_pool_changes() -> None:
    assert not redis_transport.install()  # already installed: a second call changes nothing
    with Connection(TEST_REDIS_URL) as conn:
        channel = conn.default_channel
        with channel.conn_or_acquire() as first, channel.conn_or_acquire() as again:
            assert first is again
            assert first.ping()
        with channel.conn_or_acquire(first) as given:
            assert given is first
        channel._pool = None  # what kombu does when the connection is re-established
        with channel.conn_or_acquire() as fresh:
            assert fresh is not first and fresh.connection_pool is channel.pool
            assert fresh.ping()


def test_a_redis_broker_allows_more_connections_than_a_gevent_pool_takes() -> None:
    options = celery_config(Settings(broker_url="redis://127.0.0.1:6379/0"))["broker_transport_options"]
    assert options["max_connections"] == 200
    with pytest.raises(ValueError, match="broker_max_connections"):
        Settings(broker_max_connections=5)


def test_an_ack_wakes_a_consumer_whose_window_is_full() -> None:
    """Without an event loop (-P gevent), a full prefetch window left kombu polling a socket
    with no BRPOP pending until its timeout (60 s here); the first ack now ends that wait."""
    with Connection(TEST_REDIS_URL) as conn:
        queue = Queue(f"nen-test-wake-{uuid.uuid4().hex[:8]}")
        channel = conn.channel()
        producer = Producer(channel)
        for n in (1, 2):
            producer.publish({"n": n}, routing_key=queue.name, declare=[queue])
        got: list[Message] = []
        consumer = Consumer(channel, [queue], callbacks=[lambda _, msg: got.append(msg)], prefetch_count=1)
        consumer.consume()
        try:
            conn.drain_events(timeout=10)
            assert len(got) == 1  # the window (1 message) is full

            second = threading.Event()

            def drain() -> None:
                while len(got) < 2:
                    try:
                        conn.drain_events(timeout=60)
                    except TimeoutError:
                        continue
                second.set()

            threading.Thread(target=drain, daemon=True).start()
            got[0].ack()
            assert second.wait(20), "the ack did not wake the waiting consumer"
            got[1].ack()
        finally:
            consumer.cancel()
            queue(channel).delete()
