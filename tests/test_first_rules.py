"""The first rule of each stage service (the full journey model has its own tests)."""

from __future__ import annotations

from services.advocacy import domain as advocacy
from services.awareness import domain as awareness
from services.engagement import domain as engagement
from tests.factories import activity


def test_visitor_then_signup_becomes_member() -> None:
    rules = awareness.Rules()
    out = awareness.observe(None, activity("anon-1", "page_view", anonymous=True), rules)
    assert out.person is not None and out.person.stage == "visitor"
    assert [(t.from_stage, t.to_stage) for t in out.transitions] == [(None, "visitor")]
    out = awareness.observe(out.person, activity("anon-1", "signup", day=1), rules)
    assert out.person is not None and out.person.stage == "member"
    assert [(t.from_stage, t.to_stage) for t in out.transitions] == [("visitor", "member")]
    again = awareness.observe(out.person, activity("anon-1", "signup", day=2), rules)
    assert again.person == out.person and again.transitions == []


def test_signup_without_history_is_a_direct_member() -> None:
    out = awareness.observe(None, activity("m-1", "signup"), awareness.Rules())
    assert [(t.from_stage, t.to_stage) for t in out.transitions] == [(None, "member")]


def test_engaged_once_the_activity_score_reaches_the_threshold() -> None:
    # The full model (tests/test_engagement_rules.py): one post or reply is no longer enough,
    # a decayed score of weighted activities must reach 8 (post 3, reply 4, reaction 0.5).
    rules = engagement.Rules()
    m, ts = engagement.observe(None, activity("m-1", "reaction"), rules)
    assert ts == [] and m is not None and m.stage is None
    m, ts = engagement.observe(m, activity("m-1", "reply"), rules)
    assert ts == [] and m is not None and m.stage is None
    m, ts = engagement.observe(m, activity("m-1", "post"), rules)
    assert ts == [] and m is not None and m.score == 7.5
    m, ts = engagement.observe(m, activity("m-1", "reaction"), rules)
    assert [t.to_stage for t in ts] == ["engaged"] and m is not None
    _, ts = engagement.observe(m, activity("m-1", "post", day=2), rules)
    assert ts == []


def test_bots_and_team_never_move_stages() -> None:
    for kw in ({"bot": True}, {"team": True}):
        talk = activity("b", "event_talk", **kw)  # would engage anyone else at once
        assert engagement.observe(None, talk, engagement.Rules()) == (None, [])
        assert (
            awareness.observe(None, activity("b", "signup", **kw), awareness.Rules()).person is None
        )


def test_accepted_answer_on_someone_elses_question_makes_an_advocate() -> None:
    m, ts = advocacy.observe(None, activity("m-1", "answer_accepted", thread_author="m-1"))
    assert ts == [] and m is None  # answering yourself does not count
    m, ts = advocacy.observe(None, activity("m-1", "answer_accepted", thread_author="m-2"))
    assert m is not None and m.stage == "advocate" and [t.to_stage for t in ts] == ["advocate"]
