from __future__ import annotations

from typing import Any

from nen_celery.checks.config import ERROR, WARNING, config_problems
from nen_celery.settings import Settings

FULL: dict[str, Any] = dict(
    api_key="k-secret-1",
    signing_key="s-secret-2",
    webhook_secret="w-secret-3",
    webhook_url="https://me.example/hook",
    secrets_key="ZmFrZWZha2VmYWtlZmFrZWZha2VmYWtlZmFrZWZha2U=",
)


def test_complete_configuration_has_no_problems() -> None:
    assert config_problems(Settings(**FULL)) == []


def test_each_missing_setting_is_named_without_echoing_secrets() -> None:
    cases = {
        "api_key": (ERROR, "NEN_API_KEY"),
        "signing_key": (WARNING, "NEN_SIGNING_KEY"),
        "secrets_key": (WARNING, "NEN_SECRETS_KEY"),
        "webhook_secret": (ERROR, "NEN_WEBHOOK_SECRET"),
        "webhook_url": (WARNING, "NEN_WEBHOOK_URL"),
    }
    for name, (level, setting) in cases.items():
        problems = config_problems(Settings(**{**FULL, name: None}))
        assert [(lvl, setting in msg) for lvl, msg in problems] == [(level, True)], name
        assert not any(v in msg for _, msg in problems for v in ("k-secret-1", "s-secret-2", "w-secret-3"))


def test_risky_choices_are_warned() -> None:
    problems = config_problems(
        Settings(**{**FULL, "webhook_url": "http://public.example/h", "retry_read_timeout": True})
    )
    assert [lvl for lvl, _ in problems] == [WARNING, WARNING]


def test_an_older_kombu_on_a_redis_broker_is_named_at_start() -> None:
    from nen_celery.checks.config import WARNING, kombu_problems

    [(level, message)] = kombu_problems("5.5.2", redis_broker=True)
    assert level == WARNING
    assert "kombu 5.5.2" in message and "NEN_RESTORE_INTERVAL" in message and "-P threads" in message
    assert kombu_problems("5.7.0", redis_broker=True) == []
    assert kombu_problems("5.5.2", redis_broker=False) == []  # RabbitMQ: no visibility timeout
    assert kombu_problems(None, redis_broker=True) == []
    assert kombu_problems("not-a-version", redis_broker=True) == []


def test_installed_overrides_drop_the_cached_context() -> None:
    """A host framework's settings (Django, Flask) take effect at once: the per-process context
    (clients built from the old settings) is rebuilt, through config's change hook."""
    from nen_celery.runtime.context import get_context
    from nen_celery.settings import get_settings, install_overrides

    before = get_context()
    try:
        install_overrides({"NEN_KEY_PREFIX": before.settings.key_prefix + "x"})
        after = get_context()
        assert after is not before
        assert after.settings.key_prefix == before.settings.key_prefix + "x" == get_settings().key_prefix
    finally:
        install_overrides({})
    assert get_context().settings.key_prefix == before.settings.key_prefix
