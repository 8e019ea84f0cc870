"""Advocacy rules: who gives back to the community, and who leads it right now.

Pure functions and frozen dataclasses, no I/O: the handler loads a snapshot, `run_batch` decides,
the handler saves. docs/JOURNEY-MODEL.md (Advocacy) explains every rule and default.

- Each incoming event becomes zero or more `Contribution`s credited to one member
  (`contributions_of`); each kind carries a weight (`Weights`).
- The lifetime advocacy score is the sum of the weights credited; reaching
  `advocate_threshold` makes the member an advocate at once, for good.
- Every `champion_period_days` of event time (boundaries at multiples of the period since the
  Unix epoch) a review ranks the advocates by the score of their contributions in the last
  `champion_window_days`: the top `champion_top_n` are champions until the next review.

One module though over 400 lines: it is one stage's rules (contributions, credit, reviews, a
batch, a merge, an erasure), read together against docs/JOURNEY-MODEL.md; split, each part
would import the rest.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal, get_args

from pydantic import Field

from shared.contracts import (
    ActivityV1,
    AdvocateV1,
    ChampionFeedbackV1,
    ChampionNominatedV1,
    Contract,
    MemberAcquiredV1,
    PeerHelpV1,
    ProductFeedbackV1,
    StageChangedV1,
)
from shared.journey import Transition
from shared.rules import strict_rules

ADVOCATE = "advocate"
CHAMPION = "champion"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

ContributionKind = Literal[
    "peer_help",
    "answer_accepted",
    "content_published",
    "content_engaged",
    "event_talk",
    "referral_joined",
]
KINDS: tuple[ContributionKind, ...] = get_args(ContributionKind)

Weight = Annotated[float, Field(ge=0, allow_inf_nan=False)]


# --------------------------------------------------------------------------------------------
# rules
# --------------------------------------------------------------------------------------------


@strict_rules
class Weights:
    """Points per contribution. The more a contribution costs its author and the more it helps
    someone else, the more it weighs."""

    peer_help: Weight = 2.0
    """A reply in someone else's thread (engagement's signal.peer_help.v1, accepted false)."""
    answer_accepted: Weight = 5.0
    """The asker accepted the member's answer (signal.peer_help.v1, accepted true)."""
    content_published: Weight = 3.0
    """A blog post, tutorial or video (activity content_published)."""
    content_engaged: Weight = 1.0
    """Someone else reacted to or replied on the member's post (capped per piece)."""
    event_talk: Weight = 8.0
    """A talk at an event (activity event_talk)."""
    referral_joined: Weight = 10.0
    """Someone the member referred joined and then became engaged (member.acquired.v1 and
    engagement's stage change): a referral that never takes part earns nothing, and referral
    credit alone never makes an advocate (`maybe_advocate`)."""

    def of(self, kind: ContributionKind) -> float:
        weight: float = getattr(self, kind)
        return weight


@strict_rules
class Rules:
    """Advocacy's rules; a deployment overrides any of them in the [advocacy] section of its
    rules file (FLYWHEEL_RULES_FILE). Unknown keys are errors, not silently ignored."""

    weights: Weights = field(default_factory=Weights)
    advocate_threshold: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 12.0
    """Lifetime score that makes an advocate: no single contribution reaches it alone."""
    champion_top_n: Annotated[int, Field(ge=0)] = 3
    """How many champions each review names (0: no champions)."""
    champion_window_days: Annotated[int, Field(ge=1, le=3650)] = 90
    """The rolling window a review ranks by: the last quarter."""
    champion_period_days: Annotated[int, Field(ge=1, le=3650)] = 30
    """Days between reviews: champions hold the title at least this long."""
    content_engagement_cap: Annotated[int, Field(ge=0)] = 5
    """Most credited engagements per piece of content (one per engaging member)."""
    engagement_kinds: frozenset[str] = frozenset({"reaction", "reply"})
    content_kinds: frozenset[str] = frozenset({"content_published", "event_talk"})
    """What counts as content (the engaged item's `target.parent_kind`): likes on a question
    are not advocacy; engagement with a tutorial or a talk is."""
    team_member_ids: frozenset[str] = frozenset()
    """Staff: never credited, and their activity never credits anyone."""
    bot_member_ids: frozenset[str] = frozenset()
    """Bots: never credited, and their activity never credits anyone."""
    evidence_links: Annotated[int, Field(ge=0, le=100)] = 10
    """Most links carried as evidence in a signal (the most recent ones)."""

    @property
    def window(self) -> timedelta:
        return timedelta(days=self.champion_window_days)

    @property
    def period(self) -> timedelta:
        return timedelta(days=self.champion_period_days)

    def excluded(self, member_id: str | None) -> bool:
        """Configured staff and bots (the actor flags cover the rest)."""
        return member_id in self.team_member_ids or member_id in self.bot_member_ids


