"""Test stack: real Redis (a dedicated DB), the simulator and the receiver over real HTTP,
and an in-process Celery worker (celery.contrib.testing) on the real broker."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
import redis

from tests.worker_redis import worker_redis_url

# A second pytest-xdist worker gets a redis-server of its own (tests/worker_redis.py); its child
# processes and the tests that read the variable see it.
TEST_REDIS_URL = worker_redis_url(os.environ.get("NEN_TEST_REDIS_URL", "redis://127.0.0.1:6379/13"))
os.environ["NEN_TEST_REDIS_URL"] = TEST_REDIS_URL
PREFIX = f"nentest{uuid.uuid4().hex[:8]}"
SIM_API_KEY = "test-api-key-0f3a"
SIM_SIGNING_KEY = "test-signing-key-77c1"
SIM_WEBHOOK_SECRET = "test-webhook-secret-5e2b"

BASE_ENV = {
    "NEN_REDIS_URL": TEST_REDIS_URL,
    "NEN_BROKER_URL": TEST_REDIS_URL,
    "NEN_KEY_PREFIX": PREFIX,
    "NEN_API_KEY": SIM_API_KEY,
    "NEN_SIGNING_KEY": SIM_SIGNING_KEY,
    "NEN_WEBHOOK_SECRET": SIM_WEBHOOK_SECRET,
    "NEN_SECRETS_KEY": "",  # filled below
    "NEN_SUBMIT_DEADLINE": "2",
    "NEN_BACKOFF_INITIAL": "0.05",
    "NEN_BACKOFF_MAX": "0.2",
    "NEN_RESCHEDULE_DELAY": "0.2",
    "NEN_SUBMIT_RESCHEDULES": "1",
    "NEN_CONNECT_TIMEOUT": "1",
    "NEN_READ_TIMEOUT": "3",
    "NEN_POLL_INTERVAL": "0.1",
    "NEN_COMPLETION_LEASE": "5",
}
os.environ.pop("NEN_WEBHOOK_URL", None)
os.environ.pop("NEN_API_URL", None)

from cryptography.fernet import Fernet  # noqa: E402

BASE_ENV["NEN_SECRETS_KEY"] = Fernet.generate_key().decode()
os.environ.update(BASE_ENV)

try:
    redis.Redis.from_url(TEST_REDIS_URL, socket_connect_timeout=2).ping()
except redis.RedisError as exc:  # pragma: no cover - environment problem
    raise pytest.UsageError(
        f"no Redis answers at {TEST_REDIS_URL} ({exc}); run `make test` (it starts one) "
        "or set NEN_TEST_REDIS_URL"
    ) from None
# The test DB is dedicated to the suite: start from nothing (broker queues included).
redis.Redis.from_url(TEST_REDIS_URL).flushdb()

from nen_celery.runtime.context import get_context, reset_context  # noqa: E402
from nen_celery.settings import reset_settings  # noqa: E402
from nen_celery.simulator import SimulatorConfig, SimulatorServer  # noqa: E402
from nen_celery.web.asgi import create_app  # noqa: E402
from nen_celery.worker import app as celery_app  # noqa: E402
from tests import callbacks  # noqa: E402,F401  (registers tests.record on the app)
from tests.helpers import TaskCounter, serve_in_thread, wait_for  # noqa: E402
from tests.observers import Recorder  # noqa: E402


class AckedTaskCounter(TaskCounter):
    """``wait_idle`` also waits for the in-process worker's acks of the tasks it ran: with late
    acks the ack follows task_postrun, and the worker's event loop may write it a tick later
    (up to 10 ms here on kombu < 5.7, see ``stack``), after a test's "nothing changed" snapshot
    of the broker's unacked hash has begun."""

    def __init__(self) -> None:
        super().__init__()
        self._ran: set[str] = set()
        self._broker: redis.Redis | None = None
        from celery.signals import task_postrun

        task_postrun.connect(self._note_ran, weak=False)

    def _note_ran(self, task_id: str | None = None, **_: Any) -> None:
        if task_id:
            self._ran.add(task_id)

    def _ran_but_unacked(self) -> bool:
        if self._broker is None:
            self._broker = redis.Redis.from_url(TEST_REDIS_URL)
        for raw in self._broker.hvals("unacked"):
            message = json.loads(raw)[0]
            if message.get("headers", {}).get("id") in self._ran:
                return True
        return False

    def wait_idle(self, timeout: float = 30.0) -> None:
        super().wait_idle(timeout)
        wait_for(lambda: not self._ran_but_unacked(), 10, "the worker to ack the tasks it ran")


# Set up signal counters before any worker starts.
COUNTER = AckedTaskCounter()


def sim_config(**overrides: Any) -> SimulatorConfig:
    """A simulator with the suite's keys (fast delays unless overridden)."""
    values: dict[str, Any] = {"processing_delay": 0.05, "terminal_delay": 0.1, **overrides}
    return SimulatorConfig(
        api_key=SIM_API_KEY, signing_key=SIM_SIGNING_KEY, webhook_secret=SIM_WEBHOOK_SECRET, **values
    )


def reload_settings() -> None:
    reset_settings()
    reset_context()


