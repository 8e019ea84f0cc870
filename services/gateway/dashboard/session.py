"""The dashboard's session: a login trades an API key holding the `read` scope for a signed
cookie, so the browser never keeps the key.

The cookie is `base64url(json{name, exp}) "." base64url(HMAC-SHA256(secret, payload))`: the
key's name (never the key) and an expiry. It is HttpOnly, SameSite=Strict, Path=/dashboard,
and Secure when the page was served over https. A session is good while its signature
verifies, it has not expired, and the key it was made from is still configured with the
`read` scope: removing a key from FLYWHEEL_API_KEYS ends its sessions at the next restart.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import secrets
import time
from dataclasses import dataclass

from services.gateway.http.auth import ApiKeys
from shared.settings import Settings

log = logging.getLogger(__name__)

COOKIE = "flywheel_session"
PATH = "/dashboard"
MIN_SECRET = 32


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class Session:
    key_name: str
    expires_at: float


class Sessions:
    def __init__(self, settings: Settings) -> None:
        secret = (
            settings.dashboard_session_secret.get_secret_value()
            if settings.dashboard_session_secret is not None
            else None
        )
        if secret is not None and len(secret) < MIN_SECRET:
            raise ValueError(f"FLYWHEEL_DASHBOARD_SESSION_SECRET: at least {MIN_SECRET} characters")
        if secret is None:
            log.info(
                "FLYWHEEL_DASHBOARD_SESSION_SECRET is not set: dashboard sessions are signed "
                "with a random key and end when this gateway restarts"
            )
        self._secret = (secret or secrets.token_urlsafe(48)).encode()
        self.ttl_s = settings.dashboard_session_ttl_s

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self._secret, payload.encode(), hashlib.sha256).digest())

    def issue(self, key_name: str, now: float | None = None) -> str:
        expires = (now or time.time()) + self.ttl_s
        payload = _b64(json.dumps({"name": key_name, "exp": int(expires)}).encode())
        return f"{payload}.{self._sign(payload)}"

    def verify(self, cookie: str | None, keys: ApiKeys, now: float | None = None) -> Session | None:
        if not cookie or "." not in cookie:
            return None
        payload, _, signature = cookie.partition(".")
        if not hmac.compare_digest(self._sign(payload), signature):
            return None
        try:
            data = json.loads(_unb64(payload))
            name, expires = str(data["name"]), float(data["exp"])
        except (binascii.Error, ValueError, KeyError, TypeError):
            return None
        if expires <= (now or time.time()):
            return None
        if not any(k.name == name and "read" in k.scopes for k in keys.keys):
            return None  # the key is gone, or lost its read scope
        return Session(name, expires)
