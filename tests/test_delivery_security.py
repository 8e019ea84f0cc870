"""Outbound webhooks cannot be pointed inside the network, and their signing secrets are not
readable from a database backup: the URL rules, DNS resolution pinned to the checked address,
what is kept of a receiver's answer, and the secrets' encryption and rotation."""

from __future__ import annotations

import base64
import ipaddress
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import httpx
import pytest
from cryptography.fernet import Fernet
from fastapi import FastAPI
from standardwebhooks import Webhook

from services.gateway.bootstrap import build_app, create_app
from services.gateway.delivery import store
from services.gateway.delivery.routes import router
from services.gateway.delivery.sender import EXCERPT_CHARS, Sender
from services.gateway.delivery.signing import generate_secret
from services.gateway.delivery.targets import (
    TargetPolicy,
    TargetRefused,
    address_problem,
    sanitize,
)
from services.gateway.delivery.vault import PREFIX, SecretVault, parse_keys, reseal_all
from services.gateway.http.auth import ApiKeys
from shared.postgres import PLUMBING_MIGRATIONS, migrate
from shared.settings import Settings
from tests.conftest import Namespace
from tests.test_delivery_integration import (
    ADMIN,
    GATEWAY_MIGRATIONS,
    Receiver,
    _NoJourney,
    _NoPublisher,
    _ready,
    queue,
    receiving,
    sending,
    settings,
    statuses,
    subscribe,
    transition,
    wait_for,
)

PUBLIC = "93.184.216.34"


@pytest.fixture
async def pool(namespace: Namespace) -> AsyncIterator[asyncpg.Pool]:
    url = await namespace.create_database("gateway")
    created = await asyncpg.create_pool(url, min_size=1, max_size=6)
    assert created is not None
    await migrate(created, [PLUMBING_MIGRATIONS, GATEWAY_MIGRATIONS])
    try:
        yield created
    finally:
        await created.close()


class FakeDns:
    """A resolver whose answers the test changes: what a hostile DNS server would do."""

    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.asked.append(host)
        if host not in self.answers:
            raise OSError("no such host")
        return self.answers[host]


def policy(dns: FakeDns | None = None, **overrides: Any) -> TargetPolicy:
    values: dict[str, Any] = {"webhook_allow_hosts": "", "webhook_allow_http": False}
    return TargetPolicy.from_settings(Settings(**(values | overrides)), resolver=dns or FakeDns({}))


# ---- the URL rules (no network) --------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://crm.example.com/hook", "must be https"),
        ("ftp://crm.example.com/hook", "must be https"),
        ("https://user:pw@crm.example.com/hook", "user info"),
        ("https://token@crm.example.com/hook", "user info"),
        ("https://127.0.0.1/hook", "loopback"),
        ("https://[::1]/hook", "loopback"),
        ("https://[::ffff:127.0.0.1]/hook", "loopback"),
        ("https://localhost:8443/hook", "localhost"),
        ("https://api.localhost/hook", "localhost"),
        ("https://169.254.169.254/latest/meta-data/", "metadata"),
        ("https://[fd00:ec2::254]/latest/meta-data/", "metadata"),
        ("https://10.0.0.7/hook", "private"),
        ("https://192.168.1.1/hook", "private"),
        ("https://172.16.0.1/hook", "private"),
        ("https://[fc00::1]/hook", "private"),
        ("https://169.254.10.10/hook", "link-local"),
        ("https://[fe80::1]/hook", "link-local"),
        ("https://100.64.0.1/hook", "carrier-grade"),
        ("https://224.0.0.1/hook", "multicast"),
        ("https://0.0.0.0/hook", "unspecified"),
        ("https://240.0.0.1/hook", "reserved"),
    ],
)
def test_a_url_that_could_reach_inside_is_refused(url: str, why: str) -> None:
    with pytest.raises(TargetRefused) as refused:
        policy().check_url(url)
    assert why in refused.value.reason


def test_public_https_passes_and_the_allow_list_opens_local_receivers() -> None:
    assert policy().check_url("https://crm.example.com/hook") == ("crm.example.com", 443)
    assert policy().check_url(f"https://{PUBLIC}:8443/h") == (PUBLIC, 8443)
    local = policy(webhook_allow_hosts="127.0.0.1, receiver.test", webhook_allow_http=True)
    assert local.check_url("http://127.0.0.1:9/hook") == ("127.0.0.1", 9)
    assert local.check_url("http://receiver.test/hook") == ("receiver.test", 80)
    with pytest.raises(TargetRefused):  # http only for the allow-listed
        local.check_url("http://crm.example.com/hook")
    with pytest.raises(TargetRefused):  # allow-listing hosts does not allow plain http
        policy(webhook_allow_hosts="127.0.0.1").check_url("http://127.0.0.1:9/hook")
    networks = policy(webhook_allow_hosts="10.0.0.0/8")
    assert networks.check_url("https://10.1.2.3/hook") == ("10.1.2.3", 443)


