"""Awareness rules: attribution, joining, conversion, intent, and the loop's start."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.awareness import domain
from services.awareness.domain import Rules, observe
from shared.rules import RulesError, load_rules
from shared.settings import Settings
from tests.factories import activity

RULES = Rules()


def test_anonymous_visit_is_a_visitor_with_its_first_touch() -> None:
    out = observe(
        None,
        activity(
            "anon-1",
            "page_view",
            anonymous=True,
            source="web",
            properties={"referrer": "https://www.google.com/search?q=x"},
        ),
        RULES,
    )
    assert out.person is not None and out.person.stage == "visitor"
    assert out.person.first_touch is not None
    assert (out.person.first_touch.channel, out.person.first_touch.detail) == (
        "search",
        "www.google.com",
    )
    assert [(t.from_stage, t.to_stage) for t in out.transitions] == [(None, "visitor")]


@pytest.mark.parametrize(
    ("properties", "source", "channel", "detail"),
    [
        ({"utm_campaign": "launch-week"}, "web", "campaign", "launch-week"),
        (
            {"referrer": "https://news.ycombinator.com/item?id=1"},
            "web",
            "social",
            "news.ycombinator.com",
        ),
        ({"referrer": "https://duckduckgo.com/"}, "web", "search", "duckduckgo.com"),
        ({}, "discourse", "community", "discourse"),
        ({}, "web", "direct", None),
        ({"referred_by": "m-9"}, "web", "referral", "m-9"),
    ],
)
def test_first_touch_channels(
    properties: dict[str, str], source: str, channel: str, detail: str | None
) -> None:
    touch = domain.classify_touch(
        activity("a", "page_view", source=source, properties=properties), RULES
    )
    assert (touch.channel, touch.detail) == (channel, detail)


def test_signup_joins_the_anonymous_history_and_credits_the_referrer() -> None:
    visit = observe(
        None,
        activity(
            "anon-1",
            "page_view",
            anonymous=True,
            day=0,
            source="web",
            properties={"referrer": "https://bing.com/"},
        ),
        RULES,
    )
    signup = observe(
        None,
        activity(
            "m-1",
            "signup",
            day=2,
            source="web",
            properties={"anonymous_id": "anon-1", "referred_by": "m-9"},
        ),
        RULES,
    )
    assert signup.merge_from == "anon-1"
    assert [(t.member_id, t.from_stage, t.to_stage) for t in signup.transitions] == [
        ("m-1", "visitor", "member"),
        ("anon-1", "visitor", "merged"),  # the anonymous id is no longer an open visitor
    ]
    assert "referred by m-9" in signup.transitions[0].reason
    assert signup.acquired is not None and signup.acquired.referrer_member_id == "m-9"
    assert signup.person is not None and visit.person is not None
    merged = domain.merge_history(signup.person, visit.person)
    assert merged.first_touch is not None and merged.first_touch.channel == "search"
    assert merged.first_seen_at == visit.person.first_seen_at
    # merging is order-free: merging again changes nothing
    assert domain.merge_history(merged, visit.person) == merged


def test_self_referral_is_not_a_referral() -> None:
    out = observe(None, activity("m-1", "signup", properties={"referred_by": "m-1"}), RULES)
    assert out.acquired is None


def test_conversion_records_the_community_touchpoints_before_it() -> None:
    out = observe(None, activity("m-1", "signup"), RULES)
    ids = []
    for day in (1, 2, 3):
        a = activity("m-1", "post", day=day, source="discourse")
        ids.append(a.activity_id)
        out = observe(out.person, a, RULES)
    buy = activity("m-1", "purchase", day=4, source="crm")
    out = observe(out.person, buy, RULES)
    (t,) = out.transitions
    assert (t.from_stage, t.to_stage) == ("member", "customer")
    assert "after 3 community touchpoints (community-influenced)" in t.reason
    assert t.caused_by == (buy.activity_id, *ids)
    # a purchase from a source that is not the product or CRM is not a conversion
    assert (
        observe(None, activity("m-2", "purchase", source="discourse"), RULES)
        .transitions[0]
        .to_stage
        == "member"
    )


def test_prospect_intent_from_tags_and_phrases_but_not_from_customers() -> None:
    ask = activity(
        "m-1",
        "post",
        thread_id="q-7",
        properties={"tags": ["SSO", "docs"], "text": "What is the pricing for 50 seats?"},
    )
    out = observe(None, ask, RULES)
    assert out.intent is not None
    assert out.intent.matched == ["SSO", "pricing"]
    assert out.intent.thread_id == "q-7"
    customer = observe(None, activity("m-1", "purchase", source="product"), RULES).person
    assert observe(customer, ask, RULES).intent is None


def test_team_and_bots_are_ignored() -> None:
    rules = Rules(team_member_ids=("staff-1",))
    assert observe(None, activity("staff-1", "signup"), rules).person is None
    assert observe(None, activity("b", "signup", bot=True), RULES).person is None


KINDS = st.sampled_from(
    [
        "page_view",
        "signup",
        "post",
        "reply",
        "purchase",
        "trial_started",
        "renewal",
        "downgrade",
        "cancellation",
        "demo_request",
    ]
)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(KINDS, st.booleans(), st.sampled_from(["web", "crm", "discourse"])),
        min_size=1,
        max_size=25,
    )
)
def test_stage_sequence_is_a_legal_path(steps: list[tuple[str, bool, str]]) -> None:
    person = None
    stages: list[str | None] = [None]
    for day, (kind, anonymous, source) in enumerate(steps):
        out = observe(
            person,
            activity("x", kind, day=day, anonymous=anonymous and day == 0, source=source),
            RULES,
        )
        for t in out.transitions:
            assert t.from_stage == stages[-1], "a transition must start where the last ended"
            assert (t.from_stage, t.to_stage) in domain.LEGAL_MOVES
            stages.append(t.to_stage)
        person = out.person
        if person is not None and stages[-1] is not None:
            assert person.stage == stages[-1]


def test_rules_file_overrides_and_rejects_bad_values(tmp_path: Path) -> None:
    good = tmp_path / "rules.toml"
    good.write_text('[awareness]\nintent_tags = ["pricing"]\n')
    assert load_rules(Rules, "awareness", Settings(rules_file=good)).intent_tags == ("pricing",)
    bad = tmp_path / "bad.toml"
    bad.write_text('[awareness]\ntouchpoints_kept = "many"\n')
    with pytest.raises(RulesError, match=r"bad.toml \[awareness\].*touchpoints_kept"):
        load_rules(Rules, "awareness", Settings(rules_file=bad))


def test_a_misspelled_key_stops_start_up(tmp_path: Path) -> None:
    """`touchpoints_kep` is not taken and ignored: start-up fails naming the key and section."""
    path = tmp_path / "rules.toml"
    path.write_text("[awareness]\ntouchpoints_kep = 5\n")
    with pytest.raises(RulesError) as raised:
        load_rules(Rules, "awareness", Settings(rules_file=path))
    message = str(raised.value)
    assert message.startswith(f"invalid journey rules in {path} [awareness]: ")
    assert "touchpoints_kep: Unexpected keyword argument" in message
