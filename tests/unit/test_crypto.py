"""Credentials encrypt under the newest master key and rotate without losing the old ones."""

from __future__ import annotations

import pytest

from sync.config import Secret
from sync.crypto import Vault, generate_key
from sync.errors import MasterKeyError


def test_round_trip_and_ciphertext_hides_the_value() -> None:
    vault = Vault([Secret(generate_key())])
    token = vault.encrypt({"password": "çok-gizli"})
    assert "gizli" not in token
    assert vault.decrypt(token) == {"password": "çok-gizli"}


def test_rotation_moves_tokens_to_the_first_key() -> None:
    old, new = generate_key(), generate_key()
    token = Vault([Secret(old)]).encrypt({"k": "v1234"})
    rotated = Vault([Secret(new), Secret(old)]).rotate(token)
    assert Vault([Secret(new)]).decrypt(rotated) == {"k": "v1234"}
    with pytest.raises(MasterKeyError):
        Vault([Secret(old)]).decrypt(rotated)


def test_wrong_or_malformed_key_is_a_clear_error() -> None:
    token = Vault([Secret(generate_key())]).encrypt({"k": "v1234"})
    with pytest.raises(MasterKeyError, match="does not decrypt"):
        Vault([Secret(generate_key())]).decrypt(token)
    with pytest.raises(MasterKeyError, match="not a Fernet key"):
        Vault([Secret("short")])
