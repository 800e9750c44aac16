"""Authenticated encryption for data that must not rest in clear (secure params, result URLs).

MultiFernet over ``NEN_SECRETS_KEY`` (comma-separated keys): the first key encrypts, every key
decrypts, so keys rotate by prepending a new one and dropping the old once data has expired.
"""

from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from .config import ConfigurationError, Settings

SEALED_PREFIX = "fernet:"


class Sealer:
    """Seals bytes into an opaque token; without keys it refuses or passes through, by call."""

    def __init__(self, keys: list[str]) -> None:
        try:
            self._fernet = MultiFernet([Fernet(k.encode()) for k in keys]) if keys else None
        except ValueError:
            raise ConfigurationError(
                "NEN_SECRETS_KEY must be comma-separated Fernet keys "
                "(generate one with `nen-celery secrets-key generate`)"
            ) from None

    @classmethod
    def from_settings(cls, settings: Settings) -> Sealer:
        return cls(settings.secrets_keys)

    @property
    def enabled(self) -> bool:
        return self._fernet is not None

    def seal(self, data: bytes) -> str:
        """Encrypt; raises ConfigurationError when no key is configured (never falls back)."""
        if self._fernet is None:
            raise ConfigurationError("secure data needs NEN_SECRETS_KEY to be encrypted at rest")
        return SEALED_PREFIX + self._fernet.encrypt(data).decode()

    def seal_if_enabled(self, data: bytes) -> str:
        """Encrypt when a key is configured, else keep the text (payloads without secure params)."""
        return self.seal(data) if self._fernet is not None else data.decode()

    def open(self, token: str) -> bytes:
        if not token.startswith(SEALED_PREFIX):
            return token.encode()
        if self._fernet is None:
            raise ConfigurationError("sealed data found but NEN_SECRETS_KEY is not set")
        try:
            return self._fernet.decrypt(token[len(SEALED_PREFIX) :].encode())
        except InvalidToken:
            raise ConfigurationError(
                "sealed data cannot be decrypted with any key in NEN_SECRETS_KEY"
            ) from None


def generate_key() -> str:
    return Fernet.generate_key().decode()
