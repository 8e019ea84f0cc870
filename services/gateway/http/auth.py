"""Who may call the gateway's API: API keys with scopes, from `FLYWHEEL_API_KEYS`.

A route says which scope it needs with `dependencies=[require("read")]`, which also puts the
security schemes and the scope into the OpenAPI document. Routes anyone may call (health,
contracts, signed webhooks) say so with `openapi_extra=PUBLIC`. Everything else is guarded
by default: `guard`, an app-wide dependency, asks any route that declares neither for a valid
key of any scope, so a route added without thinking about access is not open to the world.

Keys are kept as SHA-256 digests and compared in constant time against all of them; the
plain key never stays in memory after start-up. With no keys configured every guarded call
is refused: there is no "open for development" mode to forget switched on.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Final, Literal, get_args

from fastapi import Depends, FastAPI, Request, Security, params
from fastapi.routing import APIRoute
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer, SecurityScopes

from services.gateway.http.problems import PROBLEM_JSON, TYPE_PREFIX, ProblemError
from services.gateway.http.views import Problem
from shared.settings import Settings

log = logging.getLogger(__name__)

Scope = Literal["ingest", "read", "admin"]
SCOPES: Final[tuple[str, ...]] = get_args(Scope)
REALM = "flywheel"
UNAUTHENTICATED = TYPE_PREFIX + "unauthenticated"
FORBIDDEN = TYPE_PREFIX + "insufficient-scope"
MIN_KEY_LENGTH = 16
_KEY = re.compile(r"^[A-Za-z0-9._~+/\-]+$")
_NAME = re.compile(r"^[A-Za-z0-9._\-]{1,64}$")

PUBLIC: Final[dict[str, Any]] = {"security": []}
"""`openapi_extra` of a route anyone may call: OpenAPI's "no security" and `guard`'s marker."""

_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="bearer",
    description="`Authorization: Bearer <key>` with a key from FLYWHEEL_API_KEYS.",
)
_api_key = APIKeyHeader(
    name="X-API-Key",
    auto_error=False,
    scheme_name="apiKey",
    description="`X-API-Key: <key>` with a key from FLYWHEEL_API_KEYS.",
)


@dataclass(frozen=True)
class ApiKey:
    """One configured credential: its name (for logs), digest and scopes."""

    name: str
    digest: bytes
    scopes: frozenset[str]


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


class ApiKeys:
    """The configured keys, by digest."""

    def __init__(self, keys: tuple[ApiKey, ...] = ()) -> None:
        self.keys = keys

    @classmethod
    def parse(cls, spec: str | None) -> ApiKeys:
        """`[name=]key:scope,scope;...`; a precise ValueError for anything else (the gateway
        then refuses to start, rather than start with keys it misread)."""
        keys: list[ApiKey] = []
        names: set[str] = set()
        digests: set[bytes] = set()
        entries = [e.strip() for e in (spec or "").split(";") if e.strip()]
        for n, entry in enumerate(entries, start=1):
            where = f"FLYWHEEL_API_KEYS entry {n}"
            credential, sep, scope_list = entry.rpartition(":")
            if not sep or not credential:
                raise ValueError(f"{where}: expected [name=]key:scope[,scope...]")
            name, eq, key = credential.partition("=")
            if not eq:
                name, key = f"key-{n}", credential
            if not _NAME.match(name):
                raise ValueError(f"{where}: the name must be 1-64 of A-Za-z0-9._-")
            if len(key) < MIN_KEY_LENGTH or not _KEY.match(key):
                raise ValueError(
                    f"{where} ({name}): a key is at least {MIN_KEY_LENGTH} characters of "
                    "A-Za-z0-9._~+/- (e.g. `python -c 'import secrets; "
                    "print(secrets.token_urlsafe(32))'`)"
                )
            scopes = frozenset(s.strip() for s in scope_list.split(",") if s.strip())
            unknown = sorted(scopes - set(SCOPES))
            if not scopes or unknown:
                raise ValueError(
                    f"{where} ({name}): scopes must be among {', '.join(SCOPES)}"
                    + (f"; unknown: {', '.join(unknown)}" if unknown else "")
                )
            digest = _digest(key)
            if name in names or digest in digests:
                raise ValueError(f"{where} ({name}): the name or the key is used twice")
            names.add(name)
            digests.add(digest)
            keys.append(ApiKey(name, digest, scopes))
        return cls(tuple(keys))

    def identify(self, presented: str) -> ApiKey | None:
        """The key presented, or None; compares against every key, found or not."""
        digest = _digest(presented)
        found: ApiKey | None = None
        for key in self.keys:
            if hmac.compare_digest(digest, key.digest):
                found = key
        return found


def install(app: FastAPI, settings: Settings) -> ApiKeys:
    """Read the keys (a ValueError stops the gateway) and make them the app's."""
    spec = settings.api_keys.get_secret_value() if settings.api_keys is not None else None
    keys = ApiKeys.parse(spec)
    app.state.api_keys = keys
    if not keys.keys:
        log.warning(
            "FLYWHEEL_API_KEYS is not set: every API call is refused with 401 (health, "
            "docs and signed webhooks stay open). Set it, e.g. "
            "FLYWHEEL_API_KEYS='dev=<16+ random chars>:ingest,read,admin'"
        )
    else:
        log.info(
            "API keys: %s",
            ", ".join(f"{k.name} ({','.join(sorted(k.scopes))})" for k in keys.keys),
        )
    return keys


