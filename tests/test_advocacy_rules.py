"""Advocacy's rules, one by one, and properties of the whole: legal stage paths, and the same
result however the log is cut into batches."""

from __future__ import annotations

import asyncio
import itertools
import json
import zlib
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.advocacy import domain
from services.advocacy.domain import (
    ADVOCATE,
    CHAMPION,
    BatchResult,
    Contribution,
    Member,
    Rules,
    Snapshot,
    Step,
    Weights,
)
from services.advocacy.handlers import apply_batch, build_handler, records
from shared.cloudevents import Envelope, OutgoingRecord, encode
from shared.contracts import (
    ACTIVITY,
    CLOCK_TICK,
    MEMBER_ACQUIRED,
    PEER_HELP,
    PRODUCT_FEEDBACK,
    STAGE_CHANGED,
    ActivityV1,
    Actor,
    AdvocateV1,
    ChampionNominatedV1,
    ClockTickV1,
    Contract,
    EventType,
    MemberAcquiredV1,
    PeerHelpV1,
    ProductFeedbackV1,
    StageChangedV1,
    Target,
)
from shared.eventtime import ClockReading
from shared.rules import RulesError, load_rules
from shared.settings import Settings

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
RULES = Rules()
_ids = itertools.count(1)

# --------------------------------------------------------------------------------------------
# builders (the integration test uses them too)
# --------------------------------------------------------------------------------------------


def act(
    member_id: str,
    kind: str,
    *,
    day: float = 0,
    parent_author: str | None = None,
    parent_id: str | None = None,
    parent_kind: str | None = "content_published",
    thread_id: str | None = None,
    url: str | None = None,
    team: bool = False,
    bot: bool = False,
    anonymous: bool = False,
    source: str = "discourse",
    activity_id: str | None = None,
) -> ActivityV1:
    target = None
    if parent_author or parent_id or thread_id or url:
        target = Target(
            thread_id=thread_id,
            parent_id=parent_id,
            parent_author_member_id=parent_author,
            parent_kind=parent_kind if parent_author else None,
            url=url,
        )
    return ActivityV1(
        activity_id=activity_id or f"a-{next(_ids)}",
        occurred_at=T0 + timedelta(days=day),
        source=source,
        kind=kind,
        actor=Actor(member_id=member_id, anonymous=anonymous, is_team_member=team, is_bot=bot),
        target=target,
    )


def peer_help(
    helper: str,
    helped: str,
    *,
    accepted: bool = False,
    day: float = 0,
    thread_id: str | None = None,
    url: str | None = None,
) -> PeerHelpV1:
    n = next(_ids)
    return PeerHelpV1(
        helper_member_id=helper,
        helped_member_id=helped,
        thread_id=thread_id or f"t-{n}",
        url=url,
        accepted=accepted,
        occurred_at=T0 + timedelta(days=day),
        activity_id=f"a-{n}",
    )


def acquired(member_id: str, referrer: str, *, day: float = 0) -> MemberAcquiredV1:
    return MemberAcquiredV1(
        member_id=member_id,
        via="referral",
        referrer_member_id=referrer,
        occurred_at=T0 + timedelta(days=day),
        activity_id=f"a-{next(_ids)}",
    )


def engaged(member_id: str, *, day: float = 0) -> StageChangedV1:
    """Engagement's transition that releases a referral credit."""
    return StageChangedV1(
        member_id=member_id,
        dimension="engagement",
        from_stage=None,
        to_stage="engaged",
        reason="test",
        occurred_at=T0 + timedelta(days=day),
    )


def feedback(member_id: str, *, day: float = 0, kind: str = "feature_request") -> ProductFeedbackV1:
    """Engagement's signal for a member's product feedback."""
    n = next(_ids)
    return ProductFeedbackV1(
        member_id=member_id,
        feedback_kind=kind,  # type: ignore[arg-type]
        matched=kind,
        source="discourse",
        activity_id=f"a-{n}",
        title=f"Idea {n}",
        url=f"https://forum.example/t/{n}",
        stages={"engagement": "engaged"},
        from_champion=False,
        occurred_at=T0 + timedelta(days=day),
    )


def tick(*, day: float) -> ClockTickV1:
    return ClockTickV1(occurred_at=T0 + timedelta(days=day))


def event_type_of(data: Contract) -> EventType:
    for et in (ACTIVITY, PEER_HELP, MEMBER_ACQUIRED, STAGE_CHANGED, PRODUCT_FEEDBACK, CLOCK_TICK):
        if isinstance(data, et.model):
            return et
    raise TypeError(type(data))


def event_id_of(data: Contract) -> str:
    """The id its producer would give it: stable per event, so tests can re-send it."""
    et = event_type_of(data)
    if isinstance(data, ClockTickV1):
        return f"tick:{data.occurred_at.isoformat()}"
    if isinstance(data, StageChangedV1):
        return f"{et.type}:{data.member_id}:{data.to_stage}:{data.occurred_at.isoformat()}"
    return f"{et.type}:{getattr(data, 'activity_id', '')}:{et.key_of(data)}"


def envelope(data: Contract, event_id: str | None = None) -> Envelope:
    et = event_type_of(data)
    return Envelope(
        id=event_id or event_id_of(data),
        type=et.type,
        source="/tests",
        time=data.occurred_at,  # type: ignore[attr-defined]
        data=data,
        key=et.key_of(data),
    )


def record(data: Contract) -> OutgoingRecord:
    return encode(event_type_of(data), data, event_id=event_id_of(data), source="/tests")


def contributions(data: Contract, rules: Rules = RULES) -> list[Contribution]:
    return domain.contributions_of(data, event_id_of(data), rules)


