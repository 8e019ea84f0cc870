"""Engagement, issue 15: unanswered and answered questions, the honeymoon drop-off, product
feedback, and peer help that means help. Every deadline fires at its exact time, whenever it
is found."""

from __future__ import annotations

from datetime import datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from services.engagement import domain
from services.engagement.domain import (
    Newcomer,
    Question,
    Rules,
    Signal,
    advance_newcomer,
    advance_question,
    fold_journey,
    observe_newcomer,
    observe_question,
)
from shared.contracts import (
    NEWCOMER_DROP_OFF,
    PEER_HELP,
    PRODUCT_FEEDBACK,
    QUESTION_ANSWERED,
    QUESTION_UNANSWERED,
    ActivityV1,
    NewcomerDropOffV1,
    ProductFeedbackV1,
    QuestionAnsweredV1,
    QuestionUnansweredV1,
    Target,
)
from tests.factories import T0, activity

RULES = Rules()


def hours(n: float) -> datetime:
    return T0 + timedelta(hours=n)


def days(n: float) -> datetime:
    return T0 + timedelta(days=n)


def ask(
    member: str = "asker", at: datetime = T0, thread: str = "q-1", **props: object
) -> ActivityV1:
    a = activity(
        member,
        "post",
        at=at,
        activity_id=f"ask-{thread}",
        thread_id=thread,
        thread_author=member,
        properties={"question": True, **props},
    )
    return a


def reply(
    member: str,
    at: datetime,
    thread: str = "q-1",
    asker: str = "asker",
    aid: str = "r-1",
    team: bool = False,
    in_question: bool | None = None,
    asker_team: bool | None = None,
) -> ActivityV1:
    a = activity(
        member,
        "reply",
        at=at,
        activity_id=aid,
        thread_id=thread,
        thread_author=asker,
        team=team,
        in_question=in_question if in_question is not None else False,
    )
    assert a.target is not None
    return a.model_copy(
        update={"target": a.target.model_copy(update={"thread_author_is_team_member": asker_team})}
    )


def fold_questions(
    acts: list[ActivityV1], until: datetime | None = None, rules: Rules = RULES
) -> tuple[dict[str, Question], list[Signal]]:
    """Fold the activities, then sweep to `until` (default: far enough for everything)."""
    q: dict[str, Question] = {}
    signals: list[Signal] = []
    for a in acts:
        key = domain.thread_key(a)
        assert key
        after = observe_question(q.get(key), a, rules)
        if after is not None:
            q[key] = after
    for key in list(q):
        q[key], out = advance_question(q[key], until or hours(10_000), rules)
        signals += out
    return q, signals


# --- questions --------------------------------------------------------------------------------


def test_a_question_nobody_answers_is_unanswered_at_its_exact_deadline() -> None:
    _, signals = fold_questions([ask()], until=hours(100))
    (s,) = signals
    assert s.event_type is QUESTION_UNANSWERED and isinstance(s.data, QuestionUnansweredV1)
    assert (s.data.member_id, s.data.thread_id, s.data.occurred_at) == ("asker", "q-1", hours(24))
    assert s.data.question_activity_id == "ask-q-1"


def test_an_answer_in_time_closes_it_with_time_to_first_response() -> None:
    q, signals = fold_questions([ask(), reply("helper", hours(3))], until=hours(100))
    (s,) = signals
    assert s.event_type is QUESTION_ANSWERED and isinstance(s.data, QuestionAnsweredV1)
    assert (s.data.answered_by_member_id, s.data.answer_activity_id) == ("helper", "r-1")
    assert s.data.first_response_s == 3 * 3600 and not s.data.was_unanswered
    assert domain.question_deadline(q["discourse:q-1"], RULES) is None


def test_a_late_answer_comes_after_the_unanswered_signal_and_says_so() -> None:
    _, signals = fold_questions([ask(), reply("helper", hours(30))])
    assert [s.event_type for s in signals] == [QUESTION_UNANSWERED, QUESTION_ANSWERED]
    assert isinstance(signals[1].data, QuestionAnsweredV1) and signals[1].data.was_unanswered


def test_the_asker_and_bots_do_not_answer_staff_does_unless_told() -> None:
    bot = activity("bot", "reply", at=hours(1), thread_id="q-1", thread_author="asker", bot=True)
    _, signals = fold_questions([ask(), reply("asker", hours(1)), bot], until=hours(48))
    assert [s.event_type for s in signals] == [QUESTION_UNANSWERED]
    _, by_staff = fold_questions([ask(), reply("staff", hours(1), team=True)], until=hours(48))
    assert [s.event_type for s in by_staff] == [QUESTION_ANSWERED]
    rules = Rules(team_replies_answer=False)
    _, not_staff = fold_questions(
        [ask(), reply("staff", hours(1), team=True)], until=hours(48), rules=rules
    )
    assert [s.event_type for s in not_staff] == [QUESTION_UNANSWERED]