def test_metadata_addresses_stay_refused_even_when_their_network_is_allowed() -> None:
    lenient = policy(webhook_allow_hosts="169.254.0.0/16,fd00::/8,metadata.test")
    for host in ("169.254.169.254", "[fd00:ec2::254]"):
        with pytest.raises(TargetRefused, match="never allowed"):
            lenient.check_url(f"https://{host}/latest")
    assert address_problem(ipaddress.ip_address("8.8.8.8")) is None


async def test_every_address_of_a_name_is_checked() -> None:
    dns = FakeDns(
        {
            "mixed.example.net": [PUBLIC, "10.0.0.7"],
            "public.example.net": [PUBLIC],
            "metadata.example.net": ["169.254.169.254"],
        }
    )
    checked = policy(dns)
    assert await checked.resolve("public.example.net", 443) == [PUBLIC]
    with pytest.raises(TargetRefused, match="private"):
        await checked.resolve("mixed.example.net", 443)
    with pytest.raises(TargetRefused, match="metadata"):
        await checked.resolve("metadata.example.net", 443)
    # a name that does not resolve is accepted at subscription time (checked at delivery)
    await checked.check_subscription("https://not-yet.example.net/hook")


def test_sanitize_keeps_a_short_printable_excerpt() -> None:
    hostile = "\x1b[31mroot:x:0:0\x00\r\nSet-Cookie: a=b\t" + "A" * 500
    kept = sanitize(hostile, 64)
    assert len(kept) <= 64
    assert all(c.isprintable() for c in kept)
    assert "\x1b" not in kept and "\n" not in kept


# ---- subscription time: 422 naming /url ----------------------------------------------------


def api(pool: asyncpg.Pool, config: Settings, dns: FakeDns) -> FastAPI:
    app = create_app(
        publisher=_NoPublisher(), journey=_NoJourney(), readiness=_ready, settings=config
    )
    app.include_router(
        router(
            lambda: pool,
            policy=TargetPolicy.from_settings(config, resolver=dns),
            vault=SecretVault.from_settings(config),
        )
    )
    return app


@pytest.mark.integration
async def test_a_subscription_to_an_inside_url_is_refused_422_naming_url(
    pool: asyncpg.Pool,
) -> None:
    dns = FakeDns({"hooks.example.net": ["10.0.0.7"], "crm.example.net": [PUBLIC]})
    config = settings(webhook_allow_hosts="", webhook_allow_http=False)
    transport = httpx.ASGITransport(api(pool, config, dns))
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        for url, why in (
            ("https://hooks.example.net/h", "private"),
            ("https://169.254.169.254/latest/meta-data/", "metadata"),
            ("http://crm.example.net/h", "https"),
            ("https://admin:hunter2@crm.example.net/h", "user info"),
            ("http://127.0.0.1:9/h", "https"),
        ):
            response = await client.post(
                "/v1/subscriptions",
                json={"url": url, "event_types": ["signal.advocate.v1"]},
                headers=ADMIN,
            )
            assert response.status_code == 422, (url, response.text)
            assert response.headers["content-type"] == "application/problem+json"
            [error] = response.json()["errors"]
            assert error["pointer"] == "/url" and why in error["detail"], (url, error)
        ok = await client.post(
            "/v1/subscriptions",
            json={"url": "https://crm.example.net/h", "event_types": ["signal.advocate.v1"]},
            headers=ADMIN,
        )
        assert ok.status_code == 201, ok.text
    assert await pool.fetchval("SELECT count(*) FROM outbound_subscriptions") == 1


@pytest.mark.integration
async def test_without_secrets_keys_subscriptions_cannot_be_created(pool: asyncpg.Pool) -> None:
    config = settings(secrets_keys=None)
    transport = httpx.ASGITransport(api(pool, config, FakeDns({})))
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        response = await client.post(
            "/v1/subscriptions",
            json={"url": "https://crm.example.net/h", "event_types": ["signal.advocate.v1"]},
            headers=ADMIN,
        )
    assert response.status_code == 503
    assert "FLYWHEEL_SECRETS_KEYS" in response.json()["detail"]


