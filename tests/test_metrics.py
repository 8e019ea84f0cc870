"""Metrics and readiness of a real service: what an operator's Prometheus would scrape."""

from __future__ import annotations

import asyncio
import socket

import httpx
import pytest

from services.awareness.__main__ import SPEC as AWARENESS
from shared import metrics
from shared.cloudevents import OutgoingRecord
from shared.service import ConsumingService
from shared.settings import Settings
from tests.conftest import Namespace, publish, publish_activities, read_topic, running
from tests.factories import activity

text_string_to_metric_families = pytest.importorskip(
    "prometheus_client.parser", reason="prometheus-client (a declared dependency) missing"
).text_string_to_metric_families

API_KEY = "metrics-test-key-0123456789"
API_KEYS = f"tests={API_KEY}:ingest,read,admin"  # the gateway refuses calls without a key
AUTH = {"X-API-Key": API_KEY}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """{(sample name, labels without the otel scope ones): value}."""
    found: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = frozenset(
                (k, v) for k, v in sample.labels.items() if not k.startswith("otel_scope")
            )
            found[(sample.name, labels)] = sample.value
    return found


def _value(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return sum(v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= set(ls))


def test_webhook_delivery_instruments_are_exported() -> None:
    metrics.configure()
    metrics.record_webhook_delivery("crm-test", "delivered", 0.12)
    metrics.record_webhook_delivery("crm-test", "failed", 3.0)
    samples = _samples(metrics.prometheus_text()[1].decode())
    assert _value(samples, "flywheel_webhook_deliveries_total", subscription="crm-test") >= 2
    assert (
        _value(
            samples,
            "flywheel_webhook_delivery_duration_seconds_count",
            subscription="crm-test",
            outcome="failed",
        )
        >= 1
    )


@pytest.mark.integration
async def test_a_service_exports_what_it_did_on_its_health_port(namespace: Namespace) -> None:
    url = await namespace.create_database("awareness")
    port = _free_port()
    signups = [activity(f"mx-{i}", "signup", day=1, source="web") for i in range(3)]
    poison = OutgoingRecord("member-activity", b"mx-0", b"{not json", [], "poison-1")
    # Counters live as long as the process (other tests ran an "awareness" too): deltas.
    before = _samples(metrics.prometheus_text()[1].decode())
    async with running(AWARENESS, namespace.settings(url, health_port=port)) as service:
        await publish_activities(namespace, signups)
        await publish_activities(namespace, signups[:1])  # a re-send: a duplicate
        await publish(namespace, [poison])
        await read_topic(namespace, "journey-transitions", until=3)
        await read_topic(namespace, "member-activity.dlq", until=1)
        assert service.metrics_poller is not None
        deadline = asyncio.get_running_loop().time() + 20
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            while True:
                await service.metrics_poller.refresh()
                response = await client.get("/metrics")
                assert response.status_code == 200
                assert response.headers["content-type"].startswith("text/plain")
                samples = _samples(response.text)
                lag = [
                    v
                    for (n, ls), v in samples.items()
                    if n == "flywheel_consumer_lag" and ("service", "awareness") in ls
                ]
                backlog = _value(samples, "flywheel_outbox_backlog", service="awareness")
                partitions = 3 * len(AWARENESS.consumes)  # the namespace has 3 per topic
                if len(lag) == partitions and not any(lag) and backlog == 0:
                    break
                assert asyncio.get_running_loop().time() < deadline, (lag, backlog)
                await asyncio.sleep(0.2)
            ready = await client.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json() == {"status": "ready", "problems": {}}

    def delta(name: str, **labels: str) -> float:
        return _value(samples, name, **labels) - _value(before, name, **labels)

    s = "awareness"
    activity_type = "community.activity.v1"
    assert delta("flywheel_events_total", service=s, type=activity_type, outcome="applied") == 3
    assert delta("flywheel_events_total", service=s, type=activity_type, outcome="duplicate") == 1
    dead = delta("flywheel_events_total", service=s, type="undecodable", outcome="dead_lettered")
    assert dead == 1
    topic = namespace.topic("member-activity")
    assert delta("flywheel_records_consumed_total", service=s, topic=topic) == 5
    # awareness also reads member-lifecycle, where its own in-band watermarks land
    lifecycle = namespace.topic("member-lifecycle")
    own_watermarks = delta("flywheel_records_consumed_total", service=s, topic=lifecycle)
    assert delta("flywheel_batch_size_sum", service=s) == 5 + own_watermarks
    # the latency histograms observe each batch once (its oldest event), not each event
    assert 1 <= delta("flywheel_event_latency_seconds_count", service=s, type=activity_type) <= 3
    assert 1 <= delta("flywheel_consume_delay_seconds_count", service=s, topic=topic) <= 5
    assert _value(samples, "flywheel_outbox_oldest_age_seconds", service=s) == 0


@pytest.mark.integration
async def test_readiness_names_what_is_missing(namespace: Namespace) -> None:
    url = await namespace.create_database("awareness")
    async with running(AWARENESS, namespace.settings(url)) as service:
        deadline = asyncio.get_running_loop().time() + 20
        while (problems := await service.readiness()) != {}:
            assert asyncio.get_running_loop().time() < deadline, problems
            await asyncio.sleep(0.2)
        await service.broker.stop()  # the consumer leaves the group: nothing assigned
        problems = await service.readiness()
        assert "no partitions assigned" in problems["consumer"]

    # broker and database unreachable: a service pointed at nothing
    nowhere = Settings(
        kafka_bootstrap_servers=f"127.0.0.1:{_free_port()}",
        database_url=f"postgresql://x@127.0.0.1:{_free_port()}/x",
    )
    problems = await ConsumingService(AWARENESS, nowhere).readiness()
    assert set(problems) == {"consumer", "kafka", "database"}, problems


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.integration
async def test_the_gateway_serves_metrics_on_its_own_port_not_the_api(
    namespace: Namespace,
) -> None:
    from services.gateway.bootstrap import build_app

    url = await namespace.create_database("gateway")
    port = _free_port()
    app = build_app(
        namespace.settings(url, clock_tick_interval_s=0, api_keys=API_KEYS, metrics_port=port)
    )
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://gw", headers=AUTH
        ) as client,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as scraper,
    ):
        before = _value(
            _samples((await scraper.get("/metrics")).text),
            "flywheel_gateway_published_total",
            outcome="acknowledged",
        )
        body = activity("gm-1", "signup", source="web").model_dump(mode="json")
        assert (await client.post("/v1/activities", json=body)).status_code == 202
        response = await scraper.get("/metrics")
        assert response.status_code == 200
        samples = _samples(response.text)
        ready = await client.get("/readyz")
        internal_ready = await scraper.get("/readyz")
        on_the_api = await client.get("/metrics")  # even with a valid key
    after = _value(samples, "flywheel_gateway_published_total", outcome="acknowledged")
    assert after - before == 1
    assert ready.status_code == 200, ready.text  # the API needs no partition of its own
    assert internal_ready.status_code == 200, internal_ready.text
    assert on_the_api.status_code == 404
    assert "/metrics" not in (await _openapi_paths(app))


@pytest.mark.integration
async def test_a_gateway_with_metrics_port_0_serves_no_metrics(namespace: Namespace) -> None:
    from services.gateway.bootstrap import build_app

    url = await namespace.create_database("gateway")
    app = build_app(namespace.settings(url, clock_tick_interval_s=0, api_keys=API_KEYS))
    assert app.state.metrics_server is None


async def _openapi_paths(app: object) -> set[str]:
    return set(app.openapi()["paths"])  # type: ignore[attr-defined]
