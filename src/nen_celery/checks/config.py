"""Configuration checks run at worker start (and by ``nen-celery config check`` later).

Pure: settings in, problems out. Never echoes a secret's value.
"""

from __future__ import annotations

from packaging.version import InvalidVersion, Version

from nen_celery.settings import Settings

ERROR = "error"
WARNING = "warning"


def config_problems(settings: Settings) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    if settings.api_key is None:
        problems.append((ERROR, "NEN_API_KEY is not set: submit_run cannot call Nen"))
    if settings.signing_key is None:
        problems.append((WARNING, "NEN_SIGNING_KEY is not set: runs with secure params will fail"))
    if not settings.secrets_keys:
        problems.append(
            (
                WARNING,
                "NEN_SECRETS_KEY is not set: secure params are refused and webhook "
                "payloads (presigned URLs) are stored unencrypted",
            )
        )
    if settings.webhook_url is None:
        problems.append((WARNING, "NEN_WEBHOOK_URL is not set: no-webhook mode, results are polled"))
    elif not settings.webhook_secrets:
        problems.append(
            (
                ERROR,
                "NEN_WEBHOOK_URL is set but NEN_WEBHOOK_SECRET is not: "
                "the receiver will refuse every webhook",
            )
        )
    if (
        settings.webhook_url
        and settings.webhook_url.startswith("http://")
        and not any(host in settings.webhook_url for host in ("://127.", "://localhost", "://[::1]"))
    ):
        problems.append((WARNING, "NEN_WEBHOOK_URL is plain http: use https in production"))
    if settings.retry_unknown:
        problems.append(
            (
                WARNING,
                "NEN_RETRY_AMBIGUOUS (or NEN_RETRY_READ_TIMEOUT)=true: a POST whose outcome is "
                "unknown is resent; unless Nen deduplicates by Idempotency-Key it may start that "
                "workflow twice",
            )
        )
    return problems


# kombu 5.7 added the Redis transport options nen sets for a prompt restore, and wakes a
# -P threads worker's loop when a task ends; every Celery 5.5 runs on an older kombu
KOMBU_PROMPT = Version("5.7")


def kombu_problems(kombu_version: str | None, redis_broker: bool) -> list[tuple[str, str]]:
    """What an older kombu's Redis transport does not do that nen's settings assume."""
    if not redis_broker or kombu_version is None:
        return []
    try:
        old = Version(kombu_version) < KOMBU_PROMPT
    except InvalidVersion:
        return []
    if not old:
        return []
    return [
        (
            WARNING,
            f"kombu {kombu_version} (< 5.7) on a Redis broker ignores NEN_RESTORE_INTERVAL: a "
            "vanished worker's messages come back after NEN_VISIBILITY_TIMEOUT plus up to 100 s; "
            "and a -P threads worker with a full prefetch window waits up to 10 s for its next "
            "message (stock kombu). kombu >= 5.7 (Celery >= 5.6) does neither",
        )
    ]
