"""nen-celery's pytest plugin for users' own tests (the ``[testing]`` extra, docs/testing.md).

Registered through the ``pytest11`` entry point: it must stay cheap to import and add nothing to a
test session that does not ask for its fixtures. This module holds only the plugin's options and
the fixture functions (``fixtures``, standard library and pytest alone); what they start (the fake
Nen, the receiver, the worker) is imported by the first fixture a test asks for.

Fixtures: ``fake_nen`` (per test: script the fake Nen, wait for a run, assert its callback),
``nen_beat``, and the session's parts ``nen_stack``, ``nen_settings``, ``nen_simulator``,
``nen_worker``; inputs a project may override: ``nen_celery_app``, ``nen_redis_url``,
``nen_extra_settings``.
"""

from __future__ import annotations

import pytest

from nen_celery.testing.fixtures import (
    fake_nen,
    nen_beat,
    nen_celery_app,
    nen_extra_settings,
    nen_redis_url,
    nen_settings,
    nen_simulator,
    nen_stack,
    nen_worker,
)
from nen_celery.testing.options import add_options

__all__ = [
    "fake_nen",
    "nen_beat",
    "nen_celery_app",
    "nen_extra_settings",
    "nen_redis_url",
    "nen_settings",
    "nen_simulator",
    "nen_stack",
    "nen_worker",
    "pytest_addoption",
]


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)
