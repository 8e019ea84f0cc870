"""The deployment's pseudonym key: what turns a platform identity into the member id the log
knows it by (`shared.members.pseudonym`).

It comes from FLYWHEEL_PSEUDONYM_KEY, or, unset, is generated once and kept in the gateway's
database, which every replica shares. Either way the database keeps its fingerprint, and a
gateway started with another key stops with an error instead of giving every person a new
member id. Kept apart from the database (the variable), a backup of it and a copy of the log
together still do not say whose activity a pseudonym was once the identity is erased.
"""

from __future__ import annotations

import hashlib
import logging
import secrets

from pydantic import SecretStr

from services.gateway.http.problems import Unavailable
from shared.members import pseudonym
from shared.postgres import Connection

log = logging.getLogger(__name__)

VARIABLE = "FLYWHEEL_PSEUDONYM_KEY"


class PseudonymKeyError(ValueError):
    """The configured key is not the one this database's member ids were made with."""


def fingerprint(key: str) -> str:
    """Names a key without giving it away."""
    return hashlib.sha256(b"flywheel:pseudonym-key\x1f" + key.encode()).hexdigest()[:16]


class Pseudonyms:
    """`of(platform, user id)`: an identity's pseudonym, once `load` ran at start-up."""

    def __init__(self) -> None:
        self._key: bytes | None = None

    def of(self, platform: str, platform_user_id: str) -> str:
        if self._key is None:
            raise Unavailable("database", "the gateway is not started yet")
        return pseudonym(self._key, platform, platform_user_id)

    async def load(self, conn: Connection, configured: SecretStr | None) -> None:
        """Take the configured key, or the database's; make one on a first start without."""
        wanted = configured.get_secret_value() if configured is not None else ""
        async with conn.transaction():
            await conn.execute("LOCK TABLE pseudonym_key IN SHARE ROW EXCLUSIVE MODE")
            row = await conn.fetchrow("SELECT key, fingerprint FROM pseudonym_key")
            if row is None:
                key = wanted or secrets.token_urlsafe(32)
                await conn.execute(
                    "INSERT INTO pseudonym_key (key, fingerprint) VALUES ($1, $2)",
                    None if wanted else key,
                    fingerprint(key),
                )
                if not wanted:
                    log.warning(
                        "pseudonym key generated and kept in the gateway's database; set %s "
                        "to keep it apart from database backups (docs/SECURITY.md)",
                        VARIABLE,
                    )
            elif wanted:
                if fingerprint(wanted) != row["fingerprint"]:
                    raise PseudonymKeyError(
                        f"{VARIABLE} is not the key this database's member ids were made with "
                        f"(fingerprint {row['fingerprint']}): with it every person would get a "
                        "new member id. Set the original key (docs/SECURITY.md, Rotation)."
                    )
                key = wanted
                if row["key"] is not None:  # moved out of the database into the variable
                    await conn.execute("UPDATE pseudonym_key SET key = NULL")
                    log.info("pseudonym key now taken from %s; removed from the database", VARIABLE)
            elif row["key"] is None:
                raise PseudonymKeyError(
                    f"{VARIABLE} is not set, and this database's member ids were made with it "
                    f"(fingerprint {row['fingerprint']}): set it"
                )
            else:
                key = row["key"]
        self._key = key.encode()
