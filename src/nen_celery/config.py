"""One Settings object, read from the environment (prefix ``NEN_``) once per process."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class ConfigurationError(RuntimeError):
    """A setting the requested operation needs is missing or invalid; the message names it."""


def _split(value: str | None) -> list[str]:
    return [part.strip() for part in (value or "").split(",") if part.strip()]


class Settings(BaseSettings):
    """Every knob the project has. Each documented Nen gap is a setting, not a constant."""

    model_config = SettingsConfigDict(env_prefix="NEN_", extra="ignore", frozen=True)

    # Nen API
    api_url: str = "https://api.getnen.ai"
    api_key: SecretStr | None = None
    signing_key: SecretStr | None = None
    webhook_url: str | None = None
    webhook_field: str = "webhook_callback"
    retrieval_path: str = "/runs/{message_id}"

    # Webhooks in
    webhook_secret: SecretStr | None = None  # comma-separated: several accepted while rotating
    webhook_max_body: int = Field(default=1024 * 1024, gt=0)

    # Secrets at rest: comma-separated Fernet keys, the first encrypts, all decrypt.
    secrets_key: SecretStr | None = None

    # Redis / Celery
    redis_url: str = "redis://localhost:6379/0"
    broker_url: str | None = None
    result_backend: str | None = None
    key_prefix: str = "nen"
    visibility_timeout: int = Field(default=3600, gt=0)

    # HTTP towards Nen
    connect_timeout: float = Field(default=5.0, gt=0)
    read_timeout: float = Field(default=30.0, gt=0)
    write_timeout: float = Field(default=10.0, gt=0)
    pool_timeout: float = Field(default=5.0, gt=0)
    retry_read_timeout: bool = False
    retry_statuses: str = "429,502,503,504"
    submit_deadline: float = Field(default=30.0, gt=0)
    backoff_initial: float = Field(default=0.5, gt=0)
    backoff_max: float = Field(default=10.0, gt=0)
    submit_reschedules: int = Field(default=5, ge=0)
    reschedule_delay: float = Field(default=30.0, gt=0, le=60)

    # Lifecycle
    retention_seconds: int = Field(default=7 * 24 * 3600, gt=0)
    completion_lease: float = Field(default=60.0, gt=0, le=60)
    publish_timeout: float = Field(default=2.0, gt=0)
    poll_interval: float = Field(default=5.0, gt=0, le=60)

    @field_validator("api_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"NEN_API_URL must start with http:// or https://, got {value!r}")
        return value.rstrip("/")

    @field_validator("webhook_url")
    @classmethod
    def _webhook_url(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        assert value is not None
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"NEN_WEBHOOK_URL must start with http:// or https://, got {value!r}")
        return value

    @field_validator("retrieval_path")
    @classmethod
    def _retrieval_path(cls, value: str) -> str:
        if "{message_id}" not in value or not value.startswith("/"):
            raise ValueError("NEN_RETRIEVAL_PATH must start with / and contain {message_id}")
        return value

    @field_validator("retry_statuses")
    @classmethod
    def _statuses(cls, value: str) -> str:
        for part in _split(value):
            if not part.isdigit() or not 400 <= int(part) <= 599:
                raise ValueError(f"NEN_RETRY_STATUSES: {part!r} is not an HTTP 4xx/5xx status")
        return value

    @property
    def retryable_statuses(self) -> frozenset[int]:
        return frozenset(int(p) for p in _split(self.retry_statuses))

    @property
    def broker(self) -> str:
        return self.broker_url or self.redis_url

    @property
    def webhook_secrets(self) -> list[str]:
        return _split(self.webhook_secret.get_secret_value() if self.webhook_secret else None)

    @property
    def secrets_keys(self) -> list[str]:
        return _split(self.secrets_key.get_secret_value() if self.secrets_key else None)

    def require(self, *names: str) -> None:
        """Raise ConfigurationError naming every listed setting that is unset."""
        missing = [f"NEN_{n.upper()}" for n in names if not getattr(self, n)]
        if missing:
            raise ConfigurationError(f"missing setting(s): {', '.join(missing)}")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read from the environment on first use."""
    try:
        return Settings()
    except Exception as exc:  # pydantic ValidationError -> one clear message
        raise ConfigurationError(f"invalid settings: {exc}") from None


def reset_settings(**_: Any) -> None:
    """Forget the cached settings (tests and CLI re-read the environment)."""
    get_settings.cache_clear()
