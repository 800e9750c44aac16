"""kombu's Redis channel reuses one client (redis_transport.py) and gets enough connections."""

from __future__ import annotations

import pytest
from kombu import Connection

import nen_celery.worker  # noqa: F401  (installs the patch, as every process importing the app does)
from nen_celery import redis_transport
from nen_celery.config import Settings
from nen_celery.worker import celery_config
from tests.conftest import TEST_REDIS_URL

pytestmark = pytest.mark.integration


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