def run(events: Sequence[Contract], rules: Rules = RULES) -> BatchResult:
    """The pure batch on an empty store, no reviews."""
    steps = [Step(tuple(contributions(e, rules))) for e in events]
    return domain.run_batch(Snapshot({}, frozenset(), {}), steps, rules)


def scores(result: BatchResult) -> dict[str, float]:
    return {m.member_id: m.score for m in result.members.values()}


# --------------------------------------------------------------------------------------------
# each kind of contribution
# --------------------------------------------------------------------------------------------


def test_peer_help_credits_the_helper() -> None:
    [c] = contributions(peer_help("m-1", "m-2", url="https://forum.example/t/1"))
    assert (c.member_id, c.kind, c.weight, c.link) == (
        "m-1",
        "peer_help",
        2.0,
        "https://forum.example/t/1",
    )


def test_accepted_answer_credits_the_helper_with_more() -> None:
    [c] = contributions(peer_help("m-1", "m-2", accepted=True))
    assert (c.member_id, c.kind, c.weight) == ("m-1", "answer_accepted", 5.0)


def test_accepted_answer_is_counted_once_from_the_signal_not_the_activity() -> None:
    """Engagement turns the `answer_accepted` activity into signal.peer_help.v1 (accepted);
    crediting both would count one answer twice."""
    activity = act("m-1", "answer_accepted", thread_id="q-1", parent_author="m-2")
    assert contributions(activity) == []
    result = run([activity, peer_help("m-1", "m-2", accepted=True, thread_id="q-1")])
    assert scores(result) == {"m-1": 5.0}


def test_help_in_one_thread_counts_once_however_many_replies() -> None:
    result = run([peer_help("m-1", "m-2", thread_id="q-1", day=d) for d in (0, 1, 2)])
    assert scores(result) == {"m-1": 2.0}
    result = run([peer_help("m-1", "m-2", thread_id=f"q-{d}", day=d) for d in (0, 1, 2)])
    assert scores(result) == {"m-1": 6.0}


def test_helping_yourself_is_not_credited() -> None:
    assert contributions(peer_help("m-1", "m-1")) == []


def test_content_published_credits_the_author() -> None:
    [c] = contributions(act("m-1", "content_published", url="https://blog.example/p"))
    assert (c.member_id, c.kind, c.weight, c.link) == (
        "m-1",
        "content_published",
        3.0,
        "https://blog.example/p",
    )


def test_event_talk_credits_the_speaker() -> None:
    [c] = contributions(act("m-1", "event_talk"))
    assert (c.member_id, c.kind, c.weight) == ("m-1", "event_talk", 8.0)


@pytest.mark.parametrize("kind", ["reaction", "reply"])
def test_engagement_with_content_credits_its_author(kind: str) -> None:
    [c] = contributions(act("m-2", kind, parent_author="m-1", parent_id="p-1"))
    assert (c.member_id, c.kind, c.weight, c.content_id) == (
        "m-1",
        "content_engaged",
        1.0,
        "discourse:p-1",
    )


@pytest.mark.parametrize("parent_kind", ["post", "reply", None])
def test_engagement_with_a_question_or_a_message_is_not_advocacy(parent_kind: str | None) -> None:
    reaction = act("m-2", "reaction", parent_author="m-1", parent_id="p-1", parent_kind=parent_kind)
    assert contributions(reaction) == []


def test_other_activity_kinds_credit_nobody() -> None:
    for kind in ("post", "page_view", "signup", "star", "event_attended", "purchase"):
        assert contributions(act("m-2", kind, parent_author="m-1", parent_id="p-1")) == []


def test_engaging_with_your_own_content_is_not_credited() -> None:
    assert contributions(act("m-1", "reaction", parent_author="m-1", parent_id="p-1")) == []


def test_engagement_without_a_piece_of_content_is_not_credited() -> None:
    """Without a parent or thread id the cap could not apply, so it does not count."""
    assert contributions(act("m-2", "reaction", parent_author="m-1")) == []


def test_content_engagement_is_capped_per_piece_and_counted_once_per_member() -> None:
    rules = RULES
    engagements = [
        act(f"fan-{i}", "reaction", parent_author="m-1", parent_id="p-1", day=i) for i in range(7)
    ]
    again = act("fan-0", "reply", parent_author="m-1", parent_id="p-1", day=8)
    other_piece = act("fan-0", "reaction", parent_author="m-1", parent_id="p-2", day=9)
    result = run([again, *engagements, other_piece], rules)
    credited = [c for c in result.credited if c.member_id == "m-1"]
    assert [c.content_id for c in credited].count("discourse:p-1") == rules.content_engagement_cap
    assert scores(result) == {"m-1": rules.content_engagement_cap * 1.0 + 1.0}
    # the cap holds across batches too: the store's count is where the next batch starts
    snapshot = Snapshot({}, frozenset(), {"discourse:p-1": 5})
    later = act("fan-9", "reaction", parent_author="m-1", parent_id="p-1", day=10)
    assert domain.run_batch(snapshot, [Step(tuple(contributions(later)))], rules).credited == ()


def referral_credits(events: Sequence[Contract], rules: Rules = RULES) -> list[Contribution]:
    """The referral credits a log releases, read in the given order."""
    facts = [f for e in events if (f := domain.referral_fact(e, event_id_of(e), rules)) is not None]
    return domain.follow_referrals({}, facts, rules)[1]


def test_a_referral_credits_nobody_at_sign_up() -> None:
    assert contributions(acquired("new-1", "m-1")) == []
    assert referral_credits([acquired("new-1", "m-1")]) == []


