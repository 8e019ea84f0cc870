"""Merges and erasures as pure rules: how events are read through aliases and erasures
(`shared.lifecycle`), and how each stage service folds two people into one."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from datetime import timedelta

import pytest

from services.advocacy import domain as advocacy
from services.awareness import domain as awareness
from services.engagement import domain as engagement
from services.gateway.identity.rules import (
    Handle,
    Screened,
    email_hash,
    identity_hash,
    screen,
)
from shared import lifecycle
from shared.cloudevents import Envelope, encode
from shared.contracts import (
    ACTIVITY,
    ActivityV1,
    Actor,
    MemberAcquiredV1,
    MemberErasedV1,
    MemberMergedV1,
    PeerHelpV1,
    StageChangedV1,
    Target,
)
from shared.eventtime import clock_tick
from shared.members import pseudonym
from tests.factories import T0, activity

CAUSE = "merge-event-1"


# --------------------------------------------------------------------------------------------
# reading events through merges and erasures
# --------------------------------------------------------------------------------------------


def test_a_merged_id_reads_as_its_survivor_wherever_an_event_names_it() -> None:
    members = lifecycle.Members(aliases={"b": "a"})
    reply = activity(
        "b", "reply", thread_author="c", properties={"referred_by": "b", "anonymous_id": "v-1"}
    )
    reply = reply.model_copy(
        update={
            "target": Target(
                thread_id="t", thread_author_member_id="b", parent_author_member_id="b"
            )
        }
    )
    read = lifecycle.canonical(reply, members)
    assert isinstance(read, ActivityV1)
    assert read.actor.member_id == "a"
    assert read.target is not None
    assert (read.target.thread_author_member_id, read.target.parent_author_member_id) == ("a", "a")
    assert read.properties == {"referred_by": "a", "anonymous_id": "v-1"}
    untouched = activity("c", "post")
    assert lifecycle.canonical(untouched, members) is untouched

    help_ = PeerHelpV1(
        helper_member_id="b",
        helped_member_id="c",
        thread_id="t",
        url=None,
        accepted=False,
        occurred_at=T0,
        activity_id="x",
    )
    assert lifecycle.canonical(help_, members) == help_.model_copy(update={"helper_member_id": "a"})


def test_events_about_an_erased_member_are_dropped_and_mentions_removed() -> None:
    members = lifecycle.Members(erased={"x"})
    assert lifecycle.canonical(activity("x", "post"), members) is None
    reply = activity("y", "reply", thread_author="x", properties={"referred_by": "x", "k": 1})
    read = lifecycle.canonical(reply, members)
    assert isinstance(read, ActivityV1)
    assert read.target is not None and read.target.thread_author_member_id is None
    assert read.properties == {"k": 1}
    for about_x in (
        PeerHelpV1(
            helper_member_id="y",
            helped_member_id="x",
            thread_id=None,
            url=None,
            accepted=True,
            occurred_at=T0,
            activity_id="z",
        ),
        MemberAcquiredV1(
            member_id="y", via="referral", referrer_member_id="x", occurred_at=T0, activity_id="s"
        ),
        StageChangedV1(
            member_id="x",
            dimension="engagement",
            from_stage=None,
            to_stage="engaged",
            reason="r",
            occurred_at=T0,
        ),
    ):
        assert lifecycle.canonical(about_x, members) is None


def test_a_transition_s_reason_loses_the_erased_ids_it_names() -> None:
    referred = StageChangedV1(
        member_id="k-2",
        dimension="awareness",
        from_stage=None,
        to_stage="member",
        reason="signed up on web, referred by m-1 (not m-12), thanks m-1.",
        occurred_at=T0,
    )
    assert {"m-1", "m-12", "k-2"} <= lifecycle.member_ids(referred)
    read = lifecycle.canonical(referred, lifecycle.Members(erased={"m-1"}))
    assert isinstance(read, StageChangedV1)
    assert read.reason == (
        "signed up on web, referred by (erased member) (not m-12), thanks (erased member)."
    )
    assert lifecycle.canonical(referred, lifecycle.Members(erased={"m-2"})) is referred


def test_a_later_merge_repoints_earlier_aliases_and_an_erasure_forgets_them() -> None:
    members = lifecycle.Members(aliases={"c": "b"})
    members.note_merge(lifecycle.Merge("a", "b", T0, "r", "e"))
    assert members.resolve("c") == "a" and members.resolve("b") == "a"
    members.note_erased({"a", "b", "c"})
    assert members.aliases == {}
    assert [members.resolve(m) for m in "abc"] == [None, None, None]


def test_a_merge_already_known_is_applied_again_and_a_self_merge_is_not() -> None:
    def envelope(survivor: str, merged: str) -> Envelope:
        data = MemberMergedV1(
            survivor_member_id=survivor, merged_member_id=merged, occurred_at=T0, reason="r"
        )
        return Envelope("e", "member.merged.v1", "/gateway", T0, data, survivor)

    members = lifecycle.Members(aliases={"b": "a", "a2": "z"})
    again = lifecycle.merge_of(envelope("a", "b"), members)
    assert again is not None and (again.survivor, again.merged) == ("a", "b")
    assert lifecycle.merge_of(envelope("a", "a"), members) is None
    chained = lifecycle.merge_of(envelope("a2", "b"), members)  # b is a, a2 is z: merge a into z
    assert chained is not None and (chained.survivor, chained.merged) == ("z", "a")
    assert lifecycle.merge_of(envelope("a", "x"), lifecycle.Members(erased={"x"})) is None


def test_erasures_on_the_log_cover_every_id_merged_into_the_member() -> None:
    log: list[MemberMergedV1 | MemberErasedV1] = [
        MemberMergedV1(survivor_member_id="b", merged_member_id="c", occurred_at=T0, reason="r"),
        MemberMergedV1(survivor_member_id="a", merged_member_id="b", occurred_at=T0, reason="r"),
        MemberMergedV1(survivor_member_id="p", merged_member_id="q", occurred_at=T0, reason="r"),
        MemberErasedV1(member_id="a", occurred_at=T0),
    ]
    assert lifecycle.erased_in_log(log) == {"a", "b", "c"}
    # an erasure of a merged id erases the person it is part of
    assert lifecycle.erased_in_log([*log[:3], MemberErasedV1(member_id="q", occurred_at=T0)]) == {
        "p",
        "q",
    }


def test_the_erased_hash_is_stable_and_not_the_id() -> None:
    assert lifecycle.member_hash("m-1") == lifecycle.member_hash("m-1")
    assert lifecycle.member_hash("m-1") != lifecycle.member_hash("m-2")
    assert "m-1" not in lifecycle.member_hash("m-1")


# --------------------------------------------------------------------------------------------
# awareness
# --------------------------------------------------------------------------------------------

AWARENESS = awareness.Rules()


def _person(member_id: str, stage: str, day: float, **kw: object) -> awareness.Person:
    at = T0 + timedelta(days=day)
    return awareness.Person(
        member_id,
        stage,
        first_seen_at=at,
        first_touch=awareness.Touch("direct", None, at, f"{member_id}-first"),
        joined_at=at if stage != awareness.VISITOR else None,
        **kw,  # type: ignore[arg-type]
    )


def test_awareness_merge_keeps_the_earliest_touch_and_moves_up_to_the_furthest_stage() -> None:
    a = _person("a", awareness.MEMBER, day=10, touchpoints=2, touchpoint_ids=("t1", "t2"))
    b = _person(
        "b",
        awareness.CUSTOMER,
        day=3,
        customer_at=T0 + timedelta(days=5),
        referred_by="r",
        touchpoints=1,
        touchpoint_ids=("t3",),
    )
    outcome = awareness.merge_people(a, b, "a", "b", CAUSE, AWARENESS)
    p = outcome.person
    assert p is not None
    assert (p.member_id, p.stage) == ("a", awareness.CUSTOMER)
    assert p.first_seen_at == b.first_seen_at and p.first_touch == b.first_touch
    assert p.joined_at == b.joined_at and p.customer_at == b.customer_at
    assert p.referred_by == "r"  # the referrer of whoever joined first
    assert (p.touchpoints, p.touchpoint_ids) == (3, ("t1", "t2", "t3"))
    [t] = outcome.transitions
    assert (t.member_id, t.from_stage, t.to_stage) == ("a", awareness.MEMBER, awareness.CUSTOMER)
    assert (t.from_stage, t.to_stage) in awareness.LEGAL_MOVES
    # b bought on day 5, but a's timeline never runs backwards: not before a joined (day 10)
    assert t.occurred_at == a.joined_at and t.caused_by == (CAUSE,)


def test_awareness_merge_into_an_unknown_survivor_takes_the_state_without_a_transition() -> None:
    b = _person("b", awareness.MEMBER, day=1)
    outcome = awareness.merge_people(None, b, "a", "b", CAUSE, AWARENESS)
    assert outcome.person == replace(b, member_id="a") and outcome.transitions == []
    a = _person("a", awareness.CUSTOMER, day=1, customer_at=T0)
    assert awareness.merge_people(a, None, "a", "b", CAUSE, AWARENESS).person == a
    # the survivor already further: no transition, no self-referral
    b2 = _person("b", awareness.MEMBER, day=0, referred_by="a")
    merged = awareness.merge_people(a, b2, "a", "b", CAUSE, AWARENESS)
    assert merged.transitions == [] and merged.person is not None
    assert merged.person.referred_by is None


def test_awareness_erasure_tells_everyone_about_the_anonymous_ids() -> None:
    events = awareness.erasure_cascade({"v-2", "v-1"}, T0)
    assert [e.member_id for e in events] == ["v-1", "v-2"]
    assert all(e.occurred_at == T0 for e in events)


# --------------------------------------------------------------------------------------------
# engagement
# --------------------------------------------------------------------------------------------

ENGAGEMENT = engagement.Rules()


def _participant(
    member_id: str, stage: str | None, score: float, last_day: float, since_day: float | None = None
) -> engagement.Participant:
    last = T0 + timedelta(days=last_day)
    return engagement.Participant(
        member_id,
        stage,
        score,
        last,
        T0,
        last,
        None if since_day is None else T0 + timedelta(days=since_day),
        3,
    )


def test_engagement_merge_adds_both_scores_at_a_common_time() -> None:
    a = _participant("a", None, 4.0, last_day=0)
    b = _participant("b", None, 3.0, last_day=30)  # one half-life later
    combined, transitions = engagement.merge_participants(a, b, "a", "b", CAUSE, ENGAGEMENT)
    assert combined is not None
    assert combined.score_at == b.score_at
    assert combined.score == pytest.approx(4.0 / 2 + 3.0)
    assert combined.activities == 6 and combined.last_active_at == b.last_active_at
    assert transitions == []  # 5 < 8


def test_engagement_merge_promotes_when_the_combined_score_reaches_the_threshold() -> None:
    a = _participant("a", None, 5.0, last_day=1)
    b = _participant("b", None, 5.0, last_day=1)
    combined, [t] = engagement.merge_participants(a, b, "a", "b", CAUSE, ENGAGEMENT)
    assert combined is not None and combined.stage == engagement.ENGAGED
    assert (t.from_stage, t.to_stage, t.occurred_at) == (None, engagement.ENGAGED, a.score_at)
    assert t.caused_by == (CAUSE,) and t.score == pytest.approx(10.0)


def test_engagement_merge_reactivates_a_survivor_the_other_id_shows_was_active() -> None:
    a = _participant("a", engagement.AT_RISK, 2.0, last_day=0, since_day=21)
    b = _participant("b", None, 4.0, last_day=25)  # active after a went at risk
    combined, [t] = engagement.merge_participants(a, b, "a", "b", CAUSE, ENGAGEMENT)
    assert (t.from_stage, t.to_stage) == (engagement.AT_RISK, engagement.REACTIVATED)
    assert (t.from_stage, t.to_stage) in engagement.LEGAL_MOVES
    assert t.occurred_at == b.last_active_at
    assert combined is not None and combined.stage_since == b.last_active_at
    # active only before the demotion: still at risk
    early = _participant("b", None, 4.0, last_day=10)
    kept, none = engagement.merge_participants(a, early, "a", "b", CAUSE, ENGAGEMENT)
    assert none == [] and kept is not None and kept.stage == engagement.AT_RISK


def test_engagement_merge_inherits_the_merged_stage_when_the_survivor_has_none() -> None:
    a = _participant("a", None, 1.0, last_day=1)
    b = _participant("b", engagement.ENGAGED, 9.0, last_day=2, since_day=2)
    combined, transitions = engagement.merge_participants(a, b, "a", "b", CAUSE, ENGAGEMENT)
    assert transitions == []
    assert combined is not None
    assert (combined.member_id, combined.stage, combined.stage_since) == (
        "a",
        engagement.ENGAGED,
        b.stage_since,
    )
    assert engagement.merge_participants(None, b, "a", "b", CAUSE, ENGAGEMENT) == (
        replace(b, member_id="a"),
        [],
    )


# --------------------------------------------------------------------------------------------
# advocacy
# --------------------------------------------------------------------------------------------

ADVOCACY = advocacy.Rules()


def _credit(
    member: str, kind: advocacy.ContributionKind, key: str, day: float, content: str | None = None
) -> advocacy.Contribution:
    return advocacy.Contribution(
        member_id=member,
        kind=kind,
        weight=ADVOCACY.weights.of(kind),
        occurred_at=T0 + timedelta(days=day),
        cause_id=f"e-{key}",
        key=f"{kind}:{key}",
        link=f"https://x/{key}",
        content_id=content,
    )


def test_advocacy_merge_recredits_to_the_survivor_once_per_act_and_never_to_itself() -> None:
    log = [
        _credit("a", "peer_help", "a:t-1", day=1),
        _credit("b", "peer_help", "b:t-1", day=2),  # the same thread: one act of help
        _credit("b", "peer_help", "b:t-2", day=3),
        _credit("b", "event_talk", "meetup:9", day=4),
        _credit("a", "content_engaged", "blog:p1:b", day=5, content="blog:p1"),  # b liked a's post
        _credit("y", "content_engaged", "blog:p2:a", day=6, content="blog:p2"),
        _credit("y", "content_engaged", "blog:p2:b", day=7, content="blog:p2"),  # one engager now
        _credit("b", "referral_joined", "a", day=8),  # b "referred" a: now self-referral
        _credit("r", "referral_joined", "b", day=9),  # r referred b: r referred the person a
    ]
    moved = advocacy.merge_contributions(log, "a", "b")
    assert sorted((c.member_id, c.key) for c in moved) == [
        ("a", "event_talk:meetup:9"),
        ("a", "peer_help:a:t-1"),
        ("a", "peer_help:a:t-2"),
        ("r", "referral_joined:a"),
        ("y", "content_engaged:blog:p2:a"),
    ]
    kept_help = next(c for c in moved if c.key == "peer_help:a:t-1")
    assert kept_help.occurred_at == T0 + timedelta(days=1)  # the earliest of the two


def test_advocacy_merge_judges_the_survivor_again() -> None:
    log = (
        _credit("a", "event_talk", "m:1", day=1),
        _credit("a", "content_published", "blog:1", day=2),
        _credit("a", "peer_help", "a:t", day=3),
    )
    member, [t], [signal] = advocacy.merge_members(
        advocacy.Member("a", None, 8.0),
        advocacy.Member("b", None, 5.0),
        ("a", "b", CAUSE),
        log,
        None,
        ADVOCACY,
    )
    assert member is not None and member.stage == advocacy.ADVOCATE
    assert member.score == 13.0
    assert member.counts == {"event_talk": 1, "content_published": 1, "peer_help": 1}
    assert (t.from_stage, t.to_stage, t.caused_by) == (None, advocacy.ADVOCATE, (CAUSE,))
    assert t.occurred_at == T0 + timedelta(days=3)  # the contribution that crossed 12
    assert signal.cause == ("a", CAUSE) and signal.payload.member_id == "a"

    # an advocate merged with a champion is the champion for the rest of the period
    boundary = T0 + timedelta(days=10)
    champion, [c], none = advocacy.merge_members(
        advocacy.Member("a", advocacy.ADVOCATE, 13.0),
        advocacy.Member("b", advocacy.CHAMPION, 20.0),
        ("a", "b", CAUSE),
        log,
        boundary,
        ADVOCACY,
    )
    assert champion is not None and champion.stage == advocacy.CHAMPION and none == []
    assert (c.from_stage, c.to_stage, c.occurred_at) == (
        advocacy.ADVOCATE,
        advocacy.CHAMPION,
        boundary,
    )
    # no stage of its own: takes the merged one's, no transition
    inherited, ts, ss = advocacy.merge_members(
        None, advocacy.Member("b", advocacy.CHAMPION, 20.0), ("a", "b", CAUSE), log, None, ADVOCACY
    )
    assert inherited is not None and inherited.stage == advocacy.CHAMPION
    assert ts == [] and ss == []


def test_advocacy_erasure_keeps_others_credit_without_the_erased_id() -> None:
    def tag(m: str) -> str:
        return lifecycle.member_hash(m)[:16]

    engaged = _credit("y", "content_engaged", "blog:p:x", day=1, content="blog:p")
    referral = _credit("y", "referral_joined", "x", day=2)
    other = _credit("y", "peer_help", "y:t", day=3)
    for c in (engaged, referral):
        assert advocacy.names(c, {"x"})
        anonymous = advocacy.anonymize(c, {"x"}, tag)
        assert "x" not in anonymous.key.split(":") and anonymous.weight == c.weight
        assert anonymous.member_id == "y"
        assert not advocacy.names(anonymous, {"x"})
    assert advocacy.anonymize(other, {"x"}, tag) == other
    # two erased engagers of one piece stay two credits
    second = _credit("y", "content_engaged", "blog:p:w", day=1, content="blog:p")
    assert (
        advocacy.anonymize(engaged, {"x", "w"}, tag).key
        != advocacy.anonymize(second, {"x", "w"}, tag).key
    )


def test_advocacy_uncredit_takes_back_what_a_merge_found_twice() -> None:
    y = advocacy.Member("y", None, 2.0, {"content_engaged": 2})
    dropped = _credit("y", "content_engaged", "blog:p2:b", day=1, content="blog:p2")
    assert advocacy.uncredit(y, [dropped]) == advocacy.Member(
        "y", None, 1.0, {"content_engaged": 1}
    )


# --------------------------------------------------------------------------------------------
# personal data stays out of the log
# --------------------------------------------------------------------------------------------


def test_a_pseudonym_is_stable_per_key_and_identity_and_names_no_one() -> None:
    key = b"k" * 32
    first = pseudonym(key, "github", "583231")
    assert first == pseudonym(key, "github", "583231")  # a redelivery, an import, a replica
    assert first.startswith("m-") and len(first) == 28 and "583231" not in first
    assert first != pseudonym(key, "slack", "583231")  # the platform is part of the identity
    assert first != pseudonym(b"j" * 32, "github", "583231")  # another key, another id
    assert identifier_pattern().match(first)  # a valid member id of the contracts


def identifier_pattern() -> re.Pattern[str]:
    schema = ActivityV1.model_json_schema()["$defs"]["Actor"]["properties"]["member_id"]
    return re.compile(schema["pattern"])


def test_published_activities_keep_no_handle_email_or_platform_user_id() -> None:
    a = activity("m-1", "post", day=1).model_copy(
        update={
            "actor": Actor(
                member_id="m-1",
                handle="ada",
                email="ada@example.com",
                platform_user_id="583231",
            )
        }
    )
    record = encode(ACTIVITY, a, event_id="e-1", source="test")
    screened = screen(record)
    published, handle = screened.public, screened.handle
    assert b"ada" not in published.value and b"583231" not in published.value
    assert published.headers == record.headers and published.key == record.key
    assert json.loads(published.value)["actor"] == {
        "member_id": "m-1",
        "anonymous": False,
        "is_team_member": False,
        "is_bot": False,
    }
    assert handle == Handle("m-1", "ada", a.occurred_at)
    # a visitor's handle is not kept; anything but an activity passes as it is
    visitor = a.model_copy(update={"actor": Actor(member_id="v-1", handle="x", anonymous=True)})
    assert screen(encode(ACTIVITY, visitor, event_id="e-2", source="t")).handle is None
    tick = clock_tick(T0)
    assert screen(tick).public is tick and screen(tick).handle is None


def test_the_guard_reads_what_blocks_an_activity_from_the_same_parse() -> None:
    """`screen`: the hashes an erasure or a blocked identity matches, taken from the activity
    as sent (before its personal fields are removed for publishing)."""
    a = activity("m-1", "post", day=1).model_copy(
        update={
            "actor": Actor(
                member_id="m-1", handle="ada", email=" Ada@Example.com", platform_user_id="583231"
            )
        }
    )
    screened = screen(encode(ACTIVITY, a, event_id="e-1", source="test"))
    assert screened.member_hashes == (lifecycle.member_hash("m-1"),)
    assert screened.identity_hashes == (
        identity_hash(a.source, "583231"),
        email_hash("ada@example.com"),
    )
    assert b"583231" not in screened.public.value and screened.handle is not None
    plain = activity("m-2", "post").model_copy(update={"actor": Actor(member_id="m-2")})
    bare = screen(encode(ACTIVITY, plain, event_id="e-2", source="t"))
    assert bare.identity_hashes == () and bare.handle is None
    assert b'"email"' not in bare.public.value  # even a null personal field is not published
    tick = clock_tick(T0)
    assert screen(tick) == Screened(tick)  # anything but an activity: nothing to check
