"""The first rule of each stage service (the full journey model has its own tests)."""

from __future__ import annotations

from datetime import timedelta

from services.advocacy import domain as advocacy
from services.awareness import domain as awareness
from services.engagement import domain as engagement
from shared.contracts import PeerHelpV1
from tests.factories import T0, activity


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


def test_accepted_answers_for_others_make_an_advocate() -> None:
    """Advocacy credits engagement's peer-help signal, not the answer_accepted activity itself
    (so one answer counts once); three accepted answers for others (3 x 5) reach the
    threshold of 12, an answer to yourself counts nothing."""
    rules = advocacy.Rules()
    accepted = activity("m-1", "answer_accepted", thread_author="m-2")
    assert advocacy.contributions_of(accepted, "ev-0", rules) == []

    def accepted_answer(helped: str, n: int) -> PeerHelpV1:
        return PeerHelpV1(
            helper_member_id="m-1",
            helped_member_id=helped,
            thread_id=f"q-{n}",
            url=None,
            accepted=True,
            occurred_at=T0 + timedelta(days=n),
            activity_id=f"a-{n}",
        )

    steps = [
        advocacy.Step(tuple(advocacy.contributions_of(accepted_answer(h, n), f"ev-{n}", rules)))
        for n, h in enumerate(["m-1", "m-2", "m-3", "m-4"])
    ]
    result = advocacy.run_batch(advocacy.Snapshot({}, frozenset(), {}), steps, rules)
    assert result.members["m-1"].score == 15.0  # the first one was m-1's own question
    assert [(t.from_stage, t.to_stage, t.caused_by) for t in result.transitions] == [
        (None, "advocate", ("ev-3",))
    ]