def _challenge(error: str | None = None, scope: str | None = None) -> dict[str, str]:
    params = [f'realm="{REALM}"']
    if error:
        params.append(f'error="{error}"')
    if scope:
        params.append(f'scope="{scope}"')
    return {"WWW-Authenticate": "Bearer " + ", ".join(params)}


def _authenticate(
    request: Request,
    bearer: HTTPAuthorizationCredentials | None,
    api_key: str | None,
) -> ApiKey:
    keys: ApiKeys = getattr(request.app.state, "api_keys", ApiKeys())
    presented = bearer.credentials if bearer is not None else api_key
    if not presented:
        detail = "send an API key as `Authorization: Bearer <key>` or `X-API-Key: <key>`"
        scheme = request.headers.get("authorization", "").partition(" ")[0]
        if scheme and scheme.lower() != "bearer":
            detail += f" (the {scheme[:20]!r} authorization scheme is not accepted)"
        if not keys.keys:
            detail += "; this gateway has none configured (FLYWHEEL_API_KEYS)"
        raise ProblemError(
            401, UNAUTHENTICATED, "Authentication required", detail, None, _challenge()
        )
    key = keys.identify(presented)
    if key is None:
        log.info("%s %s: 401, unknown API key", request.method, request.url.path)
        raise ProblemError(
            401,
            UNAUTHENTICATED,
            "Authentication required",
            "the API key is not valid"
            + ("; this gateway has none configured (FLYWHEEL_API_KEYS)" if not keys.keys else ""),
            None,
            _challenge("invalid_token"),
        )
    request.state.api_key_name = key.name
    return key


async def authorize(
    request: Request,
    security_scopes: SecurityScopes,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
    api_key: Annotated[str | None, Security(_api_key)],
) -> ApiKey:
    """A valid key holding every scope the route asked for: else 401, or 403 (and nothing
    runs, so nothing changes)."""
    key = _authenticate(request, bearer, api_key)
    missing = [s for s in security_scopes.scopes if s not in key.scopes]
    if missing:
        log.info(
            "%s %s: 403, key %r lacks scope %s",
            request.method,
            request.url.path,
            key.name,
            ",".join(missing),
        )
        raise ProblemError(
            403,
            FORBIDDEN,
            "Insufficient scope",
            f"this call needs the {' and '.join(missing)} scope; key {key.name!r} has "
            f"{', '.join(sorted(key.scopes))}",
            None,
            _challenge("insufficient_scope", " ".join(security_scopes.scopes)),
        )
    return key


def require(*scopes: Scope) -> params.Depends:
    """A route dependency: `dependencies=[require("read")]`."""
    return params.Security(authorize, scopes=list(scopes))


def route_scopes(route: APIRoute) -> list[str] | None:
    """The scopes a route requires through `require`, or None if it declares none."""
    pending = list(route.dependant.dependencies)
    while pending:
        dependant = pending.pop()
        if dependant.call is authorize:
            return list(dependant.own_oauth_scopes or [])
        pending.extend(dependant.dependencies)
    return None


def is_public(route: APIRoute) -> bool:
    return (route.openapi_extra or {}).get("security") == []


_warned: set[str] = set()


def _presented(request: Request) -> tuple[HTTPAuthorizationCredentials | None, str | None]:
    """The credentials of a request, read as the security schemes read them."""
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    bearer = (
        HTTPAuthorizationCredentials(scheme=scheme, credentials=credentials.strip())
        if scheme.lower() == "bearer" and credentials.strip()
        else None
    )
    return bearer, request.headers.get("x-api-key")


async def _guard(request: Request) -> None:
    """Asks for a valid key on any route that is neither PUBLIC nor scoped (those say what
    they need themselves)."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        return
    declared = is_public(route) or route_scopes(route) is not None
    if not declared and route.path not in _warned:
        _warned.add(route.path)
        log.warning(
            "route %s declares no scope (auth.require) and is not PUBLIC: it asks for any "
            "valid API key",
            route.path,
        )
    if not declared:
        _authenticate(request, *_presented(request))


guard = Depends(_guard)
"""App-wide (`FastAPI(dependencies=[guard])`): deny by default."""


def _problem_doc(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "model": Problem,
        "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }


RESPONSES: Final[Mapping[int | str, dict[str, Any]]] = {
    401: _problem_doc("No API key, or not a valid one (see WWW-Authenticate)."),
    403: _problem_doc("The API key lacks the scope this call needs."),
}
"""The `responses` every guarded route adds to its own."""
