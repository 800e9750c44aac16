"""The worker: ``celery -A tests.webapps.django_site worker -l info``.

Django is set up first, so ``NEN_CELERY`` is installed before the Celery app reads its settings.
"""

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.webapps.django_site.settings")
django.setup()

from nen_celery.worker import app  # noqa: E402

from . import tasks  # noqa: E402,F401  (registers run_finished on the worker)

__all__ = ["app"]
