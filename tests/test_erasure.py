"""Erasure, on the real broker and PostgreSQL: `DELETE /v1/members/{id}` leaves nothing of the
person in any service's database, later activity does not bring them back, and neither does a
replay of the log from offset 0 into fresh databases.

The person: a member (`xerase-main`) who first came as an anonymous visitor (`xerase-anon`),
was referred by someone and referred someone else, asked, helped and was helped, published and
engaged with others' content, and has a GitHub identity merged into them (`github:xerase-4242`).
Every id of theirs contains `xerase`, so "nothing is left" is checked literally: no row of any
table of any service database contains that string, in any column, bytes included.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer

from services.advocacy.__main__ import SPEC as ADVOCACY
from services.awareness.__main__ import SPEC as AWARENESS
from services.engagement.__main__ import SPEC as ENGAGEMENT
from services.gateway.bootstrap import SPEC as GATEWAY
from services.gateway.journey.store import mention_pattern
from shared import metrics  # the in-process gateway's (/metrics is on its own port)
from shared.cloudevents import derive_event_id
from shared.contracts import ActivityV1, Target
from shared.kafka import consumer_lag
from shared.lifecycle import topic_partitions
from shared.service import ServiceSpec
from tests.conftest import Namespace, envelopes, member_of, publish_activities, running
from tests.factories import activity
from tests.test_identity_integration import Deployment, eventually
from tests.test_identity_integration import deployment as deployment  # the fixture

pytestmark = pytest.mark.integration

MARK = "xerase"
X, VISITOR = "xerase-main", "xerase-anon"
GITHUB = member_of("github", "xerase-4242")  # the member id the gateway gives that identity
K1, K2 = "keeper-1", "keeper-2"


def _engaging(member: str, author: str, piece: str, day: float) -> ActivityV1:
    """A reaction to `author`'s published piece (advocacy credits the author)."""
    a = activity(member, "reaction", day=day)
    return a.model_copy(
        update={
            "target": Target(
                parent_id=piece, parent_author_member_id=author, parent_kind="content_published"
            )
        }
    )


def _life() -> list[ActivityV1]:
    return [
        activity(VISITOR, "page_view", anonymous=True, day=0, source="web"),
        activity(K1, "signup", day=0, source="web"),
        activity(
            X,
            "signup",
            day=1,
            source="web",
            properties={"anonymous_id": VISITOR, "referred_by": K1},
        ),
        activity(K2, "signup", day=2, source="web", properties={"referred_by": X}),
        activity(X, "post", day=2, thread_id="t-x", properties={"question": True}),
        activity(K1, "reply", day=3, thread_id="t-x", thread_author=X),
        activity(X, "content_published", day=3),
        _engaging(K1, X, "c-x", day=4),
        activity(K1, "content_published", day=4),
        _engaging(X, K1, "c-k", day=5),
        activity(X, "event_talk", day=6, source="events"),
        activity(GITHUB, "code_contribution", day=5, source="github"),
        activity(GITHUB, "event_talk", day=6.5, source="events"),
    ]


async def mentions(url: str, needle: str = MARK) -> dict[str, list[str]]:
    """Rows of every table (every schema) of one database that contain `needle` anywhere: as
    text, and inside bytea and bytea[] columns (the outbox's values and headers)."""
    conn = await asyncpg.connect(url)
    try:
        tables = await conn.fetch(
            "SELECT table_schema, table_name FROM information_schema.tables"
            " WHERE table_type = 'BASE TABLE'"
            " AND table_schema NOT IN ('pg_catalog', 'information_schema')"
        )
        found: dict[str, list[str]] = {}
        for t in tables:
            name = f'"{t["table_schema"]}"."{t["table_name"]}"'
            columns = await conn.fetch(
                "SELECT column_name, data_type, udt_name FROM information_schema.columns"
                " WHERE table_schema = $1 AND table_name = $2",
                t["table_schema"],
                t["table_name"],
            )
            tests = ["strpos(t::text, $1) > 0"]
            for c in columns:
                column = f'"{c["column_name"]}"'
                if c["udt_name"] == "bytea":
                    tests.append(f"position(convert_to($1, 'UTF8') in t.{column}) > 0")
                elif c["udt_name"] == "_bytea":
                    tests.append(
                        f"EXISTS (SELECT 1 FROM unnest(t.{column}) v"
                        f" WHERE position(convert_to($1, 'UTF8') in v) > 0)"
                    )
            rows = await conn.fetch(
                f"SELECT t::text AS row FROM {name} t WHERE {' OR '.join(tests)} LIMIT 3", needle
            )
            if rows:
                found[name] = [r["row"][:300] for r in rows]
        return found
    finally:
        await conn.close()


