"""The plugin's fixtures. Light on purpose: each imports what it starts in its own body, so a
session that uses none of them imports nothing more than this module (and pytest)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

from nen_celery.testing.options import read_options

if TYPE_CHECKING:
    from celery import Celery

    from nen_celery.simulator import SimulatorServer
    from nen_celery.testing.fake import FakeNen
    from nen_celery.testing.stack import NenStack


@pytest.fixture(scope="session")
def nen_redis_url(pytestconfig: pytest.Config) -> str:
    """Redis for run state and the test broker (``--nen-redis-url``, ``$NEN_TESTING_REDIS_URL``,
    ini ``nen_redis_url``; default DB 15 on 127.0.0.1:6379). The DB is flushed at start."""
    return read_options(pytestconfig).redis_url


@pytest.fixture(scope="session")
def nen_celery_app(pytestconfig: pytest.Config) -> Celery:
    """Your Celery app, from ini ``nen_celery_app`` (as ``celery -A`` takes it); override this
    fixture to build it yourself (a Flask factory). Loaded after the settings are in place."""
    spec = read_options(pytestconfig).celery_app
    if not spec:
        pytest.fail(
            "nen_celery.testing needs your Celery app: set `nen_celery_app = proj.celery:app` in the "
            "[pytest] ini section, or override the `nen_celery_app` fixture (docs/testing.md)",
            pytrace=False,
        )
    from celery.app.utils import find_app

    app: Celery = find_app(spec)
    return app


@pytest.fixture(scope="session")
def nen_extra_settings() -> dict[str, str]:
    """More ``NEN_*`` environment settings for the session (override to add some)."""
    return {}


@pytest.fixture(scope="session")
def nen_stack(request: pytest.FixtureRequest, nen_redis_url: str) -> Iterator[NenStack]:
    """The session's fake Nen, settings, webhook receiver and worker, started in that order."""
    from nen_celery.testing.stack import NenStack

    options = read_options(request.config)
    extra = request.getfixturevalue("nen_extra_settings")
    with NenStack(nen_redis_url, options, extra) as stack:
        stack.start(lambda: request.getfixturevalue("nen_celery_app"), _worker_parameters(request))
        yield stack


def _worker_parameters(request: pytest.FixtureRequest) -> dict[str, Any]:
    """celery.contrib.pytest's ``celery_worker_parameters`` (pytest-celery activates it), if present."""
    try:
        return dict(request.getfixturevalue("celery_worker_parameters"))
    except pytest.FixtureLookupError:
        return {}


@pytest.fixture(scope="session")
def nen_settings(nen_stack: NenStack) -> dict[str, str]:
    """The ``NEN_*`` environment the session runs with (secrets included: never print it)."""
    return dict(nen_stack.settings)


@pytest.fixture(scope="session")
def nen_simulator(nen_stack: NenStack) -> SimulatorServer:
    """The fake Nen itself: nen-celery's simulator on a free port (``fake_nen`` scripts it)."""
    return nen_stack.simulator


@pytest.fixture(scope="session")
def nen_worker(nen_stack: NenStack) -> Any:
    """The worker running your app: an in-process ``WorkController`` (celery.contrib.testing), or
    the ``subprocess.Popen`` of a real ``celery worker`` with ``--nen-worker=process``."""
    return nen_stack.worker


@pytest.fixture
def fake_nen(nen_stack: NenStack) -> Iterator[FakeNen]:
    """A clean fake Nen for this test: script it, start runs, wait for them, assert callbacks."""
    from nen_celery.testing.fake import FakeNen

    fake = FakeNen(nen_stack)
    fake.reset()
    yield fake
    fake.finish()


@pytest.fixture
def nen_beat(nen_stack: NenStack) -> Iterator[None]:
    """Stands in for ``celery beat`` during the test: nen's reconcile sweep, every 0.1 s."""
    from nen_celery.testing.beat import running_beat

    with running_beat(nen_stack):
        yield