# ---- delivery time: resolved, checked, pinned ------------------------------------------------


async def _attempt_errors(pool: asyncpg.Pool) -> list[str]:
    rows = await pool.fetch("SELECT error FROM outbound_delivery_attempts ORDER BY id")
    return [r["error"] for r in rows]


@pytest.mark.integration
async def test_dns_rebinding_after_the_subscription_is_refused_at_delivery(
    pool: asyncpg.Pool,
) -> None:
    dns = FakeDns({"rebind.example.net": [PUBLIC]})
    config = settings(webhook_give_up_after_s=0.3, webhook_allow_hosts="")
    await policy(dns).check_subscription("https://rebind.example.net/hook")  # public: fine
    await subscribe(pool, "https://rebind.example.net/hook", generate_secret())
    dns.answers["rebind.example.net"] = ["127.0.0.1"]  # and now it points inside
    await queue(pool, [transition("ada", 0)])
    hostile = Sender(pool, config, policy=TargetPolicy.from_settings(config, resolver=dns))
    hostile.start()
    try:
        await wait_for(lambda: _all_dead(pool), what="the delivery to die, refused at each attempt")
    finally:
        await hostile.stop(timeout_s=1)
    errors = await _attempt_errors(pool)
    assert errors and all(
        e == "target refused: the host resolves to a loopback address (allow it with "
        "FLYWHEEL_WEBHOOK_ALLOW_HOSTS)"
        for e in errors
    ), errors
    assert "127.0.0.1" not in " ".join(errors)  # the reason names no address
    assert "rebind.example.net" in dns.asked


async def _all_dead(pool: asyncpg.Pool) -> bool:
    found = await statuses(pool)
    return bool(found) and set(found.values()) == {"dead"}


@pytest.mark.integration
async def test_the_connection_goes_to_the_checked_address_with_the_name_as_host(
    pool: asyncpg.Pool,
) -> None:
    """`receiver.test` exists only in the sender's resolver: the delivery arriving at all
    shows the connection went to the address the resolver gave (and the check passed), and
    the Host header still names the host of the URL."""
    secret = generate_secret()
    config = settings(webhook_allow_hosts="receiver.test", webhook_allow_http=True)
    dns = FakeDns({"receiver.test": ["127.0.0.1"]})
    async with receiving(Receiver()) as receiver:
        port = receiver.url.split(":")[2].split("/")[0]
        await subscribe(pool, f"http://receiver.test:{port}/hook", secret)
        await queue(pool, [transition("bob", 0)])
        sender = Sender(pool, config, policy=TargetPolicy.from_settings(config, resolver=dns))
        sender.start()
        try:
            await wait_for(lambda: _delivered(receiver), what="the delivery")
        finally:
            await sender.stop(timeout_s=1)
    [arrival] = receiver.arrivals
    assert arrival.headers["host"] == f"receiver.test:{port}"
    assert Webhook(secret).verify(arrival.body, arrival.headers)
    assert dns.asked == ["receiver.test"]


async def _delivered(receiver: Receiver) -> bool:
    return len(receiver.arrivals) == 1


@pytest.mark.integration
async def test_only_a_short_sanitized_excerpt_of_an_answer_is_kept(pool: asyncpg.Pool) -> None:
    secret = generate_secret()
    config = settings(webhook_give_up_after_s=0.2)
    leak = "\x1b[2J" + "SECRET-INTERNAL-DATA\r\n" * 500

    async with receiving(Receiver(decide=lambda _n, _id: "fail", answer_body=leak)) as receiver:
        await subscribe(pool, receiver.url, secret)
        await queue(pool, [transition("cy", 0)])
        async with sending(pool, config):
            await wait_for(lambda: _all_dead(pool), what="the delivery to die")
    errors = await _attempt_errors(pool)
    last = await pool.fetchval("SELECT last_error FROM outbound_deliveries")
    for error in [*errors, last]:
        assert error.startswith("HTTP 500: ")
        excerpt = error.removeprefix("HTTP 500: ")
        assert len(excerpt) <= EXCERPT_CHARS
        assert all(c.isprintable() for c in error)


# ---- secrets at rest ---------------------------------------------------------------------------


