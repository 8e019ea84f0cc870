"""The three stage services against the real broker and PostgreSQL, in one process each."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import asyncpg
import pytest

from services.advocacy.__main__ import SPEC as ADVOCACY
from services.awareness.__main__ import SPEC as AWARENESS
from services.engagement.__main__ import SPEC as ENGAGEMENT
from shared.contracts import StageChangedV1
from tests.conftest import (
    Namespace,
    envelopes,
    publish,
    publish_activities,
    publish_tick,
    read_topic,
    running,
)
from tests.factories import T0, activity

pytestmark = pytest.mark.integration


async def test_activities_become_transitions_of_all_three_services(namespace: Namespace) -> None:
    urls = {
        s.name: await namespace.create_database(s.name) for s in (AWARENESS, ENGAGEMENT, ADVOCACY)
    }
    log = [
        activity("v-1", "page_view", anonymous=True, day=0),
        activity("v-1", "signup", day=1),
        activity("m-2", "signup", day=1),
        activity("m-2", "post", day=2, thread_id="q-1"),
        activity("v-1", "reply", day=3, thread_id="q-1", thread_author="m-2"),
        activity("v-1", "answer_accepted", day=4, thread_id="q-1", thread_author="m-2"),
        activity("m-2", "event_talk", day=5),
        activity("v-1", "event_talk", day=5),
    ]
    async with (
        running(AWARENESS, namespace.settings(urls["awareness"])),
        running(ENGAGEMENT, namespace.settings(urls["engagement"])),
        running(ADVOCACY, namespace.settings(urls["advocacy"])),
    ):
        await publish_activities(namespace, log)
        # advocacy credits in event time: once every partition has passed the talk (day 5)
        await publish_tick(namespace, T0 + timedelta(days=6))
        records = await read_topic(namespace, "journey-transitions", until=6)

    changes = [e.data for e in envelopes(records)]
    assert all(isinstance(c, StageChangedV1) for c in changes)
    seen = {(c.member_id, c.dimension, c.from_stage, c.to_stage) for c in changes}  # type: ignore[union-attr]
    assert seen == {
        ("v-1", "awareness", None, "visitor"),
        ("v-1", "awareness", "visitor", "member"),
        ("m-2", "awareness", None, "member"),
        ("m-2", "engagement", None, "engaged"),  # post 3 + talk 8 crosses 8
        ("v-1", "engagement", None, "engaged"),
        ("v-1", "advocacy", None, "advocate"),  # peer help 2 + accepted 5 + talk 8 >= 12
    }
    assert len(changes) == len(seen), "an event was emitted twice"
    # every record is keyed by the member it is about
    # (engagement's watermarks ride on the topic too, on every partition: envelopes skips them)
    events = envelopes(records)
    assert all(e.key == e.data.member_id for e in events)  # type: ignore[union-attr]

    # each service keeps its own state, in its own database, and nothing of the others'
    tables = {}
    for name, url in urls.items():
        conn = await asyncpg.connect(url)
        try:
            tables[name] = {
                r["tablename"]
                for r in await conn.fetch(
                    "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
                )
            }
            if name == "awareness":
                stages = dict(await conn.fetch("SELECT member_id, stage FROM people"))
                assert stages == {"v-1": "member", "m-2": "member"}
        finally:
            await conn.close()
    plumbing = {"inbox", "outbox", "schema_migrations", "watermark", "event_clock"}
    own = {name: names - plumbing for name, names in tables.items()}
    assert all(names >= plumbing for names in tables.values())
    assert all(own.values()), "every service keeps state of its own"
    assert not (
        own["awareness"] & own["engagement"]
        or own["awareness"] & own["advocacy"]
        or own["engagement"] & own["advocacy"]
    ), "no service holds another's tables"


async def test_redelivered_activity_is_applied_once(namespace: Namespace) -> None:
    url = await namespace.create_database("engagement")
    post = activity("m-1", "event_talk")  # weight 8: engaged at once
    async with running(ENGAGEMENT, namespace.settings(url)) as service:
        await publish_activities(namespace, [post, post])
        await publish_activities(namespace, [post])
        records = await read_topic(namespace, "journey-transitions", until=1)
        for _ in range(100):
            if service.processor and service.processor.stats.consumed >= 3:
                break
            await asyncio.sleep(0.05)
        assert service.processor is not None
        assert service.processor.stats.duplicates == 2
    assert len(records) == 1


async def test_poison_records_are_dead_lettered_and_the_stream_moves_on(
    namespace: Namespace,
) -> None:
    from shared.cloudevents import OutgoingRecord, encode
    from shared.contracts import ACTIVITY

    url = await namespace.create_database("engagement")
    good = encode(ACTIVITY, activity("m-5", "event_talk"), event_id="good-1", source="/t")
    poison = [
        OutgoingRecord("member-activity", b"m-6", b"{not json", good.headers, "p1"),
        OutgoingRecord(
            "member-activity",
            b"m-6",
            good.value,
            [(k, b"community.activity.v7" if k == "ce_type" else v) for k, v in good.headers],
            "p2",
        ),
        OutgoingRecord(
            "member-activity",
            b"m-6",
            good.value.replace(b'"kind":"event_talk",', b""),
            good.headers,
            "p3",
        ),
    ]
    async with running(ENGAGEMENT, namespace.settings(url)):
        await publish(namespace, [*poison, good])
        dead = await read_topic(namespace, "member-activity.dlq", until=3)
        transitions = await read_topic(namespace, "journey-transitions", until=1)
    reasons = sorted(dict(r.headers)["dlq_reason"].decode() for r in dead)
    assert len(reasons) == 3
    assert any("failed its schema" in r and "kind" in r for r in reasons)
    assert any("unknown event type 'community.activity.v7'" in r for r in reasons)
    assert any("Invalid JSON" in r or "json" in r.lower() for r in reasons)
    assert {r.value for r in dead} >= {b"{not json"}  # the original bytes are kept
    assert all(
        dict(r.headers)["dlq_topic"] == namespace.topic("member-activity").encode() for r in dead
    )
    assert [e.data.member_id for e in envelopes(transitions)] == ["m-5"]  # type: ignore[union-attr]