def test_a_reply_before_its_question_is_linked_when_the_question_arrives() -> None:
    _, signals = fold_questions([reply("helper", hours(2)), ask()], until=hours(100))
    (s,) = signals
    assert isinstance(s.data, QuestionAnsweredV1) and s.data.first_response_s == 2 * 3600


def test_a_post_that_is_not_a_question_has_no_deadline() -> None:
    post = activity("m", "post", thread_id="t-9", thread_author="m")
    _, signals = fold_questions([post], until=days(30))
    assert signals == []


def test_a_question_mapping_makes_a_post_a_question() -> None:
    rules = Rules(question_mappings=("discourse:category:support",))
    post = activity(
        "m", "post", thread_id="t-9", thread_author="m", properties={"category": "Support"}
    )
    assert domain.is_question(post, rules) and not domain.is_question(post, RULES)
    star = Rules(question_mappings=("*:tag:help",))
    tagged = activity(
        "m",
        "post",
        source="github",
        thread_id="t",
        thread_author="m",
        properties={"tags": ["help"]},
    )
    assert domain.is_question(tagged, star)


def test_the_answered_event_id_is_stable() -> None:
    _, a = fold_questions([ask(), reply("helper", hours(3))])
    _, b = fold_questions([ask(), reply("helper", hours(3))])
    assert [s.event_id for s in a] == [s.event_id for s in b]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.floats(min_value=0, max_value=72, allow_nan=False), max_size=4),
    st.lists(st.floats(min_value=0, max_value=200, allow_nan=False), max_size=6),
    st.permutations(range(5)),
)
def test_questions_do_not_depend_on_arrival_order_or_sweeps(
    reply_hours: list[float], sweeps: list[float], order: list[int]
) -> None:
    """In any arrival order, with sweeps at any watermark that has not passed an event still
    to come: the same signals at the same times; unanswered exactly when the first answer
    came at or after the deadline; the answer is the first reply by event time."""
    replies = [reply(f"h{i}", hours(h), aid=f"r-{i}") for i, h in enumerate(reply_hours)]
    events = [ask(), *replies]
    log = [events[i] for i in order if i < len(events)]

    def run(sweep_at: list[float]) -> list[tuple[str, datetime, str]]:
        q: Question | None = None
        out: list[Signal] = []
        for i, a in enumerate(log):
            q = observe_question(q, a, RULES)
            pending = [e.occurred_at - timedelta(microseconds=1) for e in log[i + 1 :]]
            for h in sweep_at:
                watermark = min([hours(h), *pending])
                if q is not None:
                    q, s = advance_question(q, watermark, RULES)
                    out += s
        assert q is not None
        q, s = advance_question(q, hours(500), RULES)
        return [
            (x.event_type.type, x.data.occurred_at, x.event_id)  # type: ignore[attr-defined]
            for x in out + s
        ]

    reference = run([])
    assert run(sorted(sweeps)) == reference
    types = [t for t, _, _ in reference]
    first = min(reply_hours, default=None)
    late = first is None or first >= 24
    assert (QUESTION_UNANSWERED.type in types) == late
    assert types.count(QUESTION_ANSWERED.type) == (first is not None)
    if first is not None:
        assert (QUESTION_ANSWERED.type, hours(first)) in [(t, at) for t, at, _ in reference]


# --- peer help means help ---------------------------------------------------------------------


def test_peer_help_only_in_a_question_and_never_to_staff() -> None:
    assert domain.peer_help(reply("h", T0, in_question=True), RULES) is not None
    assert domain.peer_help(reply("h", T0, in_question=False), RULES) is None  # announcement
    assert domain.peer_help(reply("h", T0), RULES, in_question=True) is not None
    assert domain.peer_help(reply("h", T0, in_question=True, asker_team=True), RULES) is None
    assert domain.peer_help(reply("staff", T0, in_question=True, team=True), RULES) is None


def test_a_reply_in_a_question_engagement_saw_is_peer_help_once() -> None:
    r = reply("helper", hours(1))  # the reply does not say its thread is a question
    out = fold_journey({}, {}, {}, {}, [ask(), r], None, RULES)
    helps = [s for s in out.signals if s.event_type is PEER_HELP]
    assert len(helps) == 1
    flagged = reply("helper", hours(1), in_question=True)
    out = fold_journey({}, {}, {}, {}, [ask(), flagged], None, RULES)
    assert not [s for s in out.signals if s.event_type is PEER_HELP]  # fold_batch emits it


