"""Outbound signing secrets at rest: encrypted in PostgreSQL under keys from the environment.

A subscription's `whsec_...` secret signs every webhook to its receiver, so whoever reads it
can forge webhooks to that receiver. It must be stored readable by the gateway (to sign), so
it is encrypted, not hashed: Fernet (AES-128-CBC and HMAC-SHA256, `cryptography`), under
`FLYWHEEL_SECRETS_KEYS`, which lives in the environment (a Kubernetes Secret), never in the
database. A backup of the database alone forges nothing.

Stored form: `fernet:<token>`; a row without the prefix is plaintext from before this
existed. `MultiFernet`: the first key encrypts, every key decrypts. At start-up the gateway
`reseal`s every row — plaintext ones are encrypted, ones under an older key are re-encrypted
under the first — so rotating is: put a new key first, start the gateway (every replica
then reads both), drop the old key at the next roll-out.
"""

from __future__ import annotations

import base64
import binascii
import logging
from dataclasses import dataclass

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from services.gateway.http import strength
from shared.postgres import Connection
from shared.settings import Settings

log = logging.getLogger(__name__)

PREFIX = "fernet:"


class SecretUnreadable(Exception):
    """A stored secret none of the configured keys decrypts."""


def parse_keys(spec: str) -> list[Fernet]:
    """`FLYWHEEL_SECRETS_KEYS`: comma-separated Fernet keys; a ValueError naming the entry
    (never its value) for one that is malformed, a placeholder or not random."""
    keys: list[Fernet] = []
    entries = [e.strip() for e in spec.split(",") if e.strip()]
    if not entries:
        raise ValueError("FLYWHEEL_SECRETS_KEYS holds no key")
    for n, entry in enumerate(entries, start=1):
        where = f"FLYWHEEL_SECRETS_KEYS key {n}"
        if strength.PLACEHOLDERS.search(entry):
            raise ValueError(f"{where} is a placeholder: set a real key")
        try:
            raw = base64.urlsafe_b64decode(entry.encode())
        except (binascii.Error, ValueError):
            raw = b""
        if len(raw) != 32:
            raise ValueError(
                f"{where} is not a Fernet key (32 url-safe base64-encoded bytes; make one with "
                "`python -c 'from cryptography.fernet import Fernet; "
                "print(Fernet.generate_key().decode())'`)"
            )
        if len(set(raw)) < 16:  # 32 random bytes have ~28 distinct values
            raise ValueError(f"{where} is not random (too few distinct bytes)")
        keys.append(Fernet(entry.encode()))
    return keys


@dataclass
class SecretVault:
    keys: list[Fernet]

    def __post_init__(self) -> None:
        self._all = MultiFernet(self.keys)
        self._primary = self.keys[0]

    @classmethod
    def from_settings(cls, settings: Settings) -> SecretVault | None:
        """None when no keys are configured: outbound webhooks are off."""
        if settings.secrets_keys is None or not settings.secrets_keys.get_secret_value():
            return None
        return cls(parse_keys(settings.secrets_keys.get_secret_value()))

    def seal(self, secret: str) -> str:
        return PREFIX + self._all.encrypt(secret.encode()).decode()

    def open(self, stored: str) -> str:
        """The secret of a stored value (a plaintext one from before encryption as is)."""
        if not stored.startswith(PREFIX):
            return stored
        try:
            return self._all.decrypt(stored.removeprefix(PREFIX).encode()).decode()
        except InvalidToken as exc:
            raise SecretUnreadable(
                "the signing secret cannot be decrypted: its key is not in FLYWHEEL_SECRETS_KEYS"
            ) from exc

    def current(self, stored: str) -> bool:
        """Encrypted under the first key already?"""
        if not stored.startswith(PREFIX):
            return False
        try:
            self._primary.decrypt(stored.removeprefix(PREFIX).encode())
        except InvalidToken:
            return False
        return True

    def reseal(self, stored: str) -> str:
        """Encrypted under the first key (a SecretUnreadable if no key opens it)."""
        return self.seal(self.open(stored))


@dataclass(frozen=True)
class ResealReport:
    sealed: int  # plaintext or older-key rows now under the first key
    unreadable: list[str]  # subscription ids whose secret no key opens


async def reseal_all(conn: Connection, vault: SecretVault) -> ResealReport:
    """Encrypt every plaintext secret and re-encrypt every older-key one under the first key,
    in one transaction (replicas starting together wait on the row locks). Rows no key opens
    are left as they are and reported: their deliveries fail, saying so, until the key that
    sealed them is configured again."""
    sealed = 0
    unreadable: list[str] = []
    async with conn.transaction():
        rows = await conn.fetch(
            "SELECT id, secret FROM outbound_subscriptions ORDER BY id FOR UPDATE"
        )
        for row in rows:
            if vault.current(row["secret"]):
                continue
            try:
                new = vault.reseal(row["secret"])
            except SecretUnreadable:
                unreadable.append(row["id"])
                continue
            await conn.execute(
                "UPDATE outbound_subscriptions SET secret = $2 WHERE id = $1", row["id"], new
            )
            sealed += 1
    if sealed:
        log.info("webhook signing secrets: %d encrypted under the current key", sealed)
    if unreadable:
        log.error(
            "webhook signing secrets of %d subscriptions (%s) cannot be decrypted with "
            "FLYWHEEL_SECRETS_KEYS: add back the key that encrypted them",
            len(unreadable),
            ", ".join(unreadable),
        )
    return ResealReport(sealed, unreadable)
