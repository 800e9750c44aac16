"""``nen-celery -A proj``: the user's Celery app, loaded the way ``celery -A proj`` loads it.

``celery -A`` finds the app (``proj``, ``proj.celery``, ``proj.celery:app``), then its loader
imports the app's default modules, which is when Celery's Django fix-up calls ``django.setup()``:
nen's AppConfig then installs ``settings.NEN_CELERY``, so every command reads the settings the
app's own processes read. A Flask project is found by its factory (``-A proj:create_app``) or by
the module that builds it (``-A make_celery``, Flask's guide): building the Flask app installs its
``NEN_*`` config. Misconfiguration is refused, named: NEN_CELERY without nen's AppConfig
(nen_celery.E001), or a setting of the app that breaks a guarantee (``init_celery``).
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from nen_celery.checks.django_settings import django_settings_problem
from nen_celery.errors import ConfigurationError


class AppNotLoaded(ValueError):
    """The app could not be found or loaded; the message names it and why."""


def celery_of(found: Any, app_path: str, factory_called: bool = False) -> Celery:
    """The Celery app behind what ``-A`` named: the app itself, a Flask app holding one in
    ``extensions["celery"]`` (Flask's guide), or a factory returning either."""
    if isinstance(found, Celery):
        return found
    extensions = getattr(found, "extensions", None)
    if isinstance(extensions, dict) and isinstance(extensions.get("celery"), Celery):
        return extensions["celery"]
    if callable(found) and not isinstance(found, type) and not factory_called:
        try:
            built = found()
        except TypeError as exc:
            raise AppNotLoaded(f"{app_path!r} is a callable that needs arguments: {exc}") from None
        return celery_of(built, app_path, factory_called=True)
    raise AppNotLoaded(
        f"{app_path!r} is a {type(found).__name__}, not a Celery app, a Flask app with "
        "extensions['celery'], or a factory returning one"
    )


def load_app(app_path: str) -> Celery:
    """Find and load the app as ``celery -A`` does; AppNotLoaded naming what went wrong."""
    from celery.app.utils import find_app

    try:
        app = celery_of(find_app(app_path), app_path)
        # as a worker does at start: the app's imports and autodiscovered task modules, and, for
        # a Django project, django.setup() (Celery's Django fix-up), which installs NEN_CELERY
        app.loader.import_default_modules()
    except AppNotLoaded:
        raise
    except Exception as exc:  # an import error of the user's module, or no app in it
        raise AppNotLoaded(f"cannot load the Celery app {app_path!r}: {exc}") from None
    return app


def install_app(app_path: str) -> Celery:
    """``load_app``, then nen installed into it (unless its module did so); ConfigurationError
    naming what is wrong with the project's settings."""
    from nen_celery.celery.install import init_celery
    from nen_celery.runtime.app import installed

    app = load_app(app_path)
    problem = django_settings_problem()
    if problem is not None:
        raise ConfigurationError(problem)
    if installed() is not app:  # their module may have called init_celery itself
        try:
            init_celery(app)
        except TypeError as exc:
            raise ConfigurationError(str(exc)) from None
    return app


__all__ = ["AppNotLoaded", "celery_of", "install_app", "load_app"]