def test_a_referral_credits_the_referrer_once_the_member_becomes_engaged() -> None:
    [c] = referral_credits([acquired("new-1", "m-1"), engaged("new-1", day=9)])
    assert (c.member_id, c.kind, c.weight) == ("m-1", "referral_joined", 10.0)
    assert c.occurred_at == T0 + timedelta(days=9)  # dated at the engagement, not the sign-up
    assert c.cause_id == event_id_of(engaged("new-1", day=9))


def test_the_same_referral_credit_whichever_half_arrives_first() -> None:
    sign_up, engagement = acquired("new-1", "m-1", day=2), engaged("new-1", day=5)
    assert referral_credits([sign_up, engagement]) == referral_credits([engagement, sign_up])
    # engaged "before" the sign-up (history imported out of order): dated at the later one
    [c] = referral_credits([engaged("new-2", day=1), acquired("new-2", "m-1", day=3)])
    assert c.occurred_at == T0 + timedelta(days=3)


def test_a_referral_is_credited_once_however_often_the_member_engages() -> None:
    events = [acquired("new-1", "m-1"), engaged("new-1", day=4), engaged("new-1", day=40)]
    assert len(referral_credits(events)) == 1
    held, _ = domain.follow_referrals({}, [domain.Referral("new-1", engaged_at=T0)], RULES)
    assert held["new-1"].credited is False
    _, again = domain.follow_referrals(
        {"new-1": replace(held["new-1"], credited=True)},
        [domain.referral_fact(acquired("new-1", "m-1"), "x", RULES)],  # type: ignore[list-item]
        RULES,
    )
    assert again == []


def test_only_engagements_reaching_engaged_count_and_self_referrals_never() -> None:
    at_risk = engaged("new-1").model_copy(update={"from_stage": "engaged", "to_stage": "at_risk"})
    other_dimension = engaged("new-1").model_copy(update={"dimension": "advocacy"})
    assert referral_credits([acquired("new-1", "m-1"), at_risk, other_dimension]) == []
    assert referral_credits([acquired("m-1", "m-1"), engaged("m-1")]) == []


def test_referral_credit_alone_never_makes_an_advocate() -> None:
    """Three referrals (30 points) are still affiliate marketing; one reply more makes an
    advocate, dated at that reply."""
    refs = [
        replace(c, occurred_at=T0 + timedelta(days=i))
        for i, c in enumerate(
            referral_credits(
                [e for n in range(3) for e in (acquired(f"new-{n}", "m-1"), engaged(f"new-{n}"))]
            )
        )
    ]
    assert len(refs) == 3
    result = domain.run_batch(Snapshot({}, frozenset(), {}), [Step(tuple(refs))], RULES)
    assert result.members["m-1"].score == 30.0 and result.members["m-1"].stage is None
    assert result.transitions == ()
    help_ = contributions(peer_help("m-1", "m-2", day=5))
    later = domain.run_batch(
        Snapshot(dict(result.members), frozenset(), {}), [Step(tuple(help_))], RULES
    )
    [t] = later.transitions
    assert (t.to_stage, t.occurred_at) == (ADVOCATE, T0 + timedelta(days=5))


def test_merging_referral_halves_releases_the_credit_once() -> None:
    """The sign-up was seen under one id, the engagement under another; the merge joins them."""
    rows = [
        domain.Referral("new-a", referrer="m-1", acquired_at=T0),
        domain.Referral("new-b", engaged_at=T0 + timedelta(days=3), engaged_cause="ev-3"),
    ]
    merged, credits = domain.merge_referrals(rows, "new-a", "new-b", RULES)
    assert list(merged) == ["new-a"] and merged["new-a"].credited
    [c] = credits
    assert (c.member_id, c.key, c.cause_id) == ("m-1", "referral_joined:new-a", "ev-3")
    # a referrer merged into the member they referred is a self-referral: no credit
    rows = [
        domain.Referral("new-a", referrer="m-1", acquired_at=T0, engaged_at=T0, engaged_cause="ev")
    ]
    merged, credits = domain.merge_referrals(rows, "new-a", "m-1", RULES)
    assert credits == [] and merged["new-a"].referrer is None


def test_clock_ticks_credit_nobody() -> None:
    assert contributions(tick(day=1)) == []


def test_the_same_act_twice_is_credited_once_even_under_another_event_id() -> None:
    talk = act("m-1", "event_talk")
    steps = [
        Step(tuple(domain.contributions_of(talk, "id-1", RULES))),
        Step(tuple(domain.contributions_of(talk, "id-2", RULES))),
    ]
    result = domain.run_batch(Snapshot({}, frozenset(), {}), steps, RULES)
    assert [c.cause_id for c in result.credited] == ["id-1"]


# --------------------------------------------------------------------------------------------
# staff and bots
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("flags", [{"team": True}, {"bot": True}, {"anonymous": True}])
def test_flagged_actors_are_never_credited_nor_credit_others(flags: dict[str, Any]) -> None:
    assert contributions(act("x", "content_published", **flags)) == []
    assert contributions(act("x", "event_talk", **flags)) == []
    assert contributions(act("x", "reaction", parent_author="m-1", parent_id="p", **flags)) == []


def test_configured_staff_and_bots_are_never_credited_nor_credit_others() -> None:
    rules = Rules(team_member_ids=frozenset({"staff"}), bot_member_ids=frozenset({"bot"}))
    for who in ("staff", "bot"):
        assert contributions(act(who, "event_talk"), rules) == []
        assert contributions(act(who, "reaction", parent_author="m-1", parent_id="p"), rules) == []
        assert contributions(act("m-1", "reaction", parent_author=who, parent_id="p"), rules) == []
        assert contributions(peer_help(who, "m-1"), rules) == []
        assert contributions(peer_help("m-1", who, accepted=True), rules) == []
        assert domain.referral_fact(acquired("new", who), "e", rules) is None
        assert domain.referral_fact(acquired(who, "m-1"), "e", rules) is None
        assert domain.referral_fact(engaged(who), "e", rules) is None
    assert contributions(peer_help("m-1", "m-2"), rules) != []  # everyone else still counts


