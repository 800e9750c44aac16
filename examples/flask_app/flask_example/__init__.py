"""A Flask app factory with Celery, as in Flask's guide "Background Tasks with Celery", plus nen-celery.

    flask --app flask_example run --port 5000        # the web app (and Nen's webhook receiver)
    celery -A make_celery worker -l INFO             # the worker: the app's tasks and nen-celery's
    celery -A make_celery beat -l INFO               # nen-celery's reconcile sweep (and yours)

Configuration: ``FLASK_*`` environment variables (``app.config.from_prefixed_env()``), e.g.
``FLASK_CELERY__broker_url=redis://127.0.0.1:6379/0``; nen-celery's own settings as ``NEN_*``
keys of ``app.config`` (``FLASK_NEN_WEBHOOK_URL=...``) or ``NEN_*`` environment variables.
"""

from __future__ import annotations

from celery import Celery, Task
from flask import Flask

import nen_celery
from nen_celery.web.flask import NenCelery


def celery_init_app(app: Flask) -> Celery:
    """Flask's own recipe: every task runs inside an app context."""

    class FlaskTask(Task):  # type: ignore[misc]
        def __call__(self, *args: object, **kwargs: object) -> object:
            with app.app_context():
                return self.run(*args, **kwargs)

    celery_app = Celery(app.name, task_cls=FlaskTask)
    celery_app.config_from_object(app.config["CELERY"])
    celery_app.set_default()
    app.extensions["celery"] = celery_app
    return celery_app


def create_app() -> Flask:
    app = Flask(__name__)
    app.config.from_mapping(
        CELERY={
            "broker_url": "redis://127.0.0.1:6379/0",
            "task_ignore_result": True,
        },
        ORDERS_REDIS_URL="redis://127.0.0.1:6379/0",
        ORDERS_KEY_PREFIX="shop:",
    )
    # FLASK_CELERY__broker_url=..., FLASK_NEN_WEBHOOK_URL=https://shop.example/nen/webhooks/nen (where
    # Nen posts each run's status), ...: a NEN_* key given here outranks the NEN_* variable
    app.config.from_prefixed_env()

    NenCelery(app)  # POST /nen/webhooks/nen, GET /nen/healthz; the app's NEN_* keys are nen's settings
    celery_app = celery_init_app(app)
    nen_celery.init_celery(celery_app)  # nen's tasks and queues on the app's Celery; publish through it

    from . import views, workflows

    workflows.register()
    app.register_blueprint(views.bp)
    return app
