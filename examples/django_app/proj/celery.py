"""The project's Celery app (Celery's "First steps with Django"), with nen-celery installed on it.

celery -A proj worker -l INFO     # runs the shop's tasks and nen-celery's, no -Q needed
celery -A proj beat -l INFO       # the shop's schedule and nen-celery's reconcile sweep
"""

import os

from celery import Celery

import nen_celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "proj.settings")

app = Celery("proj")
# CELERY_* names in settings.py configure this app (CELERY_BROKER_URL, CELERY_BEAT_SCHEDULE, ...)
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()  # shop/tasks.py

# nen-celery's tasks, queues and beat entry on this app; start_run and the webhook view publish
# through it from now on.
nen_celery.init_celery(app)