# --------------------------------------------------------------------------------------------
# the advocate threshold
# --------------------------------------------------------------------------------------------


def test_reaching_the_threshold_makes_an_advocate_at_once_and_only_once() -> None:
    talk = act("m-1", "event_talk", day=1, url="https://events.example/talk")
    blog = act("m-1", "content_published", day=2, url="https://blog.example/p")
    help_ = peer_help("m-1", "m-2", day=3, url="https://forum.example/t/9")
    more = act("m-1", "content_published", day=4)
    result = run([talk, blog, help_, more])
    assert scores(result) == {"m-1": 16.0}
    [t] = result.transitions
    assert (t.member_id, t.from_stage, t.to_stage, t.score) == ("m-1", None, ADVOCATE, 13.0)
    assert t.occurred_at == help_.occurred_at  # the event's time, not the wall clock
    assert t.caused_by == (event_id_of(help_),)
    [signal] = result.signals
    assert isinstance(signal.payload, AdvocateV1)
    assert signal.payload.evidence == {"event_talk": 1, "content_published": 1, "peer_help": 1}
    assert signal.payload.links == [
        "https://forum.example/t/9",
        "https://blog.example/p",
        "https://events.example/talk",
    ]
    assert result.members["m-1"].stage == ADVOCATE


def test_below_the_threshold_nothing_happens() -> None:
    result = run([act("m-1", "event_talk"), act("m-1", "content_published")])  # 11 < 12
    assert scores(result) == {"m-1": 11.0} and result.transitions == ()


def test_no_single_contribution_makes_an_advocate_with_the_defaults() -> None:
    assert max(RULES.weights.of(k) for k in domain.KINDS) < RULES.advocate_threshold


def test_threshold_and_weights_come_from_the_rules() -> None:
    rules = Rules(advocate_threshold=4, weights=Weights(peer_help=4))
    result = run([peer_help("m-1", "m-2")], rules)
    assert [t.to_stage for t in result.transitions] == [ADVOCATE]
    assert result.credited[0].weight == 4.0


# --------------------------------------------------------------------------------------------
# champion reviews
# --------------------------------------------------------------------------------------------


def next_boundary(t: datetime, rules: Rules = RULES) -> datetime:
    return domain.boundary_at_or_before(t, rules.period) + rules.period


def test_boundaries_are_multiples_of_the_period_since_the_epoch() -> None:
    b = domain.boundary_at_or_before(T0, timedelta(days=30))
    assert (b - domain.EPOCH) % timedelta(days=30) == timedelta(0)
    assert b <= T0 < b + timedelta(days=30)
    assert domain.boundary_at_or_before(b, timedelta(days=30)) == b


def test_reviews_fall_due_when_the_clock_passes_the_boundary() -> None:
    period = timedelta(days=30)
    b1 = next_boundary(T0)
    b2, b3 = b1 + period, b1 + 2 * period
    # reviews start at the boundary before the earliest contribution, whenever the clock moved
    last, due = domain.boundaries_due(None, T0, b3, period)
    assert due == [b1, b2, b3] and last == b3
    assert domain.boundaries_due(None, T0, b1 - timedelta(seconds=1), period) == (b1 - period, [])
    # nothing is due twice, and a clock behind the last review moves nothing
    assert domain.boundaries_due(last, T0, b3, period) == (last, [])
    assert domain.boundaries_due(b1, T0, b2, period) == (b2, [b2])
    assert domain.boundaries_due(None, None, b3, period) == (None, [])  # nobody credited yet


def test_settlement_puts_each_review_after_everything_at_or_before_its_boundary() -> None:
    b = next_boundary(T0)
    before, at, after = (contribution("m", 1, t) for t in (b - timedelta(hours=1), b, b + HOUR))
    steps = domain.settlement_steps([after, at, before], [b])
    assert steps == [Step((before, at), (b,)), Step((after,))]


def advocates(*ids: str) -> dict[str, Member]:
    return {m: Member(m, ADVOCATE, score=50.0) for m in ids}


HOUR = timedelta(hours=1)


def contribution(member_id: str, weight: float, at: datetime, n: int = 0) -> Contribution:
    return Contribution(
        member_id, "peer_help", weight, at, f"ev-{member_id}-{n}", f"k-{member_id}-{n}", None
    )


def test_review_names_the_top_n_advocates_by_window_score() -> None:
    b = next_boundary(T0)
    log = [
        contribution("a", 10, b - timedelta(days=1)),
        contribution("b", 30, b - timedelta(days=2)),
        contribution("c", 20, b - timedelta(days=3)),
        contribution("d", 5, b - timedelta(days=4)),
    ]
    members = advocates("a", "b", "c", "d") | {"e": Member("e", None, 100.0)}
    log.append(contribution("e", 100, b - timedelta(days=1)))  # not an advocate: not ranked
    changed, ts, signals = domain.review(b, members, log, RULES)
    assert [(t.member_id, t.from_stage, t.to_stage) for t in ts] == [
        ("b", ADVOCATE, CHAMPION),
        ("c", ADVOCATE, CHAMPION),
        ("a", ADVOCATE, CHAMPION),
    ]
    assert all(t.occurred_at == b for t in ts)
    assert {m: x.stage for m, x in changed.items()} == dict.fromkeys("bca", CHAMPION)
    nominations = [s.payload for s in signals]
    assert all(isinstance(n, ChampionNominatedV1) for n in nominations)
    first = nominations[0]
    assert isinstance(first, ChampionNominatedV1)
    assert (first.member_id, first.rank, first.score) == ("b", 1, 30.0)
    assert (first.window_start, first.window_end) == (b - timedelta(days=90), b)
    assert first.evidence == {"peer_help": 1}