# --------------------------------------------------------------------------------------------
# contributions: one pure function per incoming event type
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Contribution:
    """One creditable act, kept in the log as the evidence behind every score."""

    member_id: str
    kind: ContributionKind
    weight: float
    occurred_at: datetime
    cause_id: str
    """Id of the event it came from."""
    key: str
    """What makes it one act: the same key is credited once, whatever event repeats it."""
    link: str | None = None
    content_id: str | None = None
    """The piece of content engaged with (content_engaged only): the cap counts per piece."""


def _contribution(
    rules: Rules,
    member_id: str,
    kind: ContributionKind,
    key: str,
    occurred_at: datetime,
    cause_id: str,
    link: str | None = None,
    content_id: str | None = None,
) -> Contribution:
    return Contribution(
        member_id=member_id,
        kind=kind,
        weight=rules.weights.of(kind),
        occurred_at=occurred_at,
        cause_id=cause_id,
        key=f"{kind}:{key}",
        link=link,
        content_id=content_id,
    )


def _actor_counts(activity: ActivityV1, rules: Rules) -> bool:
    """Visitors, staff and bots neither earn credit nor give it: an anonymous or automated
    reaction is too cheap to fake, and staff are paid to help."""
    a = activity.actor
    return not (a.anonymous or a.is_team_member or a.is_bot or rules.excluded(a.member_id))


def from_activity(activity: ActivityV1, event_id: str, rules: Rules) -> list[Contribution]:
    """Publishing, talks, and engagement others give to a member's content.

    `answer_accepted` is deliberately not credited here: engagement's signal.peer_help.v1
    (accepted true) is the one source of that credit, so it is never counted twice.
    """
    if not _actor_counts(activity, rules):
        return []
    actor = activity.actor.member_id
    target = activity.target
    link = target.url if target else None
    at = activity.occurred_at
    if activity.kind in ("content_published", "event_talk"):
        kind: ContributionKind = (
            "content_published" if activity.kind == "content_published" else "event_talk"
        )
        key = f"{activity.source}:{activity.activity_id}"
        return [_contribution(rules, actor, kind, key, at, event_id, link)]
    if activity.kind in rules.engagement_kinds and target is not None:
        author = target.parent_author_member_id
        piece = target.parent_id or target.thread_id
        if author is None or piece is None or author == actor or rules.excluded(author):
            return []  # nobody else to credit, or no piece of content to cap by
        if target.parent_kind not in rules.content_kinds:
            return []  # engagement with a question or a chat message, not with content
        content_id = f"{activity.source}:{piece}"
        return [
            _contribution(
                rules,
                author,
                "content_engaged",
                f"{content_id}:{actor}",
                at,
                event_id,
                link,
                content_id,
            )
        ]
    return []


def from_peer_help(signal: PeerHelpV1, event_id: str, rules: Rules) -> list[Contribution]:
    """Help given to a peer; an accepted answer weighs more. Once per helper and thread:
    more replies in one thread are one act of help."""
    helper, helped = signal.helper_member_id, signal.helped_member_id
    if helper == helped or rules.excluded(helper) or rules.excluded(helped):
        return []  # helping yourself, or staff and bots (who are not peers)
    kind: ContributionKind = "answer_accepted" if signal.accepted else "peer_help"
    where = signal.thread_id if signal.thread_id else f"activity:{signal.activity_id}"
    return [
        _contribution(
            rules, helper, kind, f"{helper}:{where}", signal.occurred_at, event_id, signal.url
        )
    ]


