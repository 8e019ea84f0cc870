"""One login role and one database per service, on any PostgreSQL server: the dev stack's local
cluster, a container, or an external server (FLYWHEEL_POSTGRES_ADMIN_URL).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import time
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

import asyncpg

from devstack.common import StackError
from devstack.postgres import state_secret


def role_name(service: str) -> str:
    """Role name = database name: one database per service, reachable only by its role."""
    return f"flywheel_{service}"


def service_passwords(
    admin_url: str, services: Iterable[str], fallback_secret: Path
) -> dict[str, str]:
    """Each service role's password, derived from the superuser's credentials.

    Deterministic on purpose: two stacks (two checkouts, parallel test workers) provisioning on
    one shared server compute the same passwords, so neither breaks the other's connections
    when it re-applies them. Only a password-less admin URL falls back to a per-state-dir key.
    """
    parts = urlsplit(admin_url)
    if parts.password:
        key = f"{unquote(parts.username or '')}:{unquote(parts.password)}".encode()
    else:
        key = state_secret(fallback_secret).encode()
    return {
        service: base64.urlsafe_b64encode(
            hmac.new(key, f"flywheel:{role_name(service)}".encode(), hashlib.sha256).digest()
        ).decode()[:24]
        for service in services
    }


def service_url(admin_url: str, service: str, password: str) -> str:
    """The service's own URL on the admin URL's server."""
    parts = urlsplit(admin_url)
    host = parts.hostname or "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    port = parts.port or 5432
    name = role_name(service)
    return f"postgresql://{name}:{quote(password, safe='')}@{host}:{port}/{name}"


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


async def connect_admin(admin_url: str, timeout_s: float) -> asyncpg.Connection:
    """Connect as the superuser, retrying while the server comes up."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return await asyncpg.connect(admin_url, timeout=5)
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            if time.monotonic() >= deadline:
                host = urlsplit(admin_url).hostname
                raise StackError(
                    f"cannot connect to PostgreSQL at {host}:{urlsplit(admin_url).port} as "
                    f"superuser: {exc}"
                ) from exc
            await asyncio.sleep(0.2)


async def provision(admin_url: str, passwords: dict[str, str], *, timeout_s: float = 30.0) -> None:
    """Create (or align) one login role and one database per service, idempotently.

    Each database is owned by its role and closed to PUBLIC, so a service can reach its own
    database and no other. Passwords are derived (see service_passwords), so re-applying them
    to an existing role changes nothing for other stacks sharing the server.
    """
    conn = await connect_admin(admin_url, timeout_s)
    try:
        for service, password in passwords.items():
            name = role_name(service)
            exists = await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", name)
            # Re-applying the password is harmless: it is derived, so always the same.
            verb = "ALTER" if exists else "CREATE"
            with contextlib.suppress(asyncpg.DuplicateObjectError):
                await conn.execute(
                    f"{verb} ROLE {_ident(name)} LOGIN PASSWORD {_literal(password)}"
                )
            if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
                with contextlib.suppress(asyncpg.DuplicateDatabaseError):
                    await conn.execute(f"CREATE DATABASE {_ident(name)} OWNER {_ident(name)}")
            await conn.execute(f"REVOKE ALL ON DATABASE {_ident(name)} FROM PUBLIC")
            await conn.execute(f"GRANT ALL ON DATABASE {_ident(name)} TO {_ident(name)}")
    finally:
        await conn.close()
