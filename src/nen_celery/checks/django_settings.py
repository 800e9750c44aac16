"""Django's ``NEN_CELERY`` without nen's AppConfig: the settings would be ignored, silently.

``NenCeleryConfig.ready`` is what installs ``settings.NEN_CELERY``; a project that sets the dict
but leaves the AppConfig out of ``INSTALLED_APPS`` would run every process on the defaults
(localhost Redis, the public API, no webhook URL). This module names that mistake as the Django
system check ``nen_celery.E001`` (``manage.py check`` fails), and the worker, the CLI and
``init_celery`` refuse it.

No Django import here (the core imports no extra): Django is read from ``sys.modules``, where it
is once a project loaded it, and the check is registered with that project's own check registry.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import Any

SETTING = "NEN_CELERY"
APP_MODULE = "nen_celery.web.django"
APP_CONFIG = f"{APP_MODULE}.NenCeleryConfig"
CHECK_ID = "nen_celery.E001"


def missing_app_config(has_setting: bool, installed_apps: Iterable[str]) -> str | None:
    """The E001 message when ``NEN_CELERY`` is set and nen's AppConfig is not installed (pure)."""
    if not has_setting:
        return None
    if any(app == APP_MODULE or app.startswith(APP_MODULE + ".") for app in installed_apps):
        return None
    return (
        f"{CHECK_ID}: settings.{SETTING} is set but {APP_CONFIG!r} is not in INSTALLED_APPS, so "
        f"{SETTING} would be ignored (every process would run on the NEN_* environment and the "
        f"defaults); add {APP_CONFIG!r} to INSTALLED_APPS"
    )


def _django_settings() -> Any:
    """The project's ``django.conf.settings`` when Django is loaded and configured, else None."""
    conf = sys.modules.get("django.conf")
    settings = getattr(conf, "settings", None)
    if settings is None:
        return None
    try:
        return settings if settings.configured or os.environ.get("DJANGO_SETTINGS_MODULE") else None
    except Exception:  # a settings module that does not import: Django's own error, elsewhere
        return None


def django_settings_problem() -> str | None:
    """E001's message for the project loaded in this process, or None (no Django, or fine)."""
    settings = _django_settings()
    if settings is None:
        return None
    try:
        has_setting = getattr(settings, SETTING, None) is not None
        installed = list(getattr(settings, "INSTALLED_APPS", ()))
    except Exception:  # ImproperlyConfigured and the like: Django reports it itself
        return None
    return missing_app_config(has_setting, installed)


def system_check(app_configs: Any = None, **_: Any) -> list[Any]:
    """The Django system check (registered by ``register_django_check``)."""
    problem = django_settings_problem()
    checks = sys.modules.get("django.core.checks")
    if problem is None or checks is None:
        return []
    text, _sep, advice = problem.removeprefix(f"{CHECK_ID}: ").rpartition("; ")
    return [checks.Error(text, hint=advice[:1].upper() + advice[1:], id=CHECK_ID)]


def register_django_check() -> bool:
    """Register ``system_check`` with Django's check registry, if Django's checks are loaded in
    this process (``manage.py`` loads them before the settings, so ``init_celery`` in
    ``proj/celery.py`` registers it in time); idempotent. True when registered."""
    checks = sys.modules.get("django.core.checks")
    register = getattr(checks, "register", None)
    if register is None:
        return False
    register(system_check)
    return True
