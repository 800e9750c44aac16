"""Settings of the test project: nothing but what nen-celery needs."""

import os

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-only-not-a-secret")
DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]

INSTALLED_APPS = ["nen_celery.web.django.NenCeleryConfig"]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
]
ROOT_URLCONF = "tests.webapps.django_site.urls"
DATABASES: dict[str, dict[str, str]] = {}
USE_TZ = True

# nen-celery settings (names with or without NEN_, any case); the rest come from NEN_* variables.
NEN_CELERY = {
    "WEBHOOK_URL": os.environ.get("NEN_WEBHOOK_URL", "http://127.0.0.1:8000/nen/webhooks/nen"),
}