async def nothing_left(urls: dict[str, str]) -> None:
    for service, url in urls.items():
        for needle in (MARK, GITHUB):
            assert await mentions(url, needle) == {}, f"{service} still holds the erased person"


async def applied(url: str, event_ids: list[str]) -> bool:
    conn = await asyncpg.connect(url)
    try:
        n = await conn.fetchval(
            "SELECT count(*) FROM inbox WHERE event_id = ANY($1::text[])", event_ids
        )
    finally:
        await conn.close()
    return bool(n == len(event_ids))


def _blocked(metrics_text: str) -> float:
    for line in metrics_text.splitlines():
        if line.startswith("flywheel_gateway_published_total") and 'outcome="blocked"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_erasure_leaves_nothing_and_nothing_brings_the_person_back(
    namespace: Namespace, deployment: Deployment
) -> None:
    d = deployment
    assert await d.identities.resolve("github", "xerase-4242", "eve@example.com") == GITHUB
    await d.post(*_life())

    async def lived() -> None:
        people = await d.pairs("awareness", "SELECT member_id, referred_by FROM people")
        assert people.get(K2) == X and GITHUB in people
        adv = await d.pairs("advocacy", "SELECT member_id, score FROM advocacy_members")
        assert adv.get(X, 0) > 0 and adv.get(K1, 0) >= 10  # K1 referred X
        help_ = await d.pairs(
            "gateway", "SELECT helper_member_id, helped_member_id FROM flywheel_peer_help"
        )
        assert help_ == {K1: X}
        for service in ("awareness", "engagement", "advocacy", "gateway"):
            assert await mentions(d.urls[service]), f"{service} knows nothing of the person yet"

    await eventually(lived)
    linked = await d.client.post(
        f"/v1/members/{X}/identities",
        json={"platform": "github", "platform_user_id": "xerase-4242"},
    )
    assert linked.status_code == 200 and linked.json()["merged"] == [GITHUB], linked.text

    async def merged() -> None:
        for service in ("awareness", "engagement", "advocacy"):
            aliases = await d.pairs(service, "SELECT * FROM lifecycle.member_aliases")
            assert aliases == {GITHUB: X}, service

    await eventually(merged)

    # erase the person, named by the merged id
    erased = await d.client.delete(f"/v1/members/{GITHUB}")
    assert erased.status_code == 202, erased.text
    assert erased.json() == {
        "member_id": X,
        "erased_ids": sorted([GITHUB, X]),
        "identities_blocked": 2,  # the GitHub identity and its verified email
    }
    assert (await d.client.get(f"/v1/members/{X}/journey")).status_code == 404
    await eventually(lambda: nothing_left(d.urls), timeout_s=60)

    # the notification: member.erased.v1 for the member, and for its anonymous visitor id
    lifecycle_log = envelopes(await read_all(namespace, "member-lifecycle"))
    erasures = {e.key: e for e in lifecycle_log if e.type == "member.erased.v1"}
    assert set(erasures) == {X, VISITOR}
    assert erasures[X].id == derive_event_id("member.erased.v1", X)
    assert erasures[X].source == "/gateway" and erasures[VISITOR].source == "/services/awareness"

    # the others keep what is theirs, without the person's id
    k2 = (await d.client.get(f"/v1/members/{K2}/journey")).json()
    assert any("(erased member)" in t["reason"] for t in k2["timeline"]), k2
    adv = await d.pairs("advocacy", "SELECT member_id, score FROM advocacy_members")
    assert set(adv) == {K1} and adv[K1] >= 10

    # later activity of the person: through the gateway, acknowledged and not published ...
    before = len(await read_all(namespace, "member-activity"))
    blocked_before = _blocked(metrics.prometheus_text()[1].decode())
    again = activity(X, "post", day=9, thread_id="t-back")
    other_id = activity("fresh-id-1", "code_contribution", day=9, source="github")
    other_id = other_id.model_copy(
        update={"actor": other_id.actor.model_copy(update={"platform_user_id": "xerase-4242"})}
    )
    await d.post(again, other_id)
    assert _blocked(metrics.prometheus_text()[1].decode()) - blocked_before == 2
    after = len(await read_all(namespace, "member-activity"))  # acknowledged = written
    assert after == before, "an erased person's activity was published"
    assert await d.identities.resolve("github", "xerase-4242") == GITHUB  # and not recorded
    refused = await d.client.post(
        f"/v1/members/{X}/identities", json={"platform": "slack", "platform_user_id": "U1"}
    )
    assert refused.status_code == 409
    reused = await d.client.post(
        f"/v1/members/{K1}/identities",
        json={"platform": "web", "platform_user_id": "k1", "email": "eve@example.com"},
    )
    assert reused.status_code == 409  # the erased person's email stays theirs, blocked

    # ... and straight onto the log (a producer that bypasses the gateway): ignored
    late = [
        activity(X, "reply", day=9, thread_id="t-1", thread_author=K1),
        activity(GITHUB, "code_contribution", day=9, source="github"),
        activity(VISITOR, "page_view", anonymous=True, day=9, source="web"),
        activity(K1, "reply", day=9, thread_id="t-x", thread_author=X),
    ]
    await publish_activities(namespace, late)
    ids = [f"{a.source}:{a.activity_id}" for a in late]
    for service in ("awareness", "engagement", "advocacy"):
        url = d.urls[service]

        async def consumed(url: str = url) -> None:
            assert await applied(url, ids)

        await eventually(consumed)
    await eventually(lambda: nothing_left(d.urls))

    # a replay of every log from offset 0 into fresh databases: the person stays erased
    keyed_before = _about_the_person(envelopes(await read_all(namespace, "journey-transitions")))
    fresh = {s: await namespace.create_database(f"replay_{s}") for s in d.urls}
    specs = {
        "awareness": AWARENESS,
        "engagement": ENGAGEMENT,
        "advocacy": ADVOCACY,
        "gateway": GATEWAY,
    }
    replays: dict[str, ServiceSpec] = {
        name: replace(spec, group_id=f"{spec.consumer_group}-replay")
        for name, spec in specs.items()
    }
    async with (
        running(replays["awareness"], namespace.settings(fresh["awareness"])),
        running(replays["engagement"], namespace.settings(fresh["engagement"])),
        running(replays["advocacy"], namespace.settings(fresh["advocacy"])),
        running(replays["gateway"], namespace.settings(fresh["gateway"])),
    ):

        async def caught_up() -> None:
            for spec in replays.values():
                lag = await consumer_lag(
                    namespace.stack.kafka_bootstrap,
                    namespace.prefix + spec.consumer_group,
                    [namespace.topic(t.name) for t in spec.consumes],
                )
                assert sum(lag.values()) == 0, (spec.name, lag)
            rebuilt = await _pairs(fresh["awareness"], "SELECT member_id, stage FROM people")
            assert rebuilt.get(K2) == "member" and rebuilt.get(K1) == "member"
            for url in fresh.values():
                conn = await asyncpg.connect(url)
                try:
                    assert await conn.fetchval("SELECT count(*) FROM outbox") == 0
                finally:
                    await conn.close()

        await eventually(caught_up, timeout_s=90)
        await nothing_left(fresh)
        for url in fresh.values():  # each knew who was erased before its first batch
            assert await _pairs(url, "SELECT true, erasures FROM lifecycle.bootstrap") == {True: 3}

    # nor did the replay emit anything new about the person, even for a moment
    keyed_after = _about_the_person(envelopes(await read_all(namespace, "journey-transitions")))
    assert keyed_after == keyed_before


