"""Who may call the gateway: API keys with scopes, deny by default, and what stays open.

Without a key: 401 with WWW-Authenticate; with a key lacking the scope: 403; both problem
documents, and nothing happens (nothing published). Health, readiness, the contracts and
the signed webhooks need no key.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi import APIRouter
from fastapi.testclient import TestClient

from services.gateway.bootstrap import create_app
from services.gateway.http import auth
from services.gateway.webhooks import InMemoryWebhookStore, router
from shared.settings import Settings
from tests.test_gateway_api import FakeJourney, Readiness, RecordingPublisher, activity, settings

KEYS = {
    "ingest": "ingest-key-0123456789",
    "read": "read-key-0123456789ab",
    "admin": "admin-key-0123456789a",
}
SPEC = ";".join(f"{scope}-client={key}:{scope}" for scope, key in KEYS.items())

# every guarded operation, and the scope it needs
GUARDED: list[tuple[str, str, str]] = [
    ("POST", "/v1/activities", "ingest"),
    ("GET", "/v1/members/m-1/journey", "read"),
    ("GET", "/v1/stages", "read"),
    ("GET", "/v1/webhooks/stats", "admin"),
]
OPEN = ["/healthz", "/readyz", "/openapi.json", "/docs", "/redoc", "/asyncapi.json"]


@dataclass
class Gateway:
    client: TestClient
    publisher: RecordingPublisher


def gateway(api_keys: str | None) -> Iterator[Gateway]:
    publisher = RecordingPublisher()
    configured = settings(api_keys=api_keys, github_webhook_secret="gh-secret")
    app = create_app(
        publisher=publisher, journey=FakeJourney(), readiness=Readiness(), settings=configured
    )
    app.include_router(
        router(publisher=publisher, store=InMemoryWebhookStore(), settings=configured)
    )
    with TestClient(app, raise_server_exceptions=False) as client:
        yield Gateway(client, publisher)


@pytest.fixture
def gw() -> Iterator[Gateway]:
    yield from gateway(SPEC)


def call(gw: Gateway, method: str, path: str, headers: dict[str, str] | None = None) -> Any:
    if method == "POST":
        return gw.client.post(path, json=activity(1), headers=headers or {})
    return gw.client.request(method, path, headers=headers or {})


def assert_problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["status"] == status and body["type"] and body["detail"]
    return body


# ---- 401 / 403 / 2xx, per scope ------------------------------------------------------------


@pytest.mark.parametrize(("method", "path", "scope"), GUARDED)
def test_without_a_key_it_is_401(gw: Gateway, method: str, path: str, scope: str) -> None:
    response = call(gw, method, path)
    problem = assert_problem(response, 401)
    assert problem["type"] == auth.UNAUTHENTICATED
    assert response.headers["www-authenticate"] == 'Bearer realm="flywheel"'
    assert gw.publisher.records == []


@pytest.mark.parametrize(("method", "path", "scope"), GUARDED)
def test_with_an_unknown_key_it_is_401(gw: Gateway, method: str, path: str, scope: str) -> None:
    for headers in (
        {"Authorization": "Bearer not-a-key-of-this-gateway"},
        {"X-API-Key": KEYS[scope] + "x"},
        {"Authorization": f"Basic {KEYS[scope]}"},  # the key, but not as a bearer token
    ):
        response = call(gw, method, path, headers)
        assert_problem(response, 401)
        assert response.headers["www-authenticate"].startswith("Bearer ")
    assert gw.publisher.records == []


@pytest.mark.parametrize(("method", "path", "scope"), GUARDED)
def test_a_key_without_the_scope_is_403(gw: Gateway, method: str, path: str, scope: str) -> None:
    for other in set(KEYS) - {scope}:
        response = call(gw, method, path, {"Authorization": f"Bearer {KEYS[other]}"})
        problem = assert_problem(response, 403)
        assert problem["type"] == auth.FORBIDDEN
        assert scope in problem["detail"] and f"{other}-client" in problem["detail"]
        assert response.headers["www-authenticate"] == (
            f'Bearer realm="flywheel", error="insufficient_scope", scope="{scope}"'
        )
    assert gw.publisher.records == []


@pytest.mark.parametrize(("method", "path", "scope"), GUARDED)
@pytest.mark.parametrize("how", ["bearer", "x-api-key"])
def test_a_key_with_the_scope_is_served(
    gw: Gateway, method: str, path: str, scope: str, how: str
) -> None:
    key = KEYS[scope]
    headers = {"Authorization": f"Bearer {key}"} if how == "bearer" else {"X-API-Key": key}
    response = call(gw, method, path, headers)
    # the member has no journey in the fake read model: 404 is the route answering
    assert response.status_code in (200, 202, 404), response.text
    if method == "POST":
        assert response.status_code == 202 and len(gw.publisher.records) == 1


def test_a_key_may_hold_several_scopes() -> None:
    for gw in gateway("ops=ops-key-0123456789ab:read,admin"):
        headers = {"X-API-Key": "ops-key-0123456789ab"}
        assert gw.client.get("/v1/stages", headers=headers).status_code == 200
        assert gw.client.get("/v1/webhooks/stats", headers=headers).status_code == 200
        assert_problem(gw.client.post("/v1/activities", json=activity(1), headers=headers), 403)


def test_authentication_comes_before_validation(gw: Gateway) -> None:
    """An unauthenticated caller learns nothing about what a valid request looks like."""
    response = gw.client.post("/v1/activities", content=b"{not json")
    assert_problem(response, 401)
    response = gw.client.post(
        "/v1/activities", content=b"{not json", headers={"X-API-Key": KEYS["read"]}
    )
    assert_problem(response, 403)


@pytest.mark.parametrize("path", OPEN)
def test_health_docs_and_contracts_stay_open(gw: Gateway, path: str) -> None:
    assert gw.client.get(path).status_code == 200


def test_webhooks_authenticate_by_signature_alone(gw: Gateway) -> None:
    response = gw.client.post(
        "/v1/webhooks/github",
        content=b"{}",
        headers={"X-GitHub-Event": "ping", "X-GitHub-Delivery": "d-1"},
    )
    assert response.status_code == 401
    assert response.json()["type"].endswith("webhook-signature")


# ---- no keys configured: secure by default -------------------------------------------------


@pytest.mark.parametrize(("method", "path", "scope"), GUARDED)
def test_with_no_keys_configured_every_call_is_refused(method: str, path: str, scope: str) -> None:
    for gw in gateway(None):
        problem = assert_problem(call(gw, method, path), 401)
        assert "FLYWHEEL_API_KEYS" in problem["detail"]
        assert_problem(call(gw, method, path, {"X-API-Key": KEYS[scope]}), 401)
        assert gw.client.get("/healthz").status_code == 200
        assert gw.publisher.records == []


def test_a_route_that_declares_no_scope_still_needs_a_key(gw: Gateway) -> None:
    forgot = APIRouter()

    @forgot.get("/v1/forgot-to-say")
    async def forgotten() -> dict[str, str]:
        return {"secret": "data"}

    app = gw.client.app
    assert hasattr(app, "include_router")
    app.include_router(forgot)
    assert_problem(gw.client.get("/v1/forgot-to-say"), 401)
    assert gw.client.get("/v1/forgot-to-say", headers={"X-API-Key": KEYS["read"]}).json() == {
        "secret": "data"
    }


# ---- the whole gateway, as deployed --------------------------------------------------------


def test_in_the_deployed_gateway_only_the_intended_routes_are_open() -> None:
    """Every operation of `runtime.build_app` (other routers included) refuses a caller
    without a key, except the ones meant to be open. Nothing is started: the refusal comes
    before any handler or database."""
    from services.gateway.bootstrap import build_app

    app = build_app(Settings(api_keys=SPEC, clock_tick_interval_s=0))
    document = app.openapi()
    public = {
        path
        for path, operations in document["paths"].items()
        for operation in operations.values()
        if operation.get("security") == []
    }
    assert public == {
        "/healthz",
        "/readyz",
        "/asyncapi.json",
        "/v1/webhooks/github",
        "/v1/webhooks/discourse",
        "/v1/webhooks/slack",
    }
    client = TestClient(app, raise_server_exceptions=False)
    for path, operations in document["paths"].items():
        if path in public:
            continue
        concrete = re.sub(r"\{[^}]+\}", "x", path)
        for method in operations:
            response = client.request(method.upper(), concrete)
            assert response.status_code == 401, f"{method.upper()} {path}: {response.text}"


# ---- OpenAPI -----------------------------------------------------------------------------


def test_openapi_shows_the_security_schemes_and_scopes(gw: Gateway) -> None:
    document = gw.client.get("/openapi.json").json()
    schemes = document["components"]["securitySchemes"]
    assert schemes["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": schemes["bearer"]["description"],
    }
    assert schemes["apiKey"]["in"] == "header" and schemes["apiKey"]["name"] == "X-API-Key"
    for method, path, scope in GUARDED:
        template = "/v1/members/{member_id}/journey" if "members" in path else path
        operation = document["paths"][template][method.lower()]
        assert operation["security"] == [{"bearer": [scope]}, {"apiKey": [scope]}]
        assert {"401", "403"} <= set(operation["responses"])
    for path in ("/healthz", "/readyz", "/asyncapi.json"):
        assert document["paths"][path]["get"]["security"] == []


# ---- the keys setting -----------------------------------------------------------------------


def test_keys_are_parsed_with_names_and_scopes() -> None:
    keys = auth.ApiKeys.parse(" crm=crm-key-0123456789:read ; etl-key-012345678912:ingest,read ;")
    assert [(k.name, sorted(k.scopes)) for k in keys.keys] == [
        ("crm", ["read"]),
        ("key-2", ["ingest", "read"]),
    ]
    found = keys.identify("etl-key-012345678912")
    assert found is not None and found.name == "key-2"
    assert keys.identify("etl-key-01234567891") is None


def test_only_digests_of_the_keys_are_kept() -> None:
    keys = auth.ApiKeys.parse("crm=crm-key-0123456789:read")
    kept = repr(keys.keys) + repr(vars(keys))
    assert "crm-key-0123456789" not in kept
    assert "crm-key" not in repr(Settings(api_keys="crm=crm-key-0123456789:read"))


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("short:read", "at least 16"),
        ("has space in it 1234:read", "at least 16"),
        ("long-enough-key-123", "[name=]key:scope"),
        ("long-enough-key-123:", "scopes must be"),
        ("long-enough-key-123:write", "unknown: write"),
        ("bad name=long-enough-key-123:read", "name"),
        ("a=long-enough-key-123:read;b=long-enough-key-123:admin", "used twice"),
        ("a=long-enough-key-123:read;a=other-enough-key-12:admin", "used twice"),
    ],
)
def test_a_bad_keys_setting_stops_the_gateway(spec: str, says: str) -> None:
    with pytest.raises(ValueError, match=re.escape(says)):
        auth.ApiKeys.parse(spec)
    with pytest.raises(ValueError):
        create_app(
            publisher=RecordingPublisher(),
            journey=FakeJourney(),
            readiness=Readiness(),
            settings=settings(api_keys=spec),
        )
