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


def test_first_post_or_reply_engages_once() -> None:
    m, ts = engagement.observe(None, activity("m-1", "reaction"))
    assert ts == [] and m is not None and m.stage is None
    m, ts = engagement.observe(m, activity("m-1", "reply", day=1))
    assert [t.to_stage for t in ts] == ["engaged"] and m is not None
    _, ts = engagement.observe(m, activity("m-1", "post", day=2))
    assert ts == []


def test_bots_and_team_never_move_stages() -> None:
    for kw in ({"bot": True}, {"team": True}):
        assert engagement.observe(None, activity("b", "post", **kw)) == (None, [])
        assert (
            awareness.observe(None, activity("b", "signup", **kw), awareness.Rules()).person is None
        )


def test_accepted_answer_on_someone_elses_question_makes_an_advocate() -> None:
    m, ts = advocacy.observe(None, activity("m-1", "answer_accepted", thread_author="m-1"))
    assert ts == [] and m is None  # answering yourself does not count
    m, ts = advocacy.observe(None, activity("m-1", "answer_accepted", thread_author="m-2"))
    assert m is not None and m.stage == "advocate" and [t.to_stage for t in ts] == ["advocate"]
