"""Authenticated encryption for data that must not rest in clear (secure params, result URLs).

Keys: ``NEN_SECRETS_KEY``, comma-separated Fernet-format keys (32 random bytes, url-safe
base64). The first key seals, every key opens, so keys rotate by prepending a new one and
dropping the old once data sealed with it has expired.

Format ``nen2:`` + url-safe base64 of ``key id (4) | nonce (12) | AES-256-GCM ciphertext+tag``.
The AES key and its id are derived from each configured key with HKDF-SHA256; the prefix and
the key id are authenticated as associated data. Why not Fernet (``fernet:``, still opened):
the receiver seals every webhook, and one AEAD call costs a quarter of Fernet's AES-CBC +
HMAC assembled in Python. Random 96-bit nonces are safe for 2**32 seals per key: rotate long
before that.
"""

from __future__ import annotations

import base64
import binascii
import os

from cryptography.exceptions import InvalidTag
from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from nen_celery.errors import ConfigurationError
from nen_celery.settings import Settings

PREFIX = "nen2:"
LEGACY_PREFIX = "fernet:"  # written before nen2; opened, never written
_KEY_ID, _NONCE = 4, 12
_AAD = PREFIX.encode()


def _derive(key: str) -> tuple[bytes, AESGCM]:
    """(key id, AEAD) for one configured key (already checked by ``Fernet``)."""
    material = HKDF(
        algorithm=hashes.SHA256(), length=32 + _KEY_ID, salt=None, info=b"nen-celery seal v2"
    ).derive(base64.urlsafe_b64decode(key))
    return material[32:], AESGCM(material[:32])


class Sealer:
    """Seals bytes into an opaque token; without keys it refuses or passes through, by call."""

    def __init__(self, keys: list[str]) -> None:
        try:
            fernets = [Fernet(k.encode()) for k in keys]  # the format check
        except (ValueError, binascii.Error):
            raise ConfigurationError(
                "NEN_SECRETS_KEY must be comma-separated Fernet keys "
                "(generate one with `nen-celery secrets-key generate`)"
            ) from None
        self._keys = [_derive(k) for k in keys]
        self._fernet = MultiFernet(fernets) if fernets else None

    @classmethod
    def from_settings(cls, settings: Settings) -> Sealer:
        return cls(settings.secrets_keys)

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def seal(self, data: bytes) -> str:
        """Encrypt; raises ConfigurationError when no key is configured (never falls back)."""
        if not self._keys:
            raise ConfigurationError("secure data needs NEN_SECRETS_KEY to be encrypted at rest")
        key_id, aead = self._keys[0]
        nonce = os.urandom(_NONCE)
        sealed = aead.encrypt(nonce, data, _AAD + key_id)
        return PREFIX + base64.urlsafe_b64encode(key_id + nonce + sealed).decode()

    def seal_if_enabled(self, data: bytes) -> str:
        """Encrypt when a key is configured, else keep the text (payloads without secure params)."""
        return self.seal(data) if self._keys else data.decode()

    def open(self, token: str) -> bytes:
        """The sealed bytes; text that was never sealed comes back as it is."""
        if token.startswith(PREFIX):
            return self._open(token[len(PREFIX) :])
        if token.startswith(LEGACY_PREFIX):
            return self._open_legacy(token[len(LEGACY_PREFIX) :])
        return token.encode()

    def _open(self, text: str) -> bytes:
        if not self._keys:
            raise ConfigurationError("sealed data found but NEN_SECRETS_KEY is not set")
        try:
            raw = base64.urlsafe_b64decode(text)
        except (ValueError, binascii.Error):
            raw = b""
        key_id, nonce, sealed = raw[:_KEY_ID], raw[_KEY_ID : _KEY_ID + _NONCE], raw[_KEY_ID + _NONCE :]
        for candidate, aead in self._keys:
            if candidate != key_id or len(nonce) != _NONCE:
                continue
            try:
                return aead.decrypt(nonce, sealed, _AAD + key_id)
            except InvalidTag:
                continue  # a 4-byte id can collide: try any other key with the same id
        raise ConfigurationError("sealed data cannot be decrypted with any key in NEN_SECRETS_KEY")

    def _open_legacy(self, text: str) -> bytes:
        if self._fernet is None:
            raise ConfigurationError("sealed data found but NEN_SECRETS_KEY is not set")
        try:
            return self._fernet.decrypt(text.encode())
        except InvalidToken:
            raise ConfigurationError(
                "sealed data cannot be decrypted with any key in NEN_SECRETS_KEY"
            ) from None


def generate_key() -> str:
    return Fernet.generate_key().decode()