@dataclass(frozen=True)
class Referral:
    """A member who joined through a referral, and when they became engaged: the referrer is
    credited once both are known, whichever event arrives first (docs/JOURNEY-MODEL.md,
    Advocacy that cannot be bought). Keyed by the member who joined."""

    joined: str
    referrer: str | None = None
    acquired_at: datetime | None = None
    engaged_at: datetime | None = None
    engaged_cause: str | None = None
    """Id of the engagement transition: the credit's cause, whatever arrived first."""
    credited: bool = False


ENGAGED = "engaged"
"""Engagement's stage that releases a referral credit (journey.stage_changed.v1)."""


def referral_fact(data: Contract, event_id: str, rules: Rules) -> Referral | None:
    """What one event says about a referral: who referred a new member (awareness's
    member.acquired.v1), or that a member became engaged (engagement's stage change)."""
    if isinstance(data, MemberAcquiredV1):
        referrer = data.referrer_member_id
        if (
            data.via != "referral"
            or referrer == data.member_id
            or rules.excluded(referrer)
            or rules.excluded(data.member_id)
        ):
            return None
        return Referral(data.member_id, referrer=referrer, acquired_at=data.occurred_at)
    if (
        isinstance(data, StageChangedV1)
        and data.dimension == "engagement"
        and data.to_stage == ENGAGED
        and not rules.excluded(data.member_id)
    ):
        return Referral(data.member_id, engaged_at=data.occurred_at, engaged_cause=event_id)
    return None


def _earlier(a: datetime | None, b: datetime | None) -> bool:
    """Whether `a` is a time and comes before `b` (or `b` is unknown)."""
    return a is not None and (b is None or a < b)


def combine_referral(held: Referral, fact: Referral) -> Referral:
    """Both halves kept, each at its earliest: the first sign-up names the referrer, the first
    engagement releases the credit; the same facts in any order give the same row."""
    r = held
    if fact.referrer is not None and (
        r.referrer is None
        or _earlier(fact.acquired_at, r.acquired_at)
        or (fact.acquired_at == r.acquired_at and fact.referrer < r.referrer)
    ):
        r = replace(r, referrer=fact.referrer, acquired_at=fact.acquired_at)
    if fact.engaged_at is not None and (
        _earlier(fact.engaged_at, r.engaged_at)
        or (
            fact.engaged_at == r.engaged_at and (fact.engaged_cause or "") < (r.engaged_cause or "")
        )
    ):
        r = replace(r, engaged_at=fact.engaged_at, engaged_cause=fact.engaged_cause)
    return r


def referral_credit(r: Referral, rules: Rules) -> Contribution | None:
    """The referrer's credit, once the member they referred has both joined and become
    engaged: dated at the later of the two, caused by the engagement."""
    if r.credited or r.referrer is None or r.acquired_at is None or r.engaged_at is None:
        return None
    assert r.engaged_cause is not None
    return _contribution(
        rules,
        r.referrer,
        "referral_joined",
        r.joined,
        max(r.acquired_at, r.engaged_at),
        r.engaged_cause,
    )


def follow_referrals(
    held: Mapping[str, Referral], facts: Iterable[Referral], rules: Rules
) -> tuple[dict[str, Referral], list[Contribution]]:
    """The referral rows the facts change, and the credits they release (each referral is
    credited once: its row remembers it)."""
    changed: dict[str, Referral] = {}
    credits: list[Contribution] = []
    for fact in facts:
        row = changed.get(fact.joined) or held.get(fact.joined) or Referral(fact.joined)
        row = combine_referral(row, fact)
        c = referral_credit(row, rules)
        if c is not None:
            credits.append(c)
            row = replace(row, credited=True)
        changed[fact.joined] = row
    return changed, credits


def merge_referrals(
    rows: Iterable[Referral], survivor: str, merged: str, rules: Rules
) -> tuple[dict[str, Referral], list[Contribution]]:
    """Referral rows naming either member, with `merged` read as `survivor`: a self-referral
    loses its referrer, two rows for the person become one, and a referral the merge completes
    is credited."""
    out: dict[str, Referral] = {}
    credits: list[Contribution] = []
    for r in sorted(rows, key=lambda r: r.joined):
        joined = survivor if r.joined == merged else r.joined
        referrer = survivor if r.referrer == merged else r.referrer
        moved = replace(r, joined=joined, referrer=referrer)
        if referrer == joined:
            moved = replace(moved, referrer=None, acquired_at=None)
        held = out.get(joined)
        if held is not None:
            moved = replace(combine_referral(held, moved), credited=held.credited or r.credited)
        out[joined] = moved
    for joined, r in out.items():
        c = referral_credit(r, rules)
        if c is not None:
            credits.append(c)
            out[joined] = replace(r, credited=True)
    return out, credits


