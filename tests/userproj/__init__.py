"""A user's own Celery project, as tests/test_user_app.py runs it: ``celery -A tests.userproj``.

Its own broker (``PROJ_BROKER_URL``: RabbitMQ in the test), default queue and settings, one
task of its own, callbacks as ``shared_task`` and a task_postrun handler of its own that counts
what ran where. nen-celery joins it with one line.
"""

from .celery import app

__all__ = ("app",)