def test_review_window_is_open_at_the_start_and_closed_at_the_end() -> None:
    b = next_boundary(T0)
    rules = replace(RULES, champion_top_n=5)
    log = [
        contribution("at-end", 1, b),
        contribution("at-start", 1, b - rules.window),
        contribution("after", 1, b + timedelta(seconds=1)),
    ]
    _, ts, _ = domain.review(b, advocates("at-end", "at-start", "after"), log, rules)
    assert [t.member_id for t in ts] == ["at-end"]


def test_review_ties_go_to_the_higher_lifetime_score_then_the_member_id() -> None:
    b = next_boundary(T0)
    rules = replace(RULES, champion_top_n=2)
    members = {
        "z": Member("z", ADVOCATE, score=90.0),
        "y": Member("y", ADVOCATE, score=20.0),
        "x": Member("x", ADVOCATE, score=20.0),
    }
    log = [contribution(m, 10, b - timedelta(days=1)) for m in members]
    _, ts, signals = domain.review(b, members, log, rules)
    assert [t.member_id for t in ts] == ["z", "x"]
    assert [s.payload.rank for s in signals] == [1, 2]  # type: ignore[union-attr]


def test_champions_out_of_the_top_n_go_back_to_advocate_at_the_review() -> None:
    b = next_boundary(T0)
    rules = replace(RULES, champion_top_n=2)
    members = {
        "old": Member("old", CHAMPION, 40.0),
        "kept": Member("kept", CHAMPION, 40.0),
        "new": Member("new", ADVOCATE, 40.0),
    }
    log = [
        contribution("kept", 9, b - timedelta(days=1)),
        contribution("new", 8, b - timedelta(days=1)),
        contribution("old", 1, b - timedelta(days=1)),
    ]
    changed, ts, signals = domain.review(b, members, log, rules)
    assert [(t.member_id, t.from_stage, t.to_stage) for t in ts] == [
        ("new", ADVOCATE, CHAMPION),
        ("old", CHAMPION, ADVOCATE),
    ]
    assert {m: x.stage for m, x in changed.items()} == {"new": CHAMPION, "old": ADVOCATE}
    assert [s.payload.member_id for s in signals] == ["new"]  # a nomination only for the new


def test_a_champion_without_contributions_in_the_window_is_demoted() -> None:
    b = next_boundary(T0)
    _, ts, _ = domain.review(b, {"c": Member("c", CHAMPION, 80.0)}, [], RULES)
    assert [(t.from_stage, t.to_stage, t.score) for t in ts] == [(CHAMPION, ADVOCATE, 0.0)]


def test_demotion_happens_only_at_a_review() -> None:
    """Between reviews a champion stays one, whatever others contribute."""
    b = next_boundary(T0)
    snapshot = Snapshot({"c": Member("c", CHAMPION, 80.0)}, frozenset(), {})
    surge = [peer_help("rival", f"m-{i}", accepted=True, day=i * 0.1) for i in range(10)]
    steps = [Step(tuple(contributions(e))) for e in surge]
    result = domain.run_batch(snapshot, steps, RULES)
    assert all(t.member_id == "rival" for t in result.transitions)
    assert "c" not in result.members
    # and at the review both are judged by the window
    result = domain.run_batch(snapshot, [*steps, Step((), (b,))], RULES)
    moves = {(t.member_id, t.to_stage) for t in result.transitions}
    assert moves == {("rival", ADVOCATE), ("rival", CHAMPION), ("c", ADVOCATE)}


def test_only_advocates_become_champions_even_within_one_batch() -> None:
    """A member who becomes an advocate after the review's event is not in that review."""
    b = next_boundary(T0)
    early = [peer_help("m-1", "x", accepted=True, thread_id=f"q{i}", day=-5) for i in range(2)]
    late = peer_help("m-1", "x", accepted=True, thread_id="q9", day=-4)
    steps = [Step(tuple(contributions(e))) for e in early]
    before = [*steps, Step((), (b,)), Step(tuple(contributions(late)))]
    after = [*steps, Step(tuple(contributions(late))), Step((), (b,))]
    empty = Snapshot({}, frozenset(), {})
    assert [t.to_stage for t in domain.run_batch(empty, before, RULES).transitions] == [ADVOCATE]
    assert [t.to_stage for t in domain.run_batch(empty, after, RULES).transitions] == [
        ADVOCATE,
        CHAMPION,
    ]


# --------------------------------------------------------------------------------------------
# rules from the rules file
# --------------------------------------------------------------------------------------------


def rules_file(tmp_path: Path, text: str) -> Settings:
    path = tmp_path / "rules.toml"
    path.write_text(text)
    return Settings(rules_file=path)


def test_defaults_without_a_rules_file() -> None:
    assert load_rules(Rules, "advocacy", Settings(rules_file=None)) == Rules()


