"""The session's stack: the fake Nen (nen's simulator), the settings pointing your app at it, the
webhook receiver and a worker running your app, on a Redis of the tests' own.

Started in the order each part needs: the simulator and the receiver's socket first (their URLs go
into the settings), then the settings, then your app (its module may read them), then the receiver
and the worker. Stopped in reverse; the environment is put back as it was.
"""

from __future__ import annotations

import os
import secrets
import uuid
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import redis

import nen_celery
from nen_celery import settings as nen_settings
from nen_celery.runtime.context import reset_context
from nen_celery.settings import get_settings, install_overrides, reset_settings
from nen_celery.simulator import SimulatorConfig, SimulatorServer
from nen_celery.store.sealer import generate_key
from nen_celery.testing.options import SetupError
from nen_celery.testing.receiver import ReceiverServer, bind_free_port
from nen_celery.testing.recorder import Recorder
from nen_celery.testing.worker import start_worker

if TYPE_CHECKING:
    from celery import Celery

    from nen_celery.testing.options import Options

#: Timings that keep a test's run short; any of them can be changed with ``nen_extra_settings``.
FAST_SETTINGS = {
    "NEN_SUBMIT_DEADLINE": "2",
    "NEN_BACKOFF_INITIAL": "0.05",
    "NEN_BACKOFF_MAX": "0.2",
    "NEN_RESCHEDULE_DELAY": "0.2",
    "NEN_SUBMIT_RESCHEDULES": "1",
    "NEN_CONNECT_TIMEOUT": "1",
    "NEN_READ_TIMEOUT": "3",
    "NEN_POLL_INTERVAL": "0.1",
    "NEN_WEBHOOK_DEADLINE": "0.5",
    "NEN_REPOLL_INTERVAL": "0.5",
    "NEN_UNKNOWN_TIMEOUT": "3",
    "NEN_PARKED_GRACE": "1",
}
#: The settings a framework's own configuration must not take from the fake Nen.
_CONNECTION = (
    "api_url", "api_key", "signing_key", "webhook_secret", "webhook_url", "redis_url", "key_prefix"
)  # fmt: skip


def simulator_config() -> SimulatorConfig:
    """Fresh keys for each session, and a Nen that answers within milliseconds."""
    return SimulatorConfig(
        api_key=secrets.token_urlsafe(16),
        signing_key=secrets.token_urlsafe(16),
        webhook_secret=secrets.token_urlsafe(16),
        processing_delay=0.01,
        terminal_delay=0.01,
        delivery_backoff=0.05,
        delivery_backoff_max=0.5,
    )


class NenStack:
    """Everything a test of a run needs; built by the ``nen_stack`` session fixture."""

    def __init__(self, redis_url: str, options: Options, extra_settings: Mapping[str, str]) -> None:
        self.redis_url = redis_url
        self.options = options
        self.extra_settings = dict(extra_settings)
        self.prefix = f"nentesting{uuid.uuid4().hex[:10]}"
        self.settings: dict[str, str] = {}
        self.simulator: SimulatorServer = SimulatorServer(simulator_config())
        self.receiver: ReceiverServer | None = None
        self.recorder = Recorder(redis_url, self.prefix + ":rec")
        self.app: Celery | None = None
        self.worker: Any = None
        self._exit = ExitStack()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._exit.close()

    def start(self, load_app: Callable[[], Celery], worker_parameters: Mapping[str, Any]) -> None:
        self._flush_redis()
        self._exit.callback(self.recorder.close)
        self._exit.enter_context(self.simulator)
        receiver = ReceiverServer(bind_free_port())
        self._exit.callback(receiver.stop)
        self.receiver = receiver
        self.settings = self._settings(receiver.url + "/webhooks/nen")
        self._exit.enter_context(_environment(self.settings))
        self.app = self._prepare(load_app())
        self.recorder.connect()
        self._exit.callback(self.recorder.disconnect)
        from nen_celery.web.asgi import create_app

        receiver.start(create_app())
        worker = start_worker(self.app, self.options, self.recorder, dict(worker_parameters))
        self.worker = self._exit.enter_context(worker)

    def _flush_redis(self) -> None:
        client = redis.Redis.from_url(self.redis_url, socket_connect_timeout=2)
        try:
            client.ping()
            client.flushdb()  # the tests' database: broker queues and run state of a past session
        except redis.RedisError as exc:
            raise SetupError(
                f"no Redis answers at {_without_password(self.redis_url)} ({exc}): start a redis-server, "
                "or point --nen-redis-url / NEN_TESTING_REDIS_URL at one (docs/testing.md#ci)"
            ) from None
        finally:
            client.close()

    def _settings(self, webhook_url: str) -> dict[str, str]:
        config = self.simulator.config
        return {
            **FAST_SETTINGS,
            "NEN_API_URL": self.simulator.url,
            "NEN_API_KEY": config.api_key,
            "NEN_SIGNING_KEY": config.signing_key,
            "NEN_WEBHOOK_SECRET": config.webhook_secret,
            "NEN_WEBHOOK_URL": webhook_url,
            "NEN_REDIS_URL": self.redis_url,
            "NEN_KEY_PREFIX": self.prefix,
            "NEN_SECRETS_KEY": generate_key(),
            **self.extra_settings,
        }

    def _prepare(self, app: Celery) -> Celery:
        """Your app, on the tests' Redis as broker, with nen installed; never eager."""
        if app.conf.task_always_eager:
            raise SetupError(
                "task_always_eager is on: nen_celery.testing runs a real worker, and eager mode would "
                "skip the webhook path. Turn it off for these tests (CELERY_TASK_ALWAYS_EAGER=False)"
            )
        app.conf.broker_url = self.redis_url
        app.conf.broker_read_url = app.conf.broker_write_url = None
        app.conf.worker_hijack_root_logger = False
        nen_celery.init_celery(app)
        self._win_over_framework_settings()
        return app

    def _win_over_framework_settings(self) -> None:
        """A framework's NEN_CELERY / app.config values win over the environment; in tests the fake
        Nen's must: put them over those (in this process; a worker process reads its own)."""
        current = get_settings()
        wanted = {name.removeprefix("NEN_").lower(): value for name, value in self.settings.items()}
        masked = [name for name in _CONNECTION if _shown(getattr(current, name)) != wanted[name]]
        if not masked:
            return
        if self.options.worker == "process":
            names = ", ".join(f"NEN_{name.upper()}" for name in masked)
            raise SetupError(
                f"your framework's nen-celery settings set {names}, which a worker process would use "
                "instead of the fake Nen's: leave them out of the test settings"
            )
        framework = dict(nen_settings._overrides)
        install_overrides({**framework, **{name: wanted[name] for name in masked}})
        self._exit.callback(install_overrides, framework)


def _shown(value: Any) -> Any:
    return value.get_secret_value() if hasattr(value, "get_secret_value") else value


def _without_password(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    return f"{scheme}{sep}***@{rest.rpartition('@')[2]}" if "@" in rest else url


class _environment:
    """``os.environ`` with ``values`` for the session, put back after; settings re-read both times."""

    def __init__(self, values: Mapping[str, str]) -> None:
        self.values = dict(values)
        self.saved: dict[str, str | None] = {}

    def __enter__(self) -> None:
        self.saved = {key: os.environ.get(key) for key in self.values}
        os.environ.update(self.values)
        _reload()

    def __exit__(self, *exc: object) -> None:
        for key, old in self.saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old
        _reload()


def _reload() -> None:
    reset_settings()
    reset_context()