@contextmanager
def env(**values: str | None) -> Iterator[None]:
    """Temporarily change NEN_* settings for this process (worker threads included)."""
    saved = {k: os.environ.get(k) for k in values}
    for key, value in values.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    reload_settings()
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old
        reload_settings()


@dataclass
class Stack:
    sim: Any
    receiver_url: str
    counter: TaskCounter
    redis: redis.Redis

    @property
    def webhook_url(self) -> str:
        return self.receiver_url + "/webhooks/nen"


@pytest.fixture(scope="session")
def redis_client() -> redis.Redis:
    return redis.Redis.from_url(TEST_REDIS_URL, decode_responses=True)


def _kombu_before_5_7() -> bool:
    from packaging.version import Version

    from nen_celery.checks.config import KOMBU_PROMPT
    from nen_celery.fastpath.gate import installed_version

    return Version(installed_version("kombu") or "0") < KOMBU_PROMPT


@pytest.fixture(scope="session")
def stack(redis_client: redis.Redis) -> Iterator[Stack]:
    from celery.contrib.testing.worker import start_worker

    if _kombu_before_5_7():
        # The lowest-versions run (make test-lowest). Before kombu 5.7 a thread-pool worker's
        # event loop is not woken when a task ends: once the prefetch window is full it sleeps
        # until its next timer, up to 10 s, before it takes the next message or writes the ack
        # (a bare Celery app's 30 tasks of 10 ms take 50 s with -P threads on kombu 5.5.2, 0.1 s
        # on 5.7). The suite's in-process worker is a thread pool, so its loop gets a 10 ms
        # timer, through the one interval kombu 5.5 lets us set; nothing else changes.
        celery_app.conf.broker_transport_options = {
            **(celery_app.conf.broker_transport_options or {}),
            "health_check_interval": 0.01,
        }
    config = sim_config(processing_delay=0.02, terminal_delay=0.02)
    with SimulatorServer(config) as sim, serve_in_thread(create_app()) as receiver_url:
        os.environ["NEN_API_URL"] = sim.url
        os.environ["NEN_WEBHOOK_URL"] = receiver_url + "/webhooks/nen"
        reload_settings()
        with start_worker(
            celery_app,
            pool="threads",
            concurrency=4,
            perform_ping_check=False,
            loglevel="WARNING",
            shutdown_timeout=30,
        ):
            yield Stack(sim, receiver_url, COUNTER, redis_client)
        os.environ.pop("NEN_API_URL", None)
        os.environ.pop("NEN_WEBHOOK_URL", None)
        reload_settings()


@pytest.fixture
def heard() -> Iterator[Recorder]:
    """An observer added for the test that writes down every event of this process."""
    from nen_celery.observe import observing

    with observing(Recorder()) as recorder:
        yield recorder


@pytest.fixture
def store() -> Any:
    return get_context().store


@pytest.fixture
def runs(store: Any) -> Iterator[list[str]]:
    """Run ids a test made directly on the store: deleted afterwards."""
    made: list[str] = []
    yield made
    for run_id in made:
        store.delete(run_id)


@pytest.fixture
def beat(stack: Stack) -> Iterator[None]:
    """Stands in for `celery beat`: publishes reconcile_runs on a short schedule."""
    import threading

    from nen_celery.worker import reconcile_runs

    stop = threading.Event()

    def schedule() -> None:
        while not stop.wait(0.05):
            reconcile_runs.apply_async()

    thread = threading.Thread(target=schedule, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(5)
        stack.counter.wait_idle()


@pytest.fixture
def quiet_sim(stack: Stack) -> Iterator[Stack]:
    """The simulator accepts runs but sends no webhooks: the test sends them itself."""
    stack.sim.state.config.processing_delay = 3600
    stack.sim.state.config.terminal_delay = 3600
    yield stack
    stack.counter.wait_idle()
    stack.sim.state.config.processing_delay = 0.02
    stack.sim.state.config.terminal_delay = 0.02


# Under pytest-xdist (`make test`: -n 2), tests that share something of the machine's beyond
# Redis run in one worker, one after another: RabbitMQ (one broker; a test restarts its app), and
# the README's quick start (its fixed ports, as the README writes them). xdist's own groups
# (--dist loadgroup) rename node ids, which pytest 9 no longer allows: a scheduler of our own,
# xdist's load-scope one with every other test a scope of its own.
MACHINE_WIDE = {
    "rabbitmq": {
        "test_rabbitmq.py", "test_rabbitmq_move.py", "test_example_django.py",
        "test_example_fastapi.py", "test_user_app.py", "test_init_celery.py",
    },
    "fixed-ports": {"test_first_hour_readme.py"},
}


def machine_wide_scope(nodeid: str) -> str:
    """The scheduling scope of a test: its group, or the test itself."""
    name = nodeid.split("::", 1)[0].rsplit("/", 1)[-1]
    return next((group for group, files in MACHINE_WIDE.items() if name in files), nodeid)


@pytest.hookimpl(optionalhook=True)  # an xdist hook: the lowest-versions venv has no xdist
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    from xdist.scheduler import LoadScopeScheduling

    class MachineWideScheduling(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            return machine_wide_scope(nodeid)

    return MachineWideScheduling(config, log)