def test_rules_file_overrides_the_defaults(tmp_path: Path) -> None:
    settings = rules_file(
        tmp_path,
        """
        [advocacy]
        advocate_threshold = 20
        champion_top_n = 5
        team_member_ids = ["staff-1"]
        [advocacy.weights]
        event_talk = 12
        """,
    )
    rules = load_rules(Rules, "advocacy", settings)
    assert rules.advocate_threshold == 20.0 and rules.champion_top_n == 5
    assert rules.team_member_ids == frozenset({"staff-1"})
    assert rules.weights == Weights(event_talk=12.0)


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("champion_top_n = -1", "champion_top_n: Input should be greater than or equal to 0"),
        ("advocate_threshold = 'lots'", "advocate_threshold: Input should be a valid number"),
        ("advocate_treshold = 3", "advocate_treshold: Unexpected keyword argument"),
        ("[advocacy.weights]\nreferral = 3", "weights.referral: Unexpected keyword argument"),
        ("[advocacy.weights]\npeer_help = -2", "weights.peer_help: Input should be greater"),
        ("champion_period_days = 0", "champion_period_days: Input should be greater"),
    ],
)
def test_a_bad_value_stops_start_up_with_a_clear_error(
    tmp_path: Path, toml: str, message: str
) -> None:
    settings = rules_file(tmp_path, "[advocacy]\n" + toml + "\n")
    with pytest.raises(RulesError) as error:
        build_handler(settings)
    text = str(error.value)
    assert f"{settings.rules_file} [advocacy]" in text
    assert message in text


# --------------------------------------------------------------------------------------------
# the whole handler on an in-memory store, and its properties
# --------------------------------------------------------------------------------------------


@dataclass
class MemoryStore:
    """The PostgreSQL store's semantics on dicts (its snapshot is a superset: all members)."""

    members: dict[str, Member] = field(default_factory=dict)
    log: dict[str, Contribution] = field(default_factory=dict)
    pending: dict[str, Contribution] = field(default_factory=dict)
    last_boundary_passed: datetime | None = None
    clock: datetime | None = None  # one partition: the newest event time less the lateness
    referral_rows: dict[str, domain.Referral] = field(default_factory=dict)
    feedback: dict[str, domain.Feedback] = field(default_factory=dict)

    async def last_boundary(self) -> datetime | None:
        return self.last_boundary_passed

    async def earliest_contribution(self, until: datetime) -> datetime | None:
        return min(
            (
                c.occurred_at
                for c in [*self.log.values(), *self.pending.values()]
                if c.occurred_at <= until
            ),
            default=None,
        )

    async def add_pending(self, contributions: Sequence[Contribution]) -> None:
        for c in contributions:
            if c.key in self.log:
                continue
            held = self.pending.get(c.key)
            if held is None or (c.occurred_at, c.cause_id) < (held.occurred_at, held.cause_id):
                self.pending[c.key] = c

    async def pending_until(self, until: datetime) -> list[Contribution]:
        return sorted(
            (c for c in self.pending.values() if c.occurred_at <= until),
            key=lambda c: (c.occurred_at, c.key),
        )

    async def pending_keys(self, keys: Collection[str]) -> frozenset[str]:
        return frozenset(k for k in keys if k in self.pending)

    async def snapshot(
        self,
        member_ids: Collection[str],
        keys: Collection[str],
        content_ids: Collection[str],
        window: tuple[datetime, datetime] | None,
    ) -> Snapshot:
        engaged: dict[str, int] = {}
        for c in self.log.values():
            if c.content_id is not None and c.content_id in content_ids:
                engaged[c.content_id] = engaged.get(c.content_id, 0) + 1
        in_window = tuple(
            c for c in self.log.values() if window and window[0] < c.occurred_at <= window[1]
        )
        return Snapshot(
            dict(self.members), frozenset(k for k in keys if k in self.log), engaged, in_window
        )

    async def save(
        self, result: BatchResult, last_boundary: datetime | None, settled: Collection[str] = ()
    ) -> None:
        for key in settled:
            self.pending.pop(key, None)
        for c in result.credited:
            self.log.setdefault(c.key, c)
        self.members.update(result.members)
        if last_boundary is not None:
            self.last_boundary_passed = last_boundary

    async def add_pending_feedback(self, feedback: Sequence[domain.Feedback]) -> None:
        for f in feedback:
            self.feedback.setdefault(f.event_id, f)

    async def feedback_until(self, until: datetime) -> list[domain.Feedback]:
        return sorted(
            (f for f in self.feedback.values() if f.occurred_at <= until),
            key=lambda f: (f.occurred_at, f.event_id),
        )

    async def drop_feedback(self, event_ids: Collection[str]) -> None:
        for event_id in event_ids:
            self.feedback.pop(event_id, None)

    async def referrals(self, joined: Collection[str]) -> dict[str, domain.Referral]:
        return {j: self.referral_rows[j] for j in joined if j in self.referral_rows}

    async def put_referrals(self, referrals: Iterable[domain.Referral]) -> None:
        self.referral_rows.update({r.joined: r for r in referrals})

    def read(self, events: Sequence[Envelope], lateness: timedelta) -> ClockReading:
        """The clock one partition gives: its newest event time less the lateness."""
        before = self.clock
        newest = max((e.time for e in events), default=None)
        if newest is not None and (self.clock is None or newest - lateness > self.clock):
            self.clock = newest - lateness
        return ClockReading(before, self.clock)


LATENESS = timedelta(days=1)
PROPERTY_RULES = Rules(
    advocate_threshold=6,
    champion_top_n=2,
    champion_window_days=20,
    champion_period_days=7,
    content_engagement_cap=2,
    team_member_ids=frozenset({"staff"}),
)


def replay(
    events: Sequence[Envelope],
    cuts: Collection[int],
    rules: Rules = PROPERTY_RULES,
    store: MemoryStore | None = None,
) -> tuple[list[OutgoingRecord], MemoryStore]:
    store = store if store is not None else MemoryStore()
    out: list[OutgoingRecord] = []
    bounds = [0, *sorted(c for c in set(cuts) if 0 < c < len(events)), len(events)]

    async def go() -> None:
        for lo, hi in itertools.pairwise(bounds):
            batch = events[lo:hi]
            reading = store.read(batch, LATENESS)
            out.extend(records(await apply_batch(store, batch, rules, reading)))

    asyncio.run(go())
    return out, store


