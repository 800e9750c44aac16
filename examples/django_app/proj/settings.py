"""Settings of the example shop: a small Django project with Celery, plus nen-celery."""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-only-not-a-secret")
DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]

INSTALLED_APPS = [
    "nen_celery.web.django.NenCeleryConfig",  # settings.NEN_CELERY, the webhook view's settings
    "shop",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
]
ROOT_URLCONF = "proj.urls"
WSGI_APPLICATION = "proj.wsgi.application"
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("DJANGO_DB_PATH", BASE_DIR / "db.sqlite3"),
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
TIME_ZONE = "UTC"

EMAIL_BACKEND = os.environ.get("DJANGO_EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
EMAIL_FILE_PATH = os.environ.get("DJANGO_EMAIL_FILE_PATH", BASE_DIR / "sent_emails")
DEFAULT_FROM_EMAIL = "shop@example.com"

# Celery: the project's own app (proj/celery.py reads every CELERY_* setting).
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//")
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = TIME_ZONE
CELERY_BEAT_SCHEDULE = {
    # the shop's own periodic task; init_celery adds nen-celery's "nen-reconcile" next to it
    "purge-abandoned-orders": {"task": "shop.tasks.purge_abandoned_orders", "schedule": 3600.0},
}

# nen-celery: names with or without NEN_, any case; whatever is left out comes from NEN_*
# environment variables (keep NEN_API_KEY, NEN_SIGNING_KEY, NEN_WEBHOOK_SECRET there).
SITE_URL = os.environ.get("SITE_URL", "http://127.0.0.1:8000")
NEN_CELERY = {
    "WEBHOOK_URL": SITE_URL + "/nen/webhooks/nen",  # where Nen posts each run's status
}
