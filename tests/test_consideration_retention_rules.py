"""Awareness, issue 15: consideration before buying, community-influenced conversion with its
first touch as structured details, retention from the CRM, and intent on whole words."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from services.awareness import domain
from services.awareness.domain import (
    CHURNED,
    CONSIDERING,
    CUSTOMER,
    LAPSED,
    MEMBER,
    RETAINED,
    VISITOR,
    Rules,
    contains_phrase,
    fold_batch,
    observe,
)
from shared.contracts import ActivityV1
from shared.journey import Transition
from tests.factories import activity

RULES = Rules()


def moves(out: domain.Outcome) -> list[tuple[str | None, str]]:
    return [(t.from_stage, t.to_stage) for t in out.transitions]


def run(
    acts: list[ActivityV1], rules: Rules = RULES
) -> tuple[domain.Person | None, list[Transition]]:
    person = None
    transitions: list[Transition] = []
    for a in acts:
        out = observe(person, a, rules)
        person = out.person
        transitions += out.transitions
    return person, transitions


def test_a_visitor_reading_the_docs_is_remembered_and_stays_a_visitor() -> None:
    """Its member is considering at sign-up (below); the anonymous id itself stays a visitor,
    so the outcome does not depend on whether its sign-up was read first."""
    out = observe(
        None,
        activity(
            "anon-1",
            "page_view",
            anonymous=True,
            source="web",
            properties={"url": "https://example.com/docs/getting-started"},
        ),
        RULES,
    )
    assert moves(out) == [(None, VISITOR)]
    assert out.person is not None and out.person.stage == VISITOR
    assert out.person.considered_at == out.transitions[0].occurred_at
    assert out.transitions[0].details is not None
    assert out.transitions[0].details.first_touch_channel == "direct"


def test_a_blog_page_or_a_look_alike_path_is_not_consideration() -> None:
    for url in ("https://example.com/blog/x", "https://example.com/docsearch", "/pricingx"):
        out = observe(None, activity("a", "page_view", properties={"url": url}), RULES)
        assert moves(out) == [(None, MEMBER)], url


def test_a_member_asking_a_pre_sales_question_is_considering() -> None:
    member = observe(None, activity("m-1", "signup"), RULES).person
    ask = activity("m-1", "post", day=1, properties={"text": "Is there an enterprise plan?"})
    out = observe(member, ask, RULES)
    assert moves(out) == [(MEMBER, CONSIDERING)]
    assert out.intent is not None  # the prospect intent signal as before


def test_conversion_details_say_community_influenced_considered_and_first_touch() -> None:
    _, ts = run(
        [
            activity("m-1", "signup", source="web", properties={"utm_campaign": "spring"}),
            activity("m-1", "post", day=1, source="discourse"),
            activity("m-1", "comparison_view", day=2, source="web"),
            activity("m-1", "purchase", day=3, source="crm"),
        ]
    )
    assert [(t.from_stage, t.to_stage) for t in ts] == [
        (None, MEMBER),
        (MEMBER, CONSIDERING),
        (CONSIDERING, CUSTOMER),
    ]
    details = ts[-1].details
    assert details is not None
    assert details.first_touch_channel == "campaign" and details.first_touch_detail == "spring"
    assert (details.community_touchpoints, details.community_influenced) == (1, True)
    assert details.considered is True
    _, direct = run([activity("m-2", "purchase", source="crm")])
    assert direct[-1].details is not None
    assert (direct[-1].details.community_influenced, direct[-1].details.considered) == (
        False,
        False,
    )


def test_retention_renewal_downgrade_cancellation_and_win_back() -> None:
    person, ts = run(
        [
            activity("c", "purchase", source="crm"),
            activity("c", "renewal", day=30, source="crm"),
            activity("c", "renewal", day=60, source="crm"),  # still retained: no move
            activity("c", "downgrade", day=90, source="crm"),
            activity("c", "purchase", day=100, source="crm"),  # a repeat purchase
            activity("c", "cancellation", day=120, source="crm"),
            activity("c", "purchase", day=200, source="crm"),
        ]
    )
    assert [(t.from_stage, t.to_stage) for t in ts] == [
        (None, CUSTOMER),
        (CUSTOMER, RETAINED),
        (RETAINED, LAPSED),
        (LAPSED, RETAINED),
        (RETAINED, CHURNED),
        (CHURNED, CUSTOMER),
    ]
    assert person is not None and person.renewals == 3


def test_retention_kinds_from_the_community_or_the_web_move_nobody() -> None:
    customer = observe(None, activity("c", "purchase", source="crm"), RULES).person
    out = observe(customer, activity("c", "cancellation", day=1, source="discourse"), RULES)
    assert out.transitions == [] and out.person == customer


def test_a_renewal_of_someone_never_seen_buying_makes_a_customer() -> None:
    member = observe(None, activity("m", "signup"), RULES).person
    assert moves(observe(member, activity("m", "renewal", day=1, source="crm"), RULES)) == [
        (MEMBER, CUSTOMER)
    ]


def test_intent_matches_whole_words_and_phrases_only() -> None:
    assert not contains_phrase("which lesson covers replays?", "sso")
    assert contains_phrase("does it do sso?", "sso")
    assert contains_phrase("SSO/SAML login", "sso")
    assert contains_phrase("can I integrate   with okta", "integrate with")
    assert not contains_phrase("reintegrate within", "integrate with")
    assert not contains_phrase("licensed", "license")
    member = observe(None, activity("m", "signup"), RULES).person
    ask = activity("m", "post", day=1, properties={"text": "Which lesson covers replays?"})
    out = observe(member, ask, RULES)
    assert out.intent is None and out.transitions == []


WORD = st.text(alphabet="abcdefghij", min_size=1, max_size=6)


@settings(max_examples=200, deadline=None)
@given(WORD, WORD, WORD)
def test_a_phrase_inside_a_longer_word_never_matches(left: str, phrase: str, right: str) -> None:
    assert not contains_phrase(left + phrase + right, phrase)
    assert contains_phrase(f"{left} {phrase} {right}", phrase)


def test_visitor_history_joins_the_member_in_either_order_and_moves_nobody() -> None:
    """The visitor's evaluation is merged into the member's record whichever id is read first;
    only the member's own evaluation (its own partition, in order) makes it considering."""
    docs = activity(
        "anon-9",
        "page_view",
        anonymous=True,
        source="web",
        activity_id="pv-1",
        properties={"path": "/pricing"},
    )
    signup = activity(
        "m-9", "signup", day=1, activity_id="su-1", properties={"anonymous_id": "anon-9"}
    )
    first = fold_batch({}, {}, [docs, signup], RULES)
    a = fold_batch({}, {}, [signup], RULES)
    b = fold_batch(a.changed, {"anon-9": "m-9"}, [docs], RULES)
    for people in (first.changed, b.changed):
        assert people["m-9"].stage == MEMBER
        assert (people["m-9"].considered_at, people["m-9"].considered_by) == (
            docs.occurred_at,
            "pv-1",
        )
    assert not [
        t
        for t in [*first.emitted, *b.emitted]
        if isinstance(t, Transition) and t.to_stage == CONSIDERING
    ]
    own = observe(
        b.changed["m-9"],
        activity("m-9", "page_view", day=2, properties={"url": "https://x.org/docs"}),
        RULES,
    )
    assert moves(own) == [(MEMBER, CONSIDERING)]