def test_secrets_keys_refuse_placeholders_and_non_keys() -> None:
    for spec, why in (
        ("REPLACE-ME-with-fernet-keys", "placeholder"),
        ("not-a-key", "not a Fernet key"),
        (base64.urlsafe_b64encode(b"\0" * 32).decode(), "not random"),
        (base64.urlsafe_b64encode(b"ab" * 16).decode(), "not random"),
    ):
        with pytest.raises(ValueError, match=why):
            parse_keys(spec)
    with pytest.raises(ValueError, match="FLYWHEEL_SECRETS_KEYS"):
        build_app(Settings(secrets_keys="REPLACE-ME", clock_tick_interval_s=0))


def test_sealed_secrets_open_under_any_key_and_reseal_under_the_first() -> None:
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    before = SecretVault(parse_keys(old))
    sealed = before.seal("whsec_abc")
    assert sealed.startswith(PREFIX) and "whsec_abc" not in sealed
    after = SecretVault(parse_keys(f"{new},{old}"))
    assert after.open(sealed) == "whsec_abc"
    assert not after.current(sealed)
    resealed = after.reseal(sealed)
    assert after.current(resealed)
    assert SecretVault(parse_keys(new)).open(resealed) == "whsec_abc"


@pytest.mark.integration
async def test_secrets_are_encrypted_at_rest_and_rotated_at_start(pool: asyncpg.Pool) -> None:
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    lost = Fernet.generate_key().decode()
    config = settings(secrets_keys=old)
    dns = FakeDns({"crm.example.net": [PUBLIC]})
    transport = httpx.ASGITransport(api(pool, config, dns))
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        created = await client.post(
            "/v1/subscriptions",
            json={"url": "https://crm.example.net/h", "event_types": ["signal.advocate.v1"]},
            headers=ADMIN,
        )
    assert created.status_code == 201, created.text
    secret = created.json()["secret"]
    stored = await pool.fetchval("SELECT secret FROM outbound_subscriptions")
    assert stored.startswith(PREFIX) and secret not in stored  # a backup forges nothing
    # rows from before encryption, and one under a key nobody has any more
    plaintext = generate_secret()
    async with pool.acquire() as conn:
        legacy = await store.create_subscription(
            conn,
            url="https://crm.example.net/l",
            event_types=["x"],
            secret=plaintext,
            description=None,
        )
        orphan = await store.create_subscription(
            conn,
            url="https://crm.example.net/o",
            event_types=["x"],
            secret=SecretVault(parse_keys(lost)).seal(generate_secret()),
            description=None,
        )
        rotated = SecretVault(parse_keys(f"{new},{old}"))
        report = await reseal_all(conn, rotated)
    assert report.sealed == 2 and report.unreadable == [orphan.id]
    rows = {r["id"]: r["secret"] for r in await pool.fetch("SELECT * FROM outbound_subscriptions")}
    newest = SecretVault(parse_keys(new))  # the old key can go now
    assert newest.open(rows[created.json()["id"]]) == secret
    assert newest.open(rows[legacy.id]) == plaintext
    assert all(v.startswith(PREFIX) for v in rows.values())
    async with pool.acquire() as conn:
        assert (await reseal_all(conn, rotated)).sealed == 0  # idempotent


# ---- placeholders stop the gateway -------------------------------------------------------------


@pytest.fixture
def manifest_secret() -> Iterator[dict[str, str]]:
    import yaml

    from tests.test_manifests import K8S

    with (K8S / "base" / "secret.yaml").open() as f:
        yield yaml.safe_load(f)["stringData"]


def test_the_manifests_placeholders_stop_the_gateway(manifest_secret: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="placeholder"):
        ApiKeys.parse(manifest_secret["api-keys"])
    with pytest.raises(ValueError, match="placeholder"):
        build_app(Settings(api_keys=manifest_secret["api-keys"], clock_tick_interval_s=0))
    with pytest.raises(ValueError, match="FLYWHEEL_SECRETS_KEYS"):
        parse_keys(manifest_secret["secrets-keys"])
    with pytest.raises(ValueError, match="FLYWHEEL_DATABASE_URL"):
        build_app(
            Settings(database_url=manifest_secret["gateway-database-url"], clock_tick_interval_s=0)
        )
    with pytest.raises(ValueError, match="FLYWHEEL_PSEUDONYM_KEY is refused: it is a placeholder"):
        build_app(Settings(pseudonym_key=manifest_secret["pseudonym-key"], clock_tick_interval_s=0))
    with pytest.raises(ValueError, match="FLYWHEEL_GITHUB_WEBHOOK_SECRET"):
        build_app(Settings(github_webhook_secret="secret123", clock_tick_interval_s=0))
