"""The three stage services against the real broker and PostgreSQL, in one process each."""

from __future__ import annotations

import asyncio

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
    read_topic,
    running,
)
from tests.factories import activity

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
    ]
    async with (
        running(AWARENESS, namespace.settings(urls["awareness"])),
        running(ENGAGEMENT, namespace.settings(urls["engagement"])),
        running(ADVOCACY, namespace.settings(urls["advocacy"])),
    ):
        await publish_activities(namespace, log)
        records = await read_topic(namespace, "journey-transitions", until=6)

    changes = [e.data for e in envelopes(records)]
    assert all(isinstance(c, StageChangedV1) for c in changes)
    seen = {(c.member_id, c.dimension, c.from_stage, c.to_stage) for c in changes}  # type: ignore[union-attr]
    assert seen == {
        ("v-1", "awareness", None, "visitor"),
        ("v-1", "awareness", "visitor", "member"),
        ("m-2", "awareness", None, "member"),
        ("m-2", "engagement", None, "engaged"),
        ("v-1", "engagement", None, "engaged"),
        ("v-1", "advocacy", None, "advocate"),
    }
    assert len(changes) == len(seen), "an event was emitted twice"
    # every record is keyed by the member it is about
    assert all(r.key.decode() == c.member_id for r, c in zip(records, changes, strict=True))  # type: ignore[union-attr]

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
    plumbing = {"inbox", "outbox", "schema_migrations", "watermark"}
    own = {name: names - plumbing for name, names in tables.items()}
    assert all(names >= plumbing for names in tables.values())
    assert all(own.values()), "every service keeps state of its own"
    assert not (own["awareness"] & own["engagement"] or own["awareness"] & own["advocacy"]
                or own["engagement"] & own["advocacy"]), "no service holds another's tables"
