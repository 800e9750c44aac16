"""The at-rest seal (store/sealer.py): round trips, key rotation, the legacy Fernet format, tampering."""

from __future__ import annotations

import base64

import pytest
from cryptography.fernet import Fernet

from nen_celery.errors import ConfigurationError
from nen_celery.store.sealer import LEGACY_PREFIX, PREFIX, Sealer, generate_key

DATA = b'{"status":"success","result_url":"https://bucket.example/x?X-Amz-Signature=abc"}'


def test_a_sealed_value_opens_to_the_same_bytes_and_shows_none_of_them() -> None:
    sealer = Sealer([generate_key()])
    token = sealer.seal(DATA)
    assert token.startswith(PREFIX)
    assert b"X-Amz-Signature" not in base64.urlsafe_b64decode(token[len(PREFIX) :])
    assert "X-Amz-Signature" not in token
    assert sealer.open(token) == DATA


def test_each_seal_uses_a_fresh_nonce() -> None:
    sealer = Sealer([generate_key()])
    assert sealer.seal(DATA) != sealer.seal(DATA)


def test_rotation_the_first_key_seals_and_every_key_opens() -> None:
    old, new = generate_key(), generate_key()
    sealed_with_old = Sealer([old]).seal(DATA)
    rotated = Sealer([new, old])
    assert rotated.open(sealed_with_old) == DATA
    sealed_after = rotated.seal(DATA)
    assert Sealer([new]).open(sealed_after) == DATA
    with pytest.raises(ConfigurationError, match="cannot be decrypted"):
        Sealer([old]).open(sealed_after)


def test_values_sealed_in_the_fernet_format_still_open() -> None:
    key = generate_key()
    legacy = LEGACY_PREFIX + Fernet(key.encode()).encrypt(DATA).decode()
    assert Sealer([generate_key(), key]).open(legacy) == DATA
    with pytest.raises(ConfigurationError, match="cannot be decrypted"):
        Sealer([generate_key()]).open(legacy)


@pytest.mark.parametrize("where", [0, 5, 20, -1])
def test_a_changed_byte_anywhere_is_refused(where: int) -> None:
    sealer = Sealer([generate_key()])
    raw = bytearray(base64.urlsafe_b64decode(sealer.seal(DATA)[len(PREFIX) :]))
    raw[where] ^= 0x01
    with pytest.raises(ConfigurationError, match="cannot be decrypted"):
        sealer.open(PREFIX + base64.urlsafe_b64encode(bytes(raw)).decode())


@pytest.mark.parametrize("text", ["", "!!!", "AAAA", "not base64 at all"])
def test_garbage_after_the_prefix_is_refused_with_a_clear_error(text: str) -> None:
    with pytest.raises(ConfigurationError, match="cannot be decrypted"):
        Sealer([generate_key()]).open(PREFIX + text)


def test_without_keys_sealing_refuses_and_sealed_data_is_not_passed_on() -> None:
    sealer = Sealer([])
    assert not sealer.enabled
    with pytest.raises(ConfigurationError, match="NEN_SECRETS_KEY"):
        sealer.seal(DATA)
    assert sealer.seal_if_enabled(DATA) == DATA.decode()
    assert sealer.open(DATA.decode()) == DATA  # never sealed: comes back as it is
    with pytest.raises(ConfigurationError, match="NEN_SECRETS_KEY is not set"):
        sealer.open(Sealer([generate_key()]).seal(DATA))


@pytest.mark.parametrize("key", ["short", "x" * 44, base64.urlsafe_b64encode(b"k" * 16).decode()])
def test_a_malformed_key_is_named_and_not_echoed(key: str) -> None:
    with pytest.raises(ConfigurationError, match="NEN_SECRETS_KEY") as exc:
        Sealer([key])
    assert key not in str(exc.value)