MEMBERS = st.sampled_from(["m0", "m1", "m2", "m3", "m4", "staff"])
DAYS = st.floats(min_value=0, max_value=80, allow_nan=False)


@st.composite
def community_event(draw: Any) -> Contract:
    day = draw(DAYS)
    kind = draw(
        st.sampled_from(
            ["help", "accepted", "publish", "talk", "engage", "ref", "engaged", "feedback", "tick"]
        )
    )
    a, b = draw(MEMBERS), draw(MEMBERS)
    thread = f"q{draw(st.integers(0, 6))}"
    if kind in ("help", "accepted"):
        return peer_help(a, b, accepted=kind == "accepted", day=day, thread_id=thread)
    if kind == "publish":
        return act(a, "content_published", day=day, url=f"https://blog.example/{thread}")
    if kind == "talk":
        return act(a, "event_talk", day=day)
    if kind == "engage":
        return act(a, "reaction", day=day, parent_author=b, parent_id=thread)
    if kind == "ref":
        return acquired(f"new-{draw(st.integers(0, 5))}", a, day=day)
    if kind == "engaged":
        return engaged(f"new-{draw(st.integers(0, 5))}", day=day)
    if kind == "feedback":
        return feedback(a, day=day)
    return tick(day=day)


LOGS = st.lists(community_event(), max_size=40).map(
    lambda events: [envelope(e, f"ev-{i}") for i, e in enumerate(events)]
)
ON_TIME_LOGS = st.lists(community_event(), max_size=40).map(
    lambda events: [
        envelope(e, f"ev-{i}")
        for i, e in enumerate(sorted(events, key=lambda e: e.occurred_at))  # type: ignore[attr-defined]
    ]
)
"""Logs whose events arrive in event-time order (within the lateness, as a partition read in
order does): the ones the guarantee is about. Late events are credited on arrival."""
CUTS = st.sets(st.integers(min_value=1, max_value=39), max_size=8)
LEGAL = {(None, ADVOCATE), (ADVOCATE, CHAMPION), (CHAMPION, ADVOCATE)}


def transitions(out: Sequence[OutgoingRecord]) -> list[Any]:
    return [json.loads(r.value) for r in out if r.topic == "journey-transitions"]


def test_a_contribution_ahead_of_the_clock_does_not_place_the_first_boundary() -> None:
    """Found by the batching property: feedback settles a clock move while the only
    contribution is a day ahead of the clock. Whether that contribution had arrived yet depends
    on the batching, so it must not decide whether a review boundary is stored."""
    log = [
        envelope(feedback("m0", day=0), "ev-0"),
        envelope(peer_help("m0", "m0", day=1), "ev-1"),  # self-help: no contribution
        envelope(peer_help("m0", "m1", day=1), "ev-2"),  # a contribution, ahead of the clock
    ]
    whole, whole_store = replay(log, set())
    split, split_store = replay(log, {1, 2})
    assert whole_store.pending and whole_store.last_boundary_passed is None
    assert split_store == whole_store
    assert [r.event_id for r in split] == [r.event_id for r in whole]


def test_the_earliest_contribution_is_read_only_until_the_first_boundary_is_stored() -> None:
    """It places the first review boundary and nothing else; in PostgreSQL it is a scan of every
    contribution, so a clock move after that does not read it."""

    @dataclass
    class Counting(MemoryStore):
        earliest_reads: list[datetime | None] = field(default_factory=list)

        async def earliest_contribution(self, until: datetime) -> datetime | None:
            self.earliest_reads.append(self.last_boundary_passed)
            return await super().earliest_contribution(until)

    events = [
        envelope(e, f"ev-{i}")
        for i, e in enumerate(
            [act("m0", "event_talk", day=1), *(tick(day=d) for d in (3, 12, 20, 30, 40))]
        )
    ]
    store = Counting()
    out, _ = replay(events, set(range(1, len(events))), store=store)
    assert store.last_boundary_passed is not None  # reviews ran
    assert store.earliest_reads and all(b is None for b in store.earliest_reads)
    assert len(store.earliest_reads) < len(events)  # not at every clock move
    whole, _ = replay(events, set())  # the same result as read in one batch, per topic
    for topic in ("journey-transitions", "signals.advocacy"):
        assert [r.event_id for r in out if r.topic == topic] == [
            r.event_id for r in whole if r.topic == topic
        ]
    assert len(out) == len(whole)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=ON_TIME_LOGS, cuts=CUTS)
def test_same_result_however_the_log_is_cut_into_batches(
    events: list[Envelope], cuts: set[int]
) -> None:
    whole, whole_store = replay(events, set())
    split, split_store = replay(events, cuts)
    for topic in ("journey-transitions", "signals.advocacy", "signals.product"):
        assert [(r.event_id, r.key, r.value) for r in split if r.topic == topic] == [
            (r.event_id, r.key, r.value) for r in whole if r.topic == topic
        ]
    assert len(split) == len(whole)
    assert split_store == whole_store


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=LOGS, cuts=CUTS)
def test_every_members_stages_follow_a_legal_path(events: list[Envelope], cuts: set[int]) -> None:
    out, store = replay(events, cuts)
    stage: dict[str, str | None] = {}
    for t in transitions(out):
        member = t["member_id"]
        assert t["from_stage"] == stage.get(member), "a transition from a stage not held"
        assert (t["from_stage"], t["to_stage"]) in LEGAL
        stage[member] = t["to_stage"]
    assert {m: x.stage for m, x in store.members.items() if x.stage} == {
        m: s for m, s in stage.items() if s
    }
    assert "staff" not in store.members  # configured staff are never credited
    for m in store.members.values():  # the lifetime score is the log's sum
        assert m.score == sum(c.weight for c in store.log.values() if c.member_id == m.member_id)
        assert (m.stage is not None) == domain.qualifies(m, PROPERTY_RULES)
        if m.stage is not None:  # referral credit alone never makes an advocate
            assert domain.gives_back(m.counts)