@dataclass(frozen=True)
class Feedback:
    """A member's product feedback (engagement's signal.product_feedback.v1), waiting for the
    clock: flagged if its author is a champion at its time, once every review up to then ran."""

    event_id: str
    member_id: str
    occurred_at: datetime
    feedback_kind: Literal["feedback", "feature_request", "bug_report"]
    source: str
    activity_id: str
    title: str | None = None
    url: str | None = None


def feedback_of(data: Contract, event_id: str, rules: Rules) -> Feedback | None:
    """Engagement's product-feedback signal as feedback to judge (staff and bots: never)."""
    if not isinstance(data, ProductFeedbackV1) or rules.excluded(data.member_id):
        return None
    return Feedback(
        event_id=event_id,
        member_id=data.member_id,
        occurred_at=data.occurred_at,
        feedback_kind=data.feedback_kind,
        source=data.source,
        activity_id=data.activity_id,
        title=data.title,
        url=data.url,
    )


def contributions_of(data: Contract, event_id: str, rules: Rules) -> list[Contribution]:
    """Dispatch by event type; clock ticks and anything else credit nobody."""
    if isinstance(data, ActivityV1):
        return from_activity(data, event_id, rules)
    if isinstance(data, PeerHelpV1):
        return from_peer_help(data, event_id, rules)
    return []  # referrals are credited through `follow_referrals`, once the member engages


# --------------------------------------------------------------------------------------------
# members and scores
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Member:
    """A member's advocacy state: lifetime score, counts per kind, the latest links."""

    member_id: str
    stage: str | None = None
    score: float = 0.0
    counts: Mapping[str, int] = field(default_factory=dict)
    links: tuple[str, ...] = ()


def _recent_links(links: Iterable[str], limit: int) -> tuple[str, ...]:
    """The newest `limit` distinct links, newest first."""
    result: list[str] = []
    for link in links:
        if link not in result:
            result.append(link)
        if len(result) == limit:
            break
    return tuple(result)


def credit(member: Member, c: Contribution, rules: Rules) -> Member:
    counts = dict(member.counts)
    counts[c.kind] = counts.get(c.kind, 0) + 1
    links = (c.link, *member.links) if c.link else member.links
    return replace(
        member,
        score=member.score + c.weight,
        counts=counts,
        links=_recent_links(links, rules.evidence_links),
    )


@dataclass(frozen=True)
class Signal:
    """A signal to emit, with what caused it (its event id is derived from that)."""

    payload: AdvocateV1 | ChampionNominatedV1 | ChampionFeedbackV1
    cause: tuple[str, ...]


# A signal's `evidence` is sorted by kind: the counts' own order follows how they were built (a
# batch's credits, or the stored row), which the pace decides, and the event must not.


def _describe(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))


REFERRAL_ONLY_KINDS: frozenset[str] = frozenset({"referral_joined"})


def gives_back(counts: Mapping[str, int]) -> bool:
    """Whether the member did something for the community besides bringing people in:
    referral credit alone is affiliate marketing, not advocacy (docs/JOURNEY-MODEL.md)."""
    return any(n > 0 and kind not in REFERRAL_ONLY_KINDS for kind, n in counts.items())


def qualifies(member: Member, rules: Rules) -> bool:
    """An advocate's bar: the lifetime score reaches the threshold, and not by referrals only."""
    return member.score >= rules.advocate_threshold and gives_back(member.counts)