RETENTION = st.sampled_from(["purchase", "renewal", "downgrade", "cancellation", "trial_started"])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(RETENTION, st.sampled_from(["crm", "web"])), min_size=1, max_size=30))
def test_retention_sequences_are_legal_and_renewals_count(
    steps: list[tuple[str, str]],
) -> None:
    person, ts = run([activity("c", k, day=i, source=s) for i, (k, s) in enumerate(steps)])
    stage: str | None = None
    for t in ts:
        assert t.from_stage == stage and (t.from_stage, t.to_stage) in domain.LEGAL_MOVES
        stage = t.to_stage
    if person is not None and ts:
        assert person.stage == stage
    assert person is None or person.renewals <= sum(
        1 for k, s in steps if s == "crm" and k in ("purchase", "renewal")
    )


def test_merge_keeps_the_first_consideration_and_adds_renewals() -> None:
    a, _ = run([activity("a", "signup"), activity("a", "demo_request", day=5)])
    b, _ = run(
        [
            activity("b", "signup"),
            activity("b", "demo_request", day=2),
            activity("b", "purchase", day=3, source="crm"),
            activity("b", "renewal", day=40, source="crm"),
        ]
    )
    assert a is not None and b is not None
    out = domain.merge_people(a, b, "a", "b", "merge-1", RULES)
    assert out.person is not None
    assert out.person.considered_at == b.considered_at
    assert out.person.renewals == 1
    assert [(t.from_stage, t.to_stage) for t in out.transitions] == [(CONSIDERING, RETAINED)]