def test_a_champions_feedback_is_flagged_by_the_reviews_before_it_and_no_later_one() -> None:
    """m-1 becomes champion at the boundary b: feedback just before it is not flagged (even
    though it is settled in the same batch as the review), feedback after it is."""
    b = next_boundary(T0, PROPERTY_RULES)
    before, after = feedback("m-1", day=day_of(b) - 0.5), feedback("m-1", day=day_of(b) + 0.5)
    log = [
        envelope(peer_help("m-1", "m-2", accepted=True, day=0)),
        envelope(act("m-1", "content_published", day=1)),
        envelope(before),
        envelope(after),
        envelope(feedback("m-2", day=day_of(b) + 0.5)),  # not an advocate: never flagged
        envelope(ClockTickV1(occurred_at=b + timedelta(days=1) + LATENESS)),
    ]
    for cuts in ({1, 2}, {5}, set()):
        out, store = replay(log, cuts)
        flags = [json.loads(r.value) for r in out if r.topic == "signals.product"]
        assert [(f["member_id"], f["activity_id"]) for f in flags] == [("m-1", after.activity_id)]
        assert flags[0]["feedback_event_id"] == event_id_of(after)
        assert store.feedback == {}  # settled feedback does not wait any more


def day_of(t: datetime) -> float:
    return (t - T0) / timedelta(days=1)


def test_in_memory_handler_promotes_and_reviews_across_batches() -> None:
    """A worked example through apply_batch: advocate now, champion at the next boundary."""
    b = next_boundary(T0, PROPERTY_RULES)
    log = [
        envelope(peer_help("m-1", "m-2", accepted=True, day=0)),
        envelope(act("m-1", "content_published", day=1)),
        envelope(ClockTickV1(occurred_at=b + LATENESS)),
    ]
    out, store = replay(log, {1, 2})
    moves = [(t["member_id"], t["from_stage"], t["to_stage"]) for t in transitions(out)]
    assert moves == [("m-1", None, ADVOCATE), ("m-1", ADVOCATE, CHAMPION)]
    assert store.last_boundary_passed == b
    assert [r.topic for r in out].count("signals.advocacy") == 2


def replay_partitions(
    partitions: Sequence[Sequence[Envelope]], order: Sequence[int], cuts: Collection[int]
) -> tuple[list[OutgoingRecord], MemoryStore]:
    """Read several partitions (each in its own order) interleaved as `order` says, cut into
    batches at `cuts`; the clock is the slowest partition's newest time less the lateness,
    as the runtime computes it (shared.eventtime)."""
    from shared.eventtime.clock import ClockTopic, PartitionProgress, advance, service_clock

    topic = ClockTopic("member-activity")
    positions = [0] * len(partitions)
    stream: list[tuple[int, Envelope]] = []
    for p in order:
        stream.append((p, partitions[p][positions[p]]))
        positions[p] += 1
    store = MemoryStore()
    out: list[OutgoingRecord] = []
    newest: dict[tuple[str, int], PartitionProgress] = {}
    bounds = [0, *sorted(c for c in set(cuts) if 0 < c < len(stream)), len(stream)]

    async def go() -> None:
        for lo, hi in itertools.pairwise(bounds):
            batch = stream[lo:hi]
            for p, e in batch:
                held = newest.get(("member-activity", p))
                if held is None or held.event_time is None or e.time > held.event_time:
                    newest[("member-activity", p)] = PartitionProgress("member-activity", p, e.time)
            computed = service_clock(
                [topic],
                {"member-activity": len(partitions)},
                newest,
                lateness=LATENESS,
                now=T0,
                idle_after=timedelta(days=1),
            )
            before = store.clock
            store.clock = advance(store.clock, computed)
            reading = ClockReading(before, store.clock)
            events = [e for _, e in batch]
            out.extend(records(await apply_batch(store, events, PROPERTY_RULES, reading)))

    asyncio.run(go())
    return out, store


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=ON_TIME_LOGS, data=st.data())
def test_same_result_however_partitions_interleave(events: list[Envelope], data: Any) -> None:
    """Events keyed to three partitions (each read in order), read in any interleaving and any
    batching: the same transitions and signals, ids included, and the same state, as reading
    them one partition after the other in one batch."""
    partitions: list[list[Envelope]] = [[], [], []]
    for e in events:
        partitions[zlib.crc32(e.key.encode()) % 3].append(e)
    if not all(partitions):
        partitions = [p for p in partitions if p] or [[]]
    sequential = [p for p, part in enumerate(partitions) for _ in part]
    order = data.draw(st.permutations(sequential))
    cuts = data.draw(st.sets(st.integers(min_value=1, max_value=max(1, len(events))), max_size=8))
    reference, reference_store = replay_partitions(partitions, sequential, set())
    got, got_store = replay_partitions(partitions, order, cuts)
    for topic in ("journey-transitions", "signals.advocacy"):
        assert sorted(r.event_id for r in got if r.topic == topic) == sorted(
            r.event_id for r in reference if r.topic == topic
        )
    assert {r.event_id: r.value for r in got} == {r.event_id: r.value for r in reference}
    assert got_store.members == reference_store.members
    assert got_store.log == reference_store.log
