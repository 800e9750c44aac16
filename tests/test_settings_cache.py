"""The process's one Settings object under threads: a load that read the environment before a
change must not outlive the change (the in-process worker's threads load settings while a test,
or ``install_overrides``, changes them)."""

from __future__ import annotations

import os
import threading
from typing import Any

import pytest

from nen_celery import settings as settings_module
from nen_celery.settings import get_settings, reset_settings
from tests.conftest import reload_settings


def test_a_load_racing_a_change_is_not_kept_after_it(monkeypatch: pytest.MonkeyPatch) -> None:
    read_env = threading.Event()
    finish = threading.Event()

    class SlowSettings(settings_module.Settings):
        def __init__(self, **values: Any) -> None:
            super().__init__(**values)  # the environment is read here
            read_env.set()
            assert finish.wait(10)

    monkeypatch.setenv("NEN_WEBHOOK_RUN_PARAM", "old_param")
    reload_settings()
    monkeypatch.setattr(settings_module, "Settings", SlowSettings)
    loader = threading.Thread(target=get_settings)  # a worker thread's first use
    loader.start()
    try:
        assert read_env.wait(10)
        os.environ["NEN_WEBHOOK_RUN_PARAM"] = "new_param"  # the change, then the cache dropped
        forget = threading.Thread(target=reset_settings)
        forget.start()
    finally:
        finish.set()
    loader.join(10)
    forget.join(10)
    monkeypatch.setattr(settings_module, "Settings", SlowSettings.__mro__[1])
    try:
        assert get_settings().webhook_run_param == "new_param"
    finally:
        monkeypatch.delenv("NEN_WEBHOOK_RUN_PARAM")
        reload_settings()
