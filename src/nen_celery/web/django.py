"""Django integration: settings from ``settings.NEN_CELERY``, the webhook view, a URLconf.

settings.py::

    INSTALLED_APPS = [..., "nen_celery.web.django.NenCeleryConfig"]
    NEN_CELERY = {"API_KEY": "...", "WEBHOOK_SECRET": "...", "REDIS_URL": "redis://..."}

urls.py::

    path("nen/", include("nen_celery.web.django"))   # POST nen/webhooks/nen, GET nen/healthz

``GET nen/metrics`` answers only with ``"RECEIVER_METRICS": True`` in ``NEN_CELERY`` (404
otherwise; it shows volumes and refusal counts: protect it as you protect your admin URLs).
``GET nen/healthz`` is 503 ``not_ready`` with the reason while no webhook secret is set.

Keys of ``NEN_CELERY`` are the setting names with or without the ``NEN_`` prefix, in any case;
anything not given there comes from the environment. They are installed process-wide when
Django starts (``AppConfig.ready``) and again when a test changes them (``override_settings``),
so start the Celery worker after ``django.setup()`` too. The view answers exactly as the ASGI
receiver does; the body is read up to ``NEN_WEBHOOK_MAX_BODY`` and no further, within
``NEN_WEBHOOK_BODY_TIMEOUT`` (408 past it; checked between reads, see web/host.py: give your WSGI
server a timeout too, docs/operations.md). Django's ASGI handler buffers the whole body before any
view runs.

Logging is yours: the app adds no handler, filter or formatter. To keep nen's secrets and URL
queries out of your logs, add the redaction filter to your handlers in ``LOGGING``::

    "filters": {"nen_redact": {"()": "nen_celery.logs.redaction.RedactingFilter"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "filters": ["nen_redact"]}},
"""

from __future__ import annotations

from typing import Any

from nen_celery.extras import requires_extra

with requires_extra("django", __name__):
    from django.apps import AppConfig
    from django.conf import settings as django_settings
    from django.core import checks
    from django.core.exceptions import ImproperlyConfigured
    from django.core.signals import setting_changed
    from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
    from django.urls import path
    from django.views.decorators.csrf import csrf_exempt
    from django.views.decorators.http import require_GET, require_POST

from nen_celery.checks.django_settings import system_check
from nen_celery.errors import ConfigurationError
from nen_celery.runtime import metrics
from nen_celery.settings import install_overrides
from nen_celery.web.answers import Answer
from nen_celery.web.host import receive
from nen_celery.web.verify import readiness

SETTING = "NEN_CELERY"

# nen_celery.E001 (NEN_CELERY set, this AppConfig not installed): registered here and by
# init_celery, so `manage.py check` reports it whether or not the AppConfig is installed
checks.register(system_check)


def install_from_settings() -> None:
    """Install ``settings.NEN_CELERY`` over the environment; ImproperlyConfigured names what is wrong."""
    values = getattr(django_settings, SETTING, None) or {}
    if not isinstance(values, dict):
        raise ImproperlyConfigured(f"{SETTING} must be a dict of nen-celery settings, got {type(values)}")
    try:
        install_overrides(values)
    except ConfigurationError as exc:
        raise ImproperlyConfigured(f"{SETTING}: {exc}") from None


def _on_setting_changed(*, setting: str, **_: Any) -> None:
    if setting == SETTING:
        install_from_settings()


class NenCeleryConfig(AppConfig):
    name = "nen_celery.web.django"
    label = "nen_celery"
    verbose_name = "nen-celery"

    def ready(self) -> None:
        install_from_settings()
        setting_changed.connect(_on_setting_changed, dispatch_uid="nen_celery.settings")


def _json(answer: Answer) -> JsonResponse:
    return JsonResponse(answer.body, status=answer.status_code)


@csrf_exempt  # Nen cannot hold a CSRF token; the HMAC signature authenticates the request
@require_POST
def webhook(request: HttpRequest) -> HttpResponse:
    """``POST``: verify the signature on the raw body, queue the webhook, answer within Nen's 5 s."""
    answer = receive(
        request.read,
        request.META.get("CONTENT_LENGTH") or None,
        request.headers,
        request.META.get("QUERY_STRING", ""),
    )
    return _json(answer)


@require_GET
def healthz(request: HttpRequest) -> HttpResponse:
    return _json(readiness())


@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    """Prometheus exposition (nen_celery.runtime.metrics), only with NEN_RECEIVER_METRICS (else
    404); rendered on the scrape thread, waited for at most 5 s."""
    if not metrics.public_on_receiver():
        raise Http404("metrics are off (NEN_RECEIVER_METRICS)")
    try:
        body, content_type = metrics.render_apart(5.0)
    except TimeoutError:
        return HttpResponse("metrics timed out", status=503, content_type="text/plain")
    return HttpResponse(body, content_type=content_type)


app_name = "nen_celery"
urlpatterns = [
    path("webhooks/nen", webhook, name="webhook"),
    path("healthz", healthz, name="healthz"),
    path("metrics", metrics_view, name="metrics"),
]