# --- the honeymoon drop-off -------------------------------------------------------------------


def newcomer_log(active_days: list[float], member: str = "n") -> list[ActivityV1]:
    return [activity(member, "signup", day=0)] + [
        activity(member, "reaction" if i % 2 else "post", day=d) for i, d in enumerate(active_days)
    ]


def fold_newcomer(
    acts: list[ActivityV1], until: datetime, known: datetime | None = None, rules: Rules = RULES
) -> tuple[Newcomer | None, list[Signal]]:
    n: Newcomer | None = None
    signals: list[Signal] = []
    for a in acts:
        n, out = observe_newcomer(n, a, known, rules)
        signals += out
    if n is not None:
        n, out = advance_newcomer(n, until, rules)
        signals += out
    return n, signals


def test_a_newcomer_who_goes_quiet_gets_the_drop_off_at_the_deadline() -> None:
    _, signals = fold_newcomer(newcomer_log([1, 3]), until=days(60))
    (s,) = signals
    assert s.event_type is NEWCOMER_DROP_OFF and isinstance(s.data, NewcomerDropOffV1)
    assert s.data.newcomer_as == "member" and s.data.started_at == days(0)
    assert s.data.last_active_at == days(3) and s.data.occurred_at == days(17)
    assert s.data.activities == {"signup": 1, "post": 1, "reaction": 1}


def test_joining_and_doing_nothing_is_a_drop_off_too() -> None:
    _, signals = fold_newcomer(newcomer_log([]), until=days(30))
    assert [s.data.occurred_at for s in signals] == [days(14)]  # type: ignore[attr-defined]


def test_active_through_the_honeymoon_is_no_drop_off() -> None:
    _, signals = fold_newcomer(newcomer_log([10, 20, 30, 40, 45]), until=days(200))
    assert signals == []


def test_a_honeymoon_that_is_over_records_nothing_more() -> None:
    """Active past the first honeymoon_days, or signalled: no drop-off can come of it, so a
    later activity leaves the row as it is (it is not rewritten at every activity of a member
    who stays), and a purchase still starts a customer honeymoon."""
    active_past, _ = fold_newcomer(newcomer_log([10, 20, 30, 40, 45]), until=days(46))
    signalled, _ = fold_newcomer(newcomer_log([1]), until=days(20))
    assert active_past is not None and signalled is not None and signalled.signalled
    for over in (active_past, signalled):
        later = activity("n", "post", day=60)
        assert observe_newcomer(over, later, None, RULES) == (over, [])
        customer, _ = observe_newcomer(over, activity("n", "purchase", day=61), None, RULES)
        assert customer is not None and (customer.newcomer_as, customer.started_at) == (
            "customer",
            days(61),
        )
    # one still in its honeymoon goes on counting
    young, _ = fold_newcomer(newcomer_log([1]), until=days(2))
    assert young is not None
    moved, _ = observe_newcomer(young, activity("n", "post", day=5), None, RULES)
    assert moved is not None and moved.last_active_at == days(5) and moved != young


def test_someone_known_for_longer_than_a_honeymoon_is_not_new() -> None:
    acts = [activity("old", "post", day=100)]
    n, signals = fold_newcomer(acts, until=days(300), known=days(0))
    assert n is None and signals == []


def test_a_purchase_starts_a_customer_honeymoon() -> None:
    acts = [
        *newcomer_log([5, 10, 20, 30, 40, 50]),
        activity("n", "purchase", day=60, source="crm"),
        activity("n", "post", day=62),
    ]
    _, signals = fold_newcomer(acts, until=days(200))
    (s,) = signals
    assert isinstance(s.data, NewcomerDropOffV1)
    assert (s.data.newcomer_as, s.data.started_at, s.data.occurred_at) == (
        "customer",
        days(60),
        days(76),
    )


