"""Engagement rules: score and decay, promotion, inactivity deadlines, reactivation, signals,
cohorts, rules loading; and the properties that make replays exact."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from itertools import pairwise
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.engagement import domain
from services.engagement.domain import (
    AT_RISK,
    DORMANT,
    ENGAGED,
    LEGAL_MOVES,
    REACTIVATED,
    Participant,
    Rules,
    advance,
    observe,
)
from shared.contracts import CHURN_RISK, PEER_HELP, ActivityV1, ChurnRiskV1, PeerHelpV1, Target
from shared.journey import Transition
from shared.rules import RulesError, load_rules
from shared.settings import Settings
from tests.factories import T0, activity

RULES = Rules()
DAY = timedelta(days=1)


def day(n: float) -> datetime:
    return T0 + timedelta(days=n)


def fold(
    activities: Sequence[ActivityV1], rules: Rules = RULES
) -> tuple[Participant | None, list[Transition]]:
    """One member's activities through observe, in order."""
    member: Participant | None = None
    transitions: list[Transition] = []
    for a in activities:
        member, ts = observe(member, a, rules)
        transitions.extend(ts)
    return member, transitions


def moves(ts: Sequence[Transition]) -> list[tuple[str | None, str, datetime]]:
    return [(t.from_stage, t.to_stage, t.occurred_at) for t in ts]


def engaged_at_day_0(member_id: str = "m-1") -> Participant:
    member, ts = fold([activity(member_id, "event_talk", day=0)])
    assert member is not None and moves(ts) == [(None, ENGAGED, day(0))]
    return member


# --------------------------------------------------------------------------------------------
# score and decay
# --------------------------------------------------------------------------------------------


def test_score_halves_every_half_life_and_adds_after_decaying() -> None:
    member, _ = fold([activity("m-1", "reply", day=0)])
    assert member is not None and member.score == 4.0 and member.score_at == day(0)
    assert domain.decayed_score(member, day(30), RULES) == 2.0
    assert domain.decayed_score(member, day(60), RULES) == 1.0
    member, _ = observe(member, activity("m-1", "post", day=30), RULES)
    assert member is not None
    assert (member.score, member.score_at) == (2.0 + 3.0, day(30))


def test_out_of_order_activity_adds_its_weight_decayed_to_score_at() -> None:
    late_first, _ = fold([activity("m-1", "post", day=30), activity("m-1", "reply", day=0)])
    in_order, _ = fold([activity("m-1", "reply", day=0), activity("m-1", "post", day=30)])
    assert late_first is not None and in_order is not None
    assert late_first.score == in_order.score == 5.0
    assert late_first.score_at == in_order.score_at == day(30)
    assert late_first.first_seen_at == day(0) and late_first.last_active_at == day(30)


def test_decay_formula_on_an_irregular_interval() -> None:
    member, _ = fold([activity("m-1", "reply", day=0), activity("m-1", "reply", day=10)])
    assert member is not None
    assert member.score == pytest.approx(4 * 2 ** (-10 / 30) + 4)  # 7.1748...
    assert member.score == pytest.approx(7.174802103936399)


def test_weights_source_overrides_unknown_kinds_and_zero_weights() -> None:
    rules = Rules(source_weights={"github:star": 0.2}, default_weight=2.5)
    assert domain.weight_of(activity("m", "star", source="github"), rules) == 0.2
    assert domain.weight_of(activity("m", "star", source="web"), rules) == 0.5
    assert domain.weight_of(activity("m", "meetup_hosted"), rules) == 2.5
    assert domain.weight_of(activity("m", "meetup_hosted"), RULES) == 1.0
    # purchases are not community participation: no state, no stage
    assert observe(None, activity("m", "purchase"), RULES) == (None, [])