def _about_the_person(records: list[Any]) -> dict[str, Any]:
    return {e.id: (e.key, e.data) for e in records if MARK in e.key or e.key == GITHUB}


async def read_all(namespace: Namespace, topic: str) -> list[Any]:
    """Every record of a topic up to its end now (not "until some arrived")."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=namespace.stack.kafka_bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        tps = await topic_partitions(namespace.stack.kafka_bootstrap, namespace.topic(topic))
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        for tp, start in (await consumer.beginning_offsets(tps)).items():
            consumer.seek(tp, start)
        records: list[Any] = []
        while any([await consumer.position(tp) < ends[tp] for tp in tps]):
            for part in (await consumer.getmany(timeout_ms=500)).values():
                records.extend(part)
        return records
    finally:
        await consumer.stop()


async def _pairs(url: str, sql: str) -> dict[Any, Any]:
    conn = await asyncpg.connect(url)
    try:
        return {r[0]: r[1] for r in await conn.fetch(sql)}
    finally:
        await conn.close()


async def test_erasing_an_unknown_member_is_accepted_and_idempotent(
    deployment: Deployment,
) -> None:
    # the stored reasons are scrubbed by a PostgreSQL regular expression: whole ids only
    [row] = await deployment.fetch(
        "gateway",
        "SELECT regexp_replace($1, $2, '(erased member)', 'g') AS reason",
        "referred by m-1 (not m-12, not xm-1), thanks m-1.",
        mention_pattern("m-1"),
    )
    assert row["reason"] == (
        "referred by (erased member) (not m-12, not xm-1), thanks (erased member)."
    )
    first = await deployment.client.delete("/v1/members/nobody-known")
    second = await deployment.client.delete("/v1/members/nobody-known")
    assert first.status_code == second.status_code == 202
    assert (
        first.json()
        == second.json()
        == {
            "member_id": "nobody-known",
            "erased_ids": ["nobody-known"],
            "identities_blocked": 0,
        }
    )