def test_staff_bots_and_visitors_are_not_newcomers() -> None:
    for a in (
        activity("s", "signup", team=True),
        activity("b", "signup", bot=True),
        activity("v", "page_view", anonymous=True),
    ):
        assert fold_newcomer([a], until=days(100)) == (None, [])


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.floats(min_value=0, max_value=90, allow_nan=False), max_size=8),
    st.lists(st.floats(min_value=0, max_value=150, allow_nan=False), max_size=5),
)
def test_the_drop_off_fires_once_at_its_deadline_whenever_it_is_found(
    active: list[float], sweeps: list[float]
) -> None:
    log = newcomer_log(sorted(active))

    def run(sweep_days: list[float]) -> list[datetime]:
        n: Newcomer | None = None
        out: list[Signal] = []
        for a in log:
            n, s = observe_newcomer(n, a, None, RULES)
            out += s
            for d in sweep_days:
                if n is not None and days(d) <= a.occurred_at:
                    n, s = advance_newcomer(n, days(d), RULES)
                    out += s
        assert n is not None
        n, s = advance_newcomer(n, days(400), RULES)
        return [x.data.occurred_at for x in out + s]  # type: ignore[attr-defined]

    reference = run([])
    assert run(sorted(sweeps)) == reference and len(reference) <= 1
    times = [0.0, *sorted(active)]
    gaps = [(b - a, a) for a, b in zip(times, [*times[1:], 10_000.0], strict=True)]
    expected = next((days(a + 14) for gap, a in gaps if gap >= 14 and a < 42), None)
    # the first quiet spell of 14 days or more that starts within the honeymoon
    assert reference == ([expected] if expected else [])


# --- product feedback -------------------------------------------------------------------------


def test_feedback_kinds_and_mappings_become_product_feedback() -> None:
    bug = activity("m", "bug_report", properties={"text": "crash on save"})
    s = domain.product_feedback(bug, "engaged", RULES)
    assert s is not None and s.event_type is PRODUCT_FEEDBACK
    assert isinstance(s.data, ProductFeedbackV1)
    assert (s.data.feedback_kind, s.data.stages, s.data.from_champion) == (
        "bug_report",
        {"engagement": "engaged"},
        False,
    )
    rules = Rules(feedback_mappings={"github:tag:enhancement": "feature_request"})
    issue = activity("m", "post", source="github", properties={"tags": ["Enhancement"]})
    mapped = domain.product_feedback(issue, None, rules)
    assert mapped is not None and isinstance(mapped.data, ProductFeedbackV1)
    assert (mapped.data.feedback_kind, mapped.data.matched) == (
        "feature_request",
        "github:tag:enhancement",
    )
    assert domain.product_feedback(issue, None, RULES) is None


def test_a_champions_feedback_is_flagged_from_the_gateways_stamp() -> None:
    a = activity("m", "feature_request", properties={"advocacy_stage": "champion"})
    s = domain.product_feedback(a, "engaged", RULES)
    assert s is not None and isinstance(s.data, ProductFeedbackV1) and s.data.from_champion
    assert s.data.stages == {"engagement": "engaged", "advocacy": "champion"}


def test_staff_feedback_is_not_a_members() -> None:
    assert domain.product_feedback(activity("s", "feedback", team=True), None, RULES) is None


def test_fold_journey_sweeps_questions_and_newcomers_at_the_watermark() -> None:
    out = fold_journey({}, {}, {}, {}, [ask("n", at=T0)], days(30), RULES)
    kinds = sorted(s.event_type.type for s in out.signals)
    assert kinds == [NEWCOMER_DROP_OFF.type, QUESTION_UNANSWERED.type]
    assert set(out.questions) == {"discourse:q-1"} and set(out.newcomers) == {"n"}
    assert out.newcomers["n"].signalled and out.questions["discourse:q-1"].unanswered_signalled


def test_rules_file_keys_for_issue_15(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from shared.rules import load_rules
    from shared.settings import Settings

    path = tmp_path / "rules.toml"
    path.write_text(
        "[engagement]\nunanswered_after_hours = 48\nhoneymoon_days = 28\n"
        'question_mappings = ["discourse:category:support"]\n'
        '[engagement.feedback_mappings]\n"github:tag:bug" = "bug_report"\n'
    )
    rules = load_rules(Rules, "engagement", Settings(rules_file=path))
    assert rules.unanswered_after_hours == 48 and rules.honeymoon_days == 28
    assert rules.feedback_mappings == {"github:tag:bug": "bug_report"}


_ = Target  # imported for type readers of reply()


def test_a_batchs_signals_go_out_in_event_time_order_per_member() -> None:
    """fold_batch's churn risk and fold_journey's drop-off of one member, found by one sweep,
    leave in time order, as they would if two sweeps had found them."""
    engaged = domain.Participant("m", "engaged", 9.0, days(0), days(0), days(0), days(0), 3)
    batch = domain.fold_batch({"m": engaged}, [], days(30), RULES)
    newcomer = Newcomer("m", "customer", days(5), days(5))
    journey = fold_journey(
        {"m": engaged}, batch.stage_after, {}, {"m": newcomer}, [], days(30), RULES
    )
    ordered = domain.in_time_order(batch.signals, journey.signals)
    assert [(s.event_type.type, s.data.occurred_at) for s in ordered] == [  # type: ignore[attr-defined]
        (NEWCOMER_DROP_OFF.type, days(19)),
        ("signal.churn_risk.v1", days(21)),
    ]