def test_a_rules_file_merges_weights_onto_the_defaults(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(
        "[engagement]\nengaged_threshold = 10\nteam_member_ids = ['staff-1']\n"
        "[engagement.weights]\npost = 5\n[engagement.source_weights]\n'github:star' = 0.25\n"
    )
    rules = load_rules(Rules, "engagement", Settings(rules_file=path))
    assert rules.weights["post"] == 5.0 and rules.weights["reply"] == 4.0
    assert rules.source_weights == {"github:star": 0.25}
    assert rules.engaged_threshold == 10.0 and rules.team_member_ids == ("staff-1",)
    assert load_rules(Rules, "engagement", Settings(rules_file=None)) == RULES


@pytest.mark.parametrize(
    ("toml", "names"),
    [
        ("half_life_days = 0", "half_life_days: Input should be greater than 0"),
        ("engaged_treshold = 5", "engaged_treshold: Unexpected keyword argument"),
        ("core_top_fraction = 1.5", "core_top_fraction: Input should be less than or equal to 1"),
        ("dormant_after_days = 10", "dormant_after_days (10.0) must be greater than"),
        ("[engagement.weights]\npost = -1", "weight of 'post' must be >= 0"),
        ("[engagement.source_weights]\nstar = 1", "'star' must be 'source:kind'"),
        ("at_risk_after_days = 'two weeks'", "at_risk_after_days: Input should be a valid number"),
    ],
)
def test_a_bad_rules_file_stops_start_up_naming_file_section_and_key(
    tmp_path: Path, toml: str, names: str
) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(f"[engagement]\n{toml}\n")
    with pytest.raises(RulesError) as raised:
        load_rules(Rules, "engagement", Settings(rules_file=path))
    message = str(raised.value)
    assert f"{path} [engagement]" in message and names in message


# --------------------------------------------------------------------------------------------
# promotion
# --------------------------------------------------------------------------------------------


def test_promotion_when_the_decayed_score_reaches_the_threshold() -> None:
    member, ts = fold(
        [
            activity("m-1", "post", day=0),  # 3
            activity("m-1", "reply", day=0),  # 7
        ]
    )
    assert ts == [] and member is not None and member.stage is None
    member, ts = observe(member, activity("m-1", "reaction", day=0, activity_id="r-1"), RULES)
    assert member is not None and member.score == 7.5 and ts == []
    member, ts = observe(member, activity("m-1", "reaction", day=0, activity_id="r-2"), RULES)
    assert member is not None and member.stage == ENGAGED and member.stage_since == day(0)
    assert moves(ts) == [(None, ENGAGED, day(0))]
    assert ts[0].caused_by == ("r-2",) and ts[0].score == 8.0
    assert "8.00 reached 8" in ts[0].reason
    _, again = observe(member, activity("m-1", "reply", day=1), RULES)
    assert again == []  # promoted once


def test_decay_can_keep_a_member_below_the_threshold() -> None:
    # two replies 30 days apart: 4 * 0.5 + 4 = 6, never 8
    member, ts = fold([activity("m-1", "reply", day=0), activity("m-1", "reply", day=30)])
    assert member is not None and member.score == 6.0 and ts == []


def test_an_out_of_order_activity_promotes_as_of_the_newest_activity() -> None:
    member, ts = fold([activity("m-1", "reply", day=10), activity("m-1", "answer_accepted", day=9)])
    assert member is not None and member.stage == ENGAGED
    assert moves(ts) == [(None, ENGAGED, day(10))]


def test_a_single_talk_engages_at_once() -> None:
    engaged_at_day_0()


@pytest.mark.parametrize(
    ("bot", "team", "anonymous"), [(True, False, False), (False, True, False), (False, False, True)]
)
def test_bots_team_and_visitors_never_count(bot: bool, team: bool, anonymous: bool) -> None:
    talk = activity("x", "event_talk", bot=bot, team=team, anonymous=anonymous)
    assert observe(None, talk, RULES) == (None, [])


def test_team_and_bot_id_lists_never_count() -> None:
    rules = Rules(team_member_ids=("staff-1",), bot_member_ids=("ci-bot",))
    assert observe(None, activity("staff-1", "event_talk"), rules) == (None, [])
    assert observe(None, activity("ci-bot", "event_talk"), rules) == (None, [])


def test_times_are_kept_in_utc() -> None:
    plus_two = timezone(timedelta(hours=2))
    member, ts = fold([activity("m-1", "event_talk", at=datetime(2026, 1, 5, 11, tzinfo=plus_two))])
    assert member is not None and member.last_active_at == T0
    assert member.last_active_at.tzinfo is UTC and ts[0].occurred_at.tzinfo is UTC


# --------------------------------------------------------------------------------------------
# inactivity: at_risk, dormant, reactivation
# --------------------------------------------------------------------------------------------


def test_deadlines_include_the_review_window() -> None:
    member = engaged_at_day_0()
    assert domain.next_deadline(member, RULES) == day(14 + 7)
    at_risk = replace(member, stage=AT_RISK)
    assert domain.next_deadline(at_risk, RULES) == day(45 + 7)
    for stage in (None, DORMANT):
        assert domain.next_deadline(replace(member, stage=stage), RULES) is None
    assert domain.next_deadline(member, Rules(review_window_days=0)) == day(14)


def test_at_risk_fires_at_the_exact_deadline_not_at_the_sweep_time() -> None:
    member = engaged_at_day_0()
    same, ts = advance(member, day(21) - timedelta(microseconds=1), RULES)
    assert same is member and ts == []
    member, ts = advance(member, day(30), RULES)
    assert moves(ts) == [(ENGAGED, AT_RISK, day(21))]
    assert member.stage == AT_RISK and member.stage_since == day(21)
    assert ts[0].caused_by == () and ts[0].score == pytest.approx(8 * 2 ** (-21 / 30))
    assert "21 days = 14 quiet + 7 review" in ts[0].reason
    member, ts = advance(member, day(52), RULES)
    assert moves(ts) == [(AT_RISK, DORMANT, day(52))]
    assert ts[0].score == pytest.approx(8 * 2 ** (-52 / 30))
    assert domain.next_deadline(member, RULES) is None


def test_one_late_sweep_emits_every_demotion_due_each_at_its_deadline() -> None:
    _, ts = advance(engaged_at_day_0(), day(400), RULES)
    assert moves(ts) == [(ENGAGED, AT_RISK, day(21)), (AT_RISK, DORMANT, day(52))]


def test_activity_within_the_window_keeps_a_member_engaged() -> None:
    member, ts = observe(engaged_at_day_0(), activity("m-1", "reaction", day=20), RULES)
    assert ts == [] and member is not None and member.stage == ENGAGED
    assert domain.next_deadline(member, RULES) == day(41)


def test_any_counted_activity_reactivates_an_at_risk_member() -> None:
    member, _ = advance(engaged_at_day_0(), day(25), RULES)
    member2, ts = observe(member, activity("m-1", "page_view", day=30, activity_id="pv"), RULES)
    assert moves(ts) == [(AT_RISK, REACTIVATED, day(30))] and ts[0].caused_by == ("pv",)
    assert "after 30 days without counted activity" in ts[0].reason
    assert member2 is not None and domain.next_deadline(member2, RULES) == day(51)
    # and a reactivated member can drift again
    _, ts = advance(member2, day(51), RULES)
    assert moves(ts) == [(REACTIVATED, AT_RISK, day(51))]


def test_a_dormant_member_is_reactivated_too() -> None:
    member, _ = advance(engaged_at_day_0(), day(60), RULES)
    assert member.stage == DORMANT
    member2, ts = observe(member, activity("m-1", "reply", day=90), RULES)
    assert moves(ts) == [(DORMANT, REACTIVATED, day(90))]
    assert member2 is not None and member2.stage == REACTIVATED


def test_the_next_activity_finds_the_same_demotions_as_a_sweep() -> None:
    later = activity("m-1", "reply", day=60)
    _, by_activity = observe(engaged_at_day_0(), later, RULES)
    swept, by_sweep = advance(engaged_at_day_0(), day(59), RULES)
    _, rest = observe(swept, later, RULES)
    assert by_activity == by_sweep + rest
    assert moves(by_activity) == [
        (ENGAGED, AT_RISK, day(21)),
        (AT_RISK, DORMANT, day(52)),
        (DORMANT, REACTIVATED, day(60)),
    ]


def test_uncounted_activity_does_not_reactivate() -> None:
    member, _ = advance(engaged_at_day_0(), day(25), RULES)
    member2, ts = observe(member, activity("m-1", "purchase", day=30), RULES)
    assert ts == [] and member2 == member


def test_an_activity_older_than_the_demotion_it_missed_reactivates_at_the_demotion() -> None:
    member, _ = advance(engaged_at_day_0(), day(25), RULES)  # at_risk at day 21
    member2, ts = observe(member, activity("m-1", "reply", day=20), RULES)
    assert moves(ts) == [(AT_RISK, REACTIVATED, day(21))]  # never back in time
    assert member2 is not None and member2.last_active_at == day(21)
    assert domain.next_deadline(member2, RULES) == day(42)


def test_a_member_never_engaged_has_no_stage_and_no_deadline() -> None:
    member, ts = fold([activity("m-1", "reaction", day=0)])
    assert member is not None and member.stage is None and ts == []
    assert domain.next_deadline(member, RULES) is None
    assert advance(member, day(1000), RULES) == (member, [])


# --------------------------------------------------------------------------------------------
# signals
# --------------------------------------------------------------------------------------------


def reply(
    helper: str,
    asker: str | None,
    kind: str = "reply",
    activity_id: str = "act-1",
    *,
    bot: bool = False,
    team: bool = False,
    anonymous: bool = False,
) -> ActivityV1:
    a = activity(
        helper,
        kind,
        thread_author=asker,
        thread_id="q-1",
        activity_id=activity_id,
        bot=bot,
        team=team,
        anonymous=anonymous,
    )
    target = Target(
        thread_id="q-1",
        thread_author_member_id=asker,
        url="https://x.test/q/1",
        thread_is_question=True,
    )
    return a.model_copy(update={"target": target})


def test_a_reply_in_someone_elses_thread_is_peer_help() -> None:
    signal = domain.peer_help(reply("m-1", "m-2"), RULES)
    assert signal is not None and signal.event_type is PEER_HELP
    assert signal.data == PeerHelpV1(
        helper_member_id="m-1",
        helped_member_id="m-2",
        thread_id="q-1",
        url="https://x.test/q/1",
        accepted=False,
        occurred_at=T0,
        activity_id="act-1",
    )
    again = domain.peer_help(reply("m-1", "m-2"), RULES)
    assert again is not None and again.event_id == signal.event_id  # same cause, same id


def test_an_accepted_answer_is_accepted_peer_help() -> None:
    accepted = reply("m-1", "m-2", kind="answer_accepted", activity_id="act-2")
    signal = domain.peer_help(accepted, RULES)
    assert signal is not None and isinstance(signal.data, PeerHelpV1) and signal.data.accepted
    plain = domain.peer_help(reply("m-1", "m-2"), RULES)
    assert plain is not None and plain.event_id != signal.event_id


@pytest.mark.parametrize(
    ("a", "rules"),
    [
        (reply("m-1", "m-1"), RULES),  # answering yourself
        (reply("m-1", "m-1", kind="answer_accepted"), RULES),
        (reply("m-1", None), RULES),  # no known asker
        (reply("bot-1", "m-2", bot=True), RULES),
        (reply("staff", "m-2", team=True), RULES),
        (reply("anon-1", "m-2", anonymous=True), RULES),
        (reply("m-1", "ci-bot"), Rules(bot_member_ids=("ci-bot",))),  # helping a bot
        (reply("m-1", "staff-1"), Rules(team_member_ids=("staff-1",))),
        (reply("m-1", "m-2", kind="post"), RULES),
    ],
)
def test_no_peer_help_for_self_bots_staff_or_visitors(a: ActivityV1, rules: Rules) -> None:
    assert domain.peer_help(a, rules) is None


def test_entering_at_risk_raises_a_churn_risk_signal() -> None:
    _, ts = advance(engaged_at_day_0(), day(60), RULES)
    signals = [s for t in ts if (s := domain.churn_risk(t, RULES)) is not None]
    assert len(signals) == 1 and signals[0].event_type is CHURN_RISK
    assert signals[0].data == ChurnRiskV1(
        member_id="m-1",
        stage=AT_RISK,
        last_active_at=day(0),
        score=8 * 2 ** (-21 / 30),
        occurred_at=day(21),
    )


def test_fold_batch_sweeps_members_due_and_collects_signals() -> None:
    quiet = engaged_at_day_0("m-quiet")
    busy = engaged_at_day_0("m-busy")
    outcome = domain.fold_batch(
        {"m-quiet": quiet, "m-busy": busy},
        [activity("m-busy", "reply", day=22, thread_author="m-new", thread_id="q")],
        day(22) - timedelta(hours=1),
        RULES,
    )
    assert sorted(outcome.changed) == ["m-busy", "m-quiet"]
    assert {
        (t.member_id, t.from_stage, t.to_stage, t.occurred_at) for t in outcome.transitions
    } == {
        ("m-busy", ENGAGED, AT_RISK, day(21)),
        ("m-busy", AT_RISK, REACTIVATED, day(22)),
        ("m-quiet", ENGAGED, AT_RISK, day(21)),
    }
    kinds = sorted(s.event_type.type for s in outcome.signals)
    assert kinds == [CHURN_RISK.type, CHURN_RISK.type, PEER_HELP.type]
    untouched = domain.fold_batch({"m-quiet": quiet}, [], day(1), RULES)
    assert untouched.changed == {} and untouched.transitions == []


# --------------------------------------------------------------------------------------------
# cohorts
# --------------------------------------------------------------------------------------------


def member(
    member_id: str, stage: str | None, score: float, first_seen_day: float = -100
) -> Participant:
    return Participant(
        member_id, stage, score, day(0), day(first_seen_day), day(0), day(0), activities=1
    )


def test_cohorts() -> None:
    members = [member(f"r-{i:02}", ENGAGED, float(i)) for i in range(1, 19)]  # 18 engaged
    members += [
        member("top", REACTIVATED, 100.0),
        member("new", ENGAGED, 500.0, first_seen_day=-29),  # a newcomer first
        member("new-quiet", None, 0.1, first_seen_day=-1),
        member("risky", AT_RISK, 50.0),
        member("gone", DORMANT, 1.0),
        member("lurker", None, 1.0),
        member("future", ENGAGED, 1.0, first_seen_day=5),
    ]
    # pool: 18 + top + new + future (engaged/reactivated) = 21 -> ceil(2.1) = 3 core
    core = domain.core_members(members, day(0), RULES)
    assert core == {"new", "top", "r-18"}
    assert domain.cohorts(members, day(0), RULES) == {
        "newcomer": ["new", "new-quiet"],
        "core": ["top", "r-18"],
        "at_risk": ["risky"],
        "regular": [f"r-{i:02}" for i in range(17, 0, -1)],
    }
    assert domain.cohort_of(members[0], day(0), RULES, core) == "regular"
    assert domain.cohort_of(member("new", ENGAGED, 1.0, -30), day(0), RULES, frozenset()) == (
        "regular"  # first seen exactly newcomer_days ago: no longer new
    )


def test_core_uses_the_decayed_score_at_the_cohort_time() -> None:
    old_star = replace(member("old", ENGAGED, 20.0), score_at=day(-60))  # 5.0 now
    recent = member("recent", ENGAGED, 6.0)
    assert domain.core_members([old_star, recent], day(0), Rules(core_top_fraction=0.5)) == {
        "recent"
    }


# --------------------------------------------------------------------------------------------
# properties
# --------------------------------------------------------------------------------------------

KINDS = ["page_view", "reaction", "post", "reply", "answer_accepted", "event_talk", "purchase"]
MEMBERS = ["m-a", "m-b", "m-c"]
LATENESS = timedelta(hours=6)


@st.composite
def activity_logs(draw: st.DrawFn, on_time: bool = True) -> list[ActivityV1]:
    """A log of a few members' activities. On time: each is at most LATENESS older than the
    newest before it (the contract of the watermark). Otherwise: any order."""
    n = draw(st.integers(1, 40))
    log: list[ActivityV1] = []
    newest = T0
    for i in range(n):
        if on_time:
            step = draw(st.integers(-int(LATENESS.total_seconds() // 3600), 40 * 24))
            at = max(T0, newest + timedelta(hours=step))
        else:
            at = T0 + timedelta(hours=draw(st.integers(0, 150 * 24)))
        newest = max(newest, at)
        who = draw(st.sampled_from(MEMBERS))
        asker = draw(st.sampled_from([None, *MEMBERS]))
        log.append(
            activity(
                who,
                draw(st.sampled_from(KINDS)),
                at=at,
                activity_id=f"a-{i}",
                bot=draw(st.booleans()) and draw(st.booleans()) and draw(st.booleans()),
                thread_author=asker,
                thread_id="q" if asker else None,
            )
        )
    return log


def run_in_batches(
    log: Sequence[ActivityV1], cuts: Sequence[int], end: datetime
) -> tuple[dict[str, Participant], list[Transition], set[str]]:
    """What the handler does: per batch, the watermark is the newest time so far minus the
    lateness, and a sweep follows the batch. A last empty batch (a clock tick) reaches `end`."""
    state: dict[str, Participant] = {}
    transitions: list[Transition] = []
    signal_ids: set[str] = set()
    bounds = [0, *sorted(set(cuts)), len(log)]
    newest: datetime | None = None
    for lo, hi in pairwise(bounds):
        chunk = log[lo:hi]
        if not chunk:
            continue
        newest = max([newest or T0, *(a.occurred_at for a in chunk)])
        out = domain.fold_batch(state, chunk, newest - LATENESS, RULES)
        state.update(out.changed)
        transitions.extend(out.transitions)
        signal_ids |= {s.event_id for s in out.signals}
    out = domain.fold_batch(state, [], end, RULES)
    state.update(out.changed)
    transitions.extend(out.transitions)
    signal_ids |= {s.event_id for s in out.signals}
    return state, transitions, signal_ids


def per_member(ts: Sequence[Transition]) -> dict[str, list[Transition]]:
    result: dict[str, list[Transition]] = defaultdict(list)
    for t in ts:
        result[t.member_id].append(t)
    return dict(result)


@settings(max_examples=300, deadline=None)
@given(
    log=activity_logs(),
    cuts=st.lists(st.integers(0, 40), max_size=10),
    tail_days=st.integers(0, 120),
)
def test_state_and_transitions_do_not_depend_on_batch_boundaries(
    log: list[ActivityV1], cuts: list[int], tail_days: int
) -> None:
    end = max(a.occurred_at for a in log) + timedelta(days=tail_days)
    whole = run_in_batches(log, [], end)
    split = run_in_batches(log, [c for c in cuts if c < len(log)], end)
    one_by_one = run_in_batches(log, list(range(len(log))), end)
    for other in (split, one_by_one):
        assert other[0] == whole[0]  # exact: same floats, same times
        assert per_member(other[1]) == per_member(whole[1])
        assert other[2] == whole[2]


@settings(max_examples=300, deadline=None)
@given(log=activity_logs(on_time=False), cuts=st.lists(st.integers(0, 40), max_size=10))
def test_every_member_follows_a_legal_path_forward_in_time(
    log: list[ActivityV1], cuts: list[int]
) -> None:
    """Even with activities later than the allowed lateness."""
    end = max(a.occurred_at for a in log) + timedelta(days=200)
    _, transitions, _ = run_in_batches(log, cuts, end)
    for ts in per_member(transitions).values():
        stage: str | None = None
        when = datetime.min.replace(tzinfo=UTC)
        for t in ts:
            assert (t.from_stage, t.to_stage) in LEGAL_MOVES
            assert t.from_stage == stage
            assert t.occurred_at >= when
            stage, when = t.to_stage, t.occurred_at


@settings(max_examples=300, deadline=None)
@given(
    score=st.floats(0, 1e6),
    first=st.integers(0, 10**9),
    gap=st.integers(0, 10**9),
)
def test_decay_never_increases_a_score_without_new_activity(
    score: float, first: int, gap: int
) -> None:
    m = Participant("m", ENGAGED, score, T0, T0, T0, T0, 1)
    earlier = T0 + timedelta(seconds=first)
    later = earlier + timedelta(seconds=gap)
    assert domain.decayed_score(m, later, RULES) <= domain.decayed_score(m, earlier, RULES)
    assert domain.decayed_score(m, earlier, RULES) <= score
    assert domain.decayed_score(m, later, RULES) >= 0
