"""The first rule of each stage service (the full journey model has its own tests)."""

from __future__ import annotations

from services.advocacy import domain as advocacy
from services.awareness import domain as awareness
from services.engagement import domain as engagement
from tests.factories import activity


def test_visitor_then_signup_becomes_member() -> None:
    person, ts = awareness.observe(None, activity("anon-1", "page_view", anonymous=True))
    assert person is not None and person.stage == "visitor"
    assert [(t.from_stage, t.to_stage) for t in ts] == [(None, "visitor")]
    person, ts = awareness.observe(person, activity("anon-1", "signup", day=1))
    assert person is not None and person.stage == "member"
    assert [(t.from_stage, t.to_stage) for t in ts] == [("visitor", "member")]
    again, ts = awareness.observe(person, activity("anon-1", "signup", day=2))
    assert again == person and ts == []


def test_signup_without_history_is_a_direct_member() -> None:
    _, ts = awareness.observe(None, activity("m-1", "signup"))
    assert [(t.from_stage, t.to_stage, t.caused_by) for t in ts] == [
        (None, "member", ts[0].caused_by)
    ]


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
        assert awareness.observe(None, activity("b", "signup", **kw)) == (None, [])


def test_accepted_answer_on_someone_elses_question_makes_an_advocate() -> None:
    m, ts = advocacy.observe(None, activity("m-1", "answer_accepted", thread_author="m-1"))
    assert ts == [] and m is None  # answering yourself does not count
    m, ts = advocacy.observe(None, activity("m-1", "answer_accepted", thread_author="m-2"))
    assert m is not None and m.stage == "advocate" and [t.to_stage for t in ts] == ["advocate"]