def maybe_advocate(
    member: Member, c: Contribution, rules: Rules
) -> tuple[Member, list[Transition], list[Signal]]:
    """(none) -> advocate the moment the lifetime score reaches the threshold, with at least
    one contribution besides referrals (`gives_back`)."""
    if member.stage is not None or not qualifies(member, rules):
        return member, [], []
    t = Transition(
        member.member_id,
        None,
        ADVOCATE,
        f"advocacy score {member.score:g} reached {rules.advocate_threshold:g} "
        f"({_describe(member.counts)})",
        c.occurred_at,
        (c.cause_id,),
        score=member.score,
    )
    signal = AdvocateV1(
        member_id=member.member_id,
        score=member.score,
        evidence=dict(sorted(member.counts.items())),
        links=list(member.links),
        occurred_at=c.occurred_at,
    )
    return replace(member, stage=ADVOCATE), [t], [Signal(signal, (member.member_id, c.cause_id))]


# --------------------------------------------------------------------------------------------
# champion reviews, in event time
# --------------------------------------------------------------------------------------------


def boundary_at_or_before(t: datetime, period: timedelta) -> datetime:
    """The review boundary at or before `t`: boundaries are multiples of the period since the
    Unix epoch, so every replica and every replay agrees on them."""
    return EPOCH + ((t - EPOCH) // period) * period


def boundaries_due(
    last_boundary: datetime | None,
    earliest: datetime | None,
    until: datetime,
    period: timedelta,
) -> tuple[datetime | None, list[datetime]]:
    """The review boundaries the service clock passed in moving to `until`, oldest first, and
    the new last reviewed boundary. Reviews start at the boundary before the earliest
    contribution the clock has passed (`earliest`): before it nobody can be an advocate, and it
    is the same whatever the pace the log was read at, unlike the time the clock first moved."""
    if last_boundary is None:
        if earliest is None:
            return None, []
        last_boundary = boundary_at_or_before(earliest, period)
    due: list[datetime] = []
    while last_boundary + period <= until:
        last_boundary += period
        due.append(last_boundary)
    return last_boundary, due


def settlement_steps(
    pending: Iterable[Contribution],
    boundaries: Sequence[datetime],
    feedback: Iterable[Feedback] = (),
) -> list[Step]:
    """Pending contributions in event-time order (ties by key), each review placed after every
    contribution at or before its boundary (a window is start < t <= end): the order the
    events happened in, not the order partitions and topics happened to be read in. Feedback
    is placed the same way, so it is judged by the reviews before its time and no later one."""
    ordered = sorted(pending, key=lambda c: (c.occurred_at, c.key))
    notes = sorted(feedback, key=lambda f: (f.occurred_at, f.event_id))
    steps: list[Step] = []
    i = j = 0
    for boundary in sorted(boundaries):
        chunk: list[Contribution] = []
        while i < len(ordered) and ordered[i].occurred_at <= boundary:
            chunk.append(ordered[i])
            i += 1
        flagged: list[Feedback] = []
        while j < len(notes) and notes[j].occurred_at <= boundary:
            flagged.append(notes[j])
            j += 1
        steps.append(Step(tuple(chunk), (boundary,), tuple(flagged)))
    steps.append(Step(tuple(ordered[i:]), (), tuple(notes[j:])))
    return steps


@dataclass(frozen=True)
class WindowScore:
    """A member's contributions inside one review window."""

    score: float
    counts: Mapping[str, int]
    links: tuple[str, ...]
    causes: tuple[str, ...]


def window_scores(
    log: Iterable[Contribution], start: datetime, end: datetime, rules: Rules
) -> dict[str, WindowScore]:
    """Scores over start < occurred_at <= end, summed in (occurred_at, key) order so the total
    does not depend on the order the log was read in."""
    inside = sorted(
        (c for c in log if start < c.occurred_at <= end), key=lambda c: (c.occurred_at, c.key)
    )
    by_member: dict[str, list[Contribution]] = {}
    for c in inside:
        by_member.setdefault(c.member_id, []).append(c)
    result: dict[str, WindowScore] = {}
    for member_id, cs in by_member.items():
        counts: dict[str, int] = {}
        for c in cs:
            counts[c.kind] = counts.get(c.kind, 0) + 1
        newest_first = list(reversed(cs))
        result[member_id] = WindowScore(
            score=sum(c.weight for c in cs),
            counts=counts,
            links=_recent_links((c.link for c in newest_first if c.link), rules.evidence_links),
            causes=tuple(dict.fromkeys(c.cause_id for c in newest_first))[:20],
        )
    return result


def review(
    boundary: datetime,
    members: Mapping[str, Member],
    log: Iterable[Contribution],
    rules: Rules,
) -> tuple[dict[str, Member], list[Transition], list[Signal]]:
    """The champion review at `boundary`: the top N advocates by window score become (or stay)
    champions; champions out of the top N go back to advocate. Only advocates and champions
    with a positive window score rank; ties go to the higher lifetime score, then member id.
    Returns the members whose stage changed."""
    start = boundary - rules.window
    scores = window_scores(log, start, boundary, rules)
    ranked = sorted(
        (
            m
            for m in members.values()
            if m.stage in (ADVOCATE, CHAMPION)
            and m.member_id in scores
            and scores[m.member_id].score > 0
        ),
        key=lambda m: (-scores[m.member_id].score, -m.score, m.member_id),
    )[: rules.champion_top_n]
    top = {m.member_id for m in ranked}
    changed: dict[str, Member] = {}
    transitions: list[Transition] = []
    signals: list[Signal] = []
    window_text = f"the {rules.champion_window_days} days to {boundary:%Y-%m-%d}"
    for rank, m in enumerate(ranked, start=1):
        if m.stage == CHAMPION:
            continue  # still in the top N: no news
        s = scores[m.member_id]
        transitions.append(
            Transition(
                m.member_id,
                ADVOCATE,
                CHAMPION,
                f"rank {rank} of the top {rules.champion_top_n} advocates by score {s.score:g} "
                f"in {window_text} ({_describe(s.counts)})",
                boundary,
                s.causes,
                score=s.score,
            )
        )
        signals.append(
            Signal(
                ChampionNominatedV1(
                    member_id=m.member_id,
                    rank=rank,
                    score=s.score,
                    window_start=start,
                    window_end=boundary,
                    evidence=dict(sorted(s.counts.items())),
                    links=list(s.links),
                    occurred_at=boundary,
                ),
                (m.member_id, boundary.isoformat()),
            )
        )
        changed[m.member_id] = replace(m, stage=CHAMPION)
    for m in sorted(members.values(), key=lambda m: m.member_id):
        if m.stage != CHAMPION or m.member_id in top:
            continue
        s = scores.get(m.member_id, WindowScore(0.0, {}, (), ()))
        transitions.append(
            Transition(
                m.member_id,
                CHAMPION,
                ADVOCATE,
                f"not in the top {rules.champion_top_n} by score in {window_text} "
                f"(window score {s.score:g})",
                boundary,
                s.causes,
                score=s.score,
            )
        )
        changed[m.member_id] = replace(m, stage=ADVOCATE)
    return changed, transitions, signals


# --------------------------------------------------------------------------------------------
# a batch, start to end
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Snapshot:
    """What the store holds that this batch needs (a superset is fine)."""

    members: Mapping[str, Member]
    """Every member credited in the batch, and every stored advocate or champion that can rank
    in one of the batch's reviews."""
    seen_keys: frozenset[str]
    """Keys of the batch's contributions already in the log."""
    engaged: Mapping[str, int]
    """Credited engagements so far per piece of content the batch engages with."""
    log: tuple[Contribution, ...] = ()
    """Stored contributions of those members inside the batch's review windows."""


@dataclass(frozen=True)
class Step:
    """One event of the batch: its candidate contributions, and the reviews due after it."""

    contributions: tuple[Contribution, ...]
    reviews: tuple[datetime, ...] = ()
    feedback: tuple[Feedback, ...] = ()
    """Judged after the step's contributions, before its reviews."""


def flag_feedback(member: Member | None, f: Feedback) -> Signal | None:
    """signal.champion_feedback.v1 when the feedback's author is a champion at its time."""
    if member is None or member.stage != CHAMPION:
        return None
    return Signal(
        ChampionFeedbackV1(
            member_id=f.member_id,
            feedback_event_id=f.event_id,
            feedback_kind=f.feedback_kind,
            source=f.source,
            activity_id=f.activity_id,
            title=f.title,
            url=f.url,
            occurred_at=f.occurred_at,
        ),
        (f.member_id, f.event_id),
    )


@dataclass(frozen=True)
class BatchResult:
    credited: tuple[Contribution, ...]
    members: Mapping[str, Member]
    """Members that changed, in their final state."""
    transitions: tuple[Transition, ...]
    signals: tuple[Signal, ...]


def run_batch(snapshot: Snapshot, steps: Sequence[Step], rules: Rules) -> BatchResult:
    """Apply the batch in log order: credit each contribution not credited before (and within
    the content cap), promote to advocate on the spot, run each review when it falls due."""
    members = dict(snapshot.members)
    seen = set(snapshot.seen_keys)
    engaged = dict(snapshot.engaged)
    credited: list[Contribution] = []
    changed: set[str] = set()
    transitions: list[Transition] = []
    signals: list[Signal] = []
    for step in steps:
        for c in step.contributions:
            if c.key in seen:
                continue
            if c.content_id is not None:
                if engaged.get(c.content_id, 0) >= rules.content_engagement_cap:
                    continue
                engaged[c.content_id] = engaged.get(c.content_id, 0) + 1
            seen.add(c.key)
            credited.append(c)
            member = credit(members.get(c.member_id) or Member(c.member_id), c, rules)
            member, ts, ss = maybe_advocate(member, c, rules)
            members[c.member_id] = member
            changed.add(c.member_id)
            transitions += ts
            signals += ss
        for f in step.feedback:
            flag = flag_feedback(members.get(f.member_id), f)
            if flag is not None:
                signals.append(flag)
        for boundary in step.reviews:
            moved, ts, ss = review(boundary, members, (*snapshot.log, *credited), rules)
            members.update(moved)
            changed.update(moved)
            transitions += ts
            signals += ss
    return BatchResult(
        credited=tuple(credited),
        members={m: members[m] for m in sorted(changed)},
        transitions=tuple(transitions),
        signals=tuple(signals),
    )


# --------------------------------------------------------------------------------------------
# merges and erasures
# --------------------------------------------------------------------------------------------

HELP_KINDS: frozenset[str] = frozenset({"peer_help", "answer_accepted"})


def engager_of(c: Contribution) -> str | None:
    """Who engaged, for a content_engaged credit (its key ends with them)."""
    if c.kind != "content_engaged" or c.content_id is None:
        return None
    return c.key.removeprefix(f"content_engaged:{c.content_id}:")


def joined_of(c: Contribution) -> str | None:
    """Who joined, for a referral_joined credit (its key names them)."""
    return c.key.removeprefix("referral_joined:") if c.kind == "referral_joined" else None


def names(c: Contribution, member_ids: Collection[str]) -> bool:
    """Whether the contribution is credited to, or mentions, one of the members."""
    return c.member_id in member_ids or engager_of(c) in member_ids or joined_of(c) in member_ids


def rekey(c: Contribution, old: str, new: str) -> Contribution | None:
    """The contribution with member `old` read as `new` wherever it names them; None when that
    makes it self-credit (engaging with your own content, referring yourself)."""
    member = new if c.member_id == old else c.member_id
    key = c.key
    if c.kind in HELP_KINDS and c.member_id == old:
        key = f"{c.kind}:{new}:" + key.removeprefix(f"{c.kind}:{old}:")
    elif (engager := engager_of(c)) is not None:
        engager = new if engager == old else engager
        if engager == member:
            return None
        key = f"content_engaged:{c.content_id}:{engager}"
    elif (joined := joined_of(c)) is not None:
        joined = new if joined == old else joined
        if joined == member:
            return None
        key = f"referral_joined:{joined}"
    return replace(c, member_id=member, key=key)


def merge_contributions(
    contributions: Iterable[Contribution], survivor: str, merged: str
) -> tuple[Contribution, ...]:
    """The contributions naming either member, re-credited to the survivor: one act is still
    credited once (two ids helping in one thread, or engaging with one piece, are one person
    helping or engaging once: the earliest is kept), and what became self-credit is dropped."""
    kept: dict[str, Contribution] = {}
    for c in sorted(contributions, key=lambda c: (c.occurred_at, c.key)):
        moved = rekey(c, merged, survivor)
        if moved is not None and moved.key not in kept:
            kept[moved.key] = moved
    return tuple(kept.values())


def rebuild(member_id: str, stage: str | None, log: Iterable[Contribution], rules: Rules) -> Member:
    """A member's score, counts and links from their contributions (in event-time order)."""
    cs = sorted(log, key=lambda c: (c.occurred_at, c.key))
    counts: dict[str, int] = {}
    for c in cs:
        counts[c.kind] = counts.get(c.kind, 0) + 1
    return Member(
        member_id=member_id,
        stage=stage,
        score=sum(c.weight for c in cs),
        counts=counts,
        links=_recent_links((c.link for c in reversed(cs) if c.link), rules.evidence_links),
    )


def merge_members(
    survivor: Member | None,
    merged: Member | None,
    merge: tuple[str, str, str],
    log: Sequence[Contribution],
    last_boundary: datetime | None,
    rules: Rules,
) -> tuple[Member | None, list[Transition], list[Signal]]:
    """The survivor's advocacy after the merge, judged again from its re-credited
    contributions `log` (`merge` is survivor id, merged id, merge event id):

    - a survivor with no stage takes the merged id's (no transition: the journey view folds
      the merged id's stages into the survivor's); neither having one, it is an advocate if the
      combined score reaches the threshold, dated at the contribution that crossed it;
    - an advocate merged with a champion is a champion for the rest of the period (the title is
      the person's), dated at the later of the period's start and the newest contribution;
    - otherwise the survivor keeps its stage.
    """
    survivor_id, merged_id, cause = merge
    if survivor is None and merged is None and not log:
        return None, [], []
    stage = survivor.stage if survivor is not None else None
    other = merged.stage if merged is not None else None
    member = rebuild(survivor_id, stage or other, log, rules)
    transitions: list[Transition] = []
    signals: list[Signal] = []
    if stage == ADVOCATE and other == CHAMPION:
        when = max([last_boundary or EPOCH, *(c.occurred_at for c in log)])
        transitions.append(
            Transition(
                survivor_id,
                ADVOCATE,
                CHAMPION,
                f"merged with {merged_id}, a champion of the period from "
                f"{(last_boundary or when):%Y-%m-%d}",
                when,
                (cause,),
                score=member.score,
            )
        )
        member = replace(member, stage=CHAMPION)
    if member.stage is None and qualifies(member, rules):
        total = 0.0
        counts: dict[str, int] = {}
        crossed = log[-1]
        for c in sorted(log, key=lambda c: (c.occurred_at, c.key)):
            total += c.weight
            counts[c.kind] = counts.get(c.kind, 0) + 1
            if total >= rules.advocate_threshold and gives_back(counts):
                crossed = c
                break
        transitions.append(
            Transition(
                survivor_id,
                None,
                ADVOCATE,
                f"merged with {merged_id}: advocacy score {member.score:g} reached "
                f"{rules.advocate_threshold:g} ({_describe(member.counts)})",
                crossed.occurred_at,
                (cause,),
                score=member.score,
            )
        )
        signals.append(
            Signal(
                AdvocateV1(
                    member_id=survivor_id,
                    score=member.score,
                    evidence=dict(sorted(member.counts.items())),
                    links=list(member.links),
                    occurred_at=crossed.occurred_at,
                ),
                (survivor_id, cause),
            )
        )
        member = replace(member, stage=ADVOCATE)
    return member, transitions, signals


ERASED_KEY = "erased-"


def anonymize(c: Contribution, erased: Collection[str], tag: Callable[[str], str]) -> Contribution:
    """Someone else's credit that names an erased member (who engaged with their content, who
    they referred) keeps its weight, without the id: it is that member's contribution, and the
    erased person's later events are ignored anyway. `tag` names the erased member by a
    pseudonym, so two erased engagers of one piece stay two credits."""
    if (engager := engager_of(c)) is not None and engager in erased:
        return replace(c, key=f"content_engaged:{c.content_id}:{ERASED_KEY}{tag(engager)}")
    if (joined := joined_of(c)) is not None and joined in erased:
        return replace(c, key=f"referral_joined:{ERASED_KEY}{tag(joined)}")
    return c


def uncredit(member: Member, dropped: Iterable[Contribution]) -> Member:
    """A member without credits a merge found to be one act twice (or self-credit)."""
    counts = dict(member.counts)
    score = member.score
    for c in dropped:
        score -= c.weight
        counts[c.kind] = counts.get(c.kind, 0) - 1
        if counts[c.kind] <= 0:
            del counts[c.kind]
    return replace(member, score=max(score, 0.0), counts=counts)
