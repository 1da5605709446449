"""Credentials at rest: Fernet under a MultiFernet of master keys (newest first).

Rotation without downtime: give every worker ``NEW,OLD`` (they read both, write NEW), run
``crm-esp-sync keys rotate`` (re-encrypts every row under NEW), then drop OLD.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from sync.config import Secret
from sync.errors import MasterKeyError
from sync.logs import SECRETS


def generate_key() -> str:
    return Fernet.generate_key().decode("ascii")


class Vault:
    """Encrypts and decrypts credential dictionaries; registers every value it reveals."""

    def __init__(self, keys: Sequence[Secret]) -> None:
        if not keys:
            raise MasterKeyError()
        fernets = []
        for position, key in enumerate(keys, start=1):
            SECRETS.register(key.reveal())
            try:
                fernets.append(Fernet(key.reveal().encode("ascii")))
            except (ValueError, UnicodeEncodeError):
                raise MasterKeyError(
                    f"master key #{position} is not a Fernet key (32 url-safe base64-encoded bytes); "
                    "create one with `crm-esp-sync keys generate`"
                ) from None
        self._fernet = MultiFernet(fernets)

    def encrypt(self, credentials: Mapping[str, str]) -> str:
        SECRETS.register(*credentials.values())
        return self._fernet.encrypt(json.dumps(dict(credentials), sort_keys=True).encode("utf-8")).decode("ascii")

    def decrypt(self, token: str) -> dict[str, str]:
        try:
            plain = self._fernet.decrypt(token.encode("ascii"))
        except InvalidToken:
            raise MasterKeyError(
                "the master key does not decrypt the stored credentials (wrong CRM_ESP_SYNC_MASTER_KEY?)"
            ) from None
        credentials: dict[str, str] = json.loads(plain)
        SECRETS.register(*credentials.values())
        return credentials

    def rotate(self, token: str) -> str:
        """Re-encrypt ``token`` under the first (newest) key."""
        try:
            return self._fernet.rotate(token.encode("ascii")).decode("ascii")
        except InvalidToken:
            raise MasterKeyError("a stored credential cannot be decrypted with any of the given master keys") from None
