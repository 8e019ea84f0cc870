"""Awareness rules: discovery, first touch, joining and conversion. Pure functions, no I/O.

Stages: visitor -> member -> considering -> customer, and the customer's retention: retained,
lapsed, churned (docs/JOURNEY-MODEL.md maps the articles' five stages onto this). Every
outcome depends only on the activity and the state of the person it is keyed by, so a replay
of the log gives the same transitions; the cross-key facts (a visitor's anonymous history
joining the member at sign-up: first touch, first evaluation) are merged with `min`, which
gives the same result in any order.

One module though over 400 lines: it is one stage's rules (an activity, a batch, a merge, an
erasure), read together against docs/JOURNEY-MODEL.md; split, each part would import the rest.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import cast
from urllib.parse import urlparse

from shared.contracts import (
    ActivityV1,
    FirstTouchV1,
    MemberAcquiredV1,
    MemberErasedV1,
    ProspectIntentV1,
    TouchChannel,
    TransitionDetails,
)
from shared.journey import Transition
from shared.rules import strict_rules

VISITOR, MEMBER, CONSIDERING, CUSTOMER = "visitor", "member", "considering", "customer"
RETAINED, LAPSED, CHURNED = "retained", "lapsed", "churned"
MERGED = "merged"  # an anonymous visitor id whose history joined a member at sign-up
CUSTOMER_STAGES = frozenset({CUSTOMER, RETAINED, LAPSED, CHURNED})
"""Stages of someone who bought: the retention stages are a customer's."""
PRE_CUSTOMER = (VISITOR, MEMBER, CONSIDERING)
STAGE_ORDER = {
    VISITOR: 0,
    MEMBER: 1,
    CONSIDERING: 2,
    CUSTOMER: 3,
    RETAINED: 3,
    LAPSED: 3,
    CHURNED: 3,
}
"""How far along the funnel a stage is (a merge keeps the furthest); the retention stages are
as far as `customer`: they say how the customer is doing, not a further step."""
LEGAL_MOVES = {
    (VISITOR, MERGED),
    (None, VISITOR),
    (None, MEMBER),
    (None, CUSTOMER),
    (VISITOR, MEMBER),
    (MEMBER, CONSIDERING),
    (VISITOR, CUSTOMER),
    (MEMBER, CUSTOMER),
    (CONSIDERING, CUSTOMER),
    # retention, from the CRM's renewals, repeat purchases, downgrades and cancellations
    (CUSTOMER, RETAINED),
    (CUSTOMER, LAPSED),
    (CUSTOMER, CHURNED),
    (RETAINED, LAPSED),
    (RETAINED, CHURNED),
    (LAPSED, RETAINED),
    (LAPSED, CHURNED),
    (CHURNED, CUSTOMER),  # won back: a new purchase starts a new customer spell
    # a merge takes the furthest stage: a survivor who never bought takes the other id's
    *((s, c) for s in PRE_CUSTOMER for c in (RETAINED, LAPSED, CHURNED)),
}


@strict_rules
class Rules:
    """Defaults are documented in docs/JOURNEY-MODEL.md; override in the [awareness] section.
    An unknown key is an error (a typo must not pass silently)."""

    search_hosts: tuple[str, ...] = (
        "google.",
        "bing.",
        "duckduckgo.",
        "yahoo.",
        "baidu.",
        "yandex.",
        "ecosia.",
        "kagi.",
    )
    social_hosts: tuple[str, ...] = (
        "twitter.com",
        "x.com",
        "linkedin.com",
        "facebook.com",
        "reddit.com",
        "news.ycombinator.com",
        "youtube.com",
        "bsky.app",
        "mastodon.",
    )
    community_sources: tuple[str, ...] = ("discourse", "github", "slack", "discord", "forum")
    community_hosts: tuple[str, ...] = ()
    customer_kinds: tuple[str, ...] = ("purchase", "trial_started")
    customer_sources: tuple[str, ...] = ("product", "crm", "billing", "api")
    intent_kinds: tuple[str, ...] = ("post", "reply")
    intent_tags: tuple[str, ...] = (
        "pricing",
        "enterprise",
        "sso",
        "billing",
        "integration",
        "license",
        "quote",
        "procurement",
    )
    intent_phrases: tuple[str, ...] = (
        "pricing",
        "how much",
        "enterprise plan",
        "sso",
        "saml",
        "integrate with",
        "integration with",
        "volume discount",
        "quote",
        "purchase order",
        "license",
    )
    touchpoints_kept: int = 20
    consideration_kinds: tuple[str, ...] = ("demo_request", "comparison_view", "product_view")
    """Activity kinds that are a product evaluation by themselves (a deployment's own kinds)."""
    consideration_paths: tuple[str, ...] = (
        "/docs",
        "/pricing",
        "/compare",
        "/vs",
        "/product",
        "/features",
        "/case-studies",
        "/customers",
    )
    """URL path prefixes (of a page view's `properties.url`/`path` or target URL) whose reading
    is evaluating the product: docs, pricing, comparisons. Matched on whole path segments."""
    consideration_sources: tuple[str, ...] = ()
    """Sources any of whose page views count as consideration (e.g. "docs" for a docs site that
    sends its own page views). Default none: reading a community thread is awareness."""
    renewal_kinds: tuple[str, ...] = ("renewal",)
    repeat_purchase_kinds: tuple[str, ...] = ("purchase",)
    downgrade_kinds: tuple[str, ...] = ("downgrade",)
    cancellation_kinds: tuple[str, ...] = ("cancellation",)
    team_member_ids: tuple[str, ...] = ()
    bot_member_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class Touch:
    """How a person came: search, social, community, campaign, referral or direct."""

    channel: str
    detail: str | None
    at: datetime
    activity_id: str

    def earlier(self, other: Touch | None) -> Touch:
        """The earlier of two touches (by time, then activity id); this one on a tie."""
        if other is None or (self.at, self.activity_id) <= (other.at, other.activity_id):
            return self
        return other


@dataclass(frozen=True)
class Person:
    member_id: str
    stage: str
    first_seen_at: datetime
    first_touch: Touch | None = None
    joined_at: datetime | None = None
    referred_by: str | None = None
    customer_at: datetime | None = None
    touchpoint_ids: tuple[str, ...] = ()  # latest community activities before conversion
    touchpoints: int = 0
    considered_at: datetime | None = None  # first evaluation of the product (considering)
    considered_by: str | None = None  # the activity id of that evaluation
    renewals: int = 0  # renewals and repeat purchases from the CRM


@dataclass(frozen=True)
class Outcome:
    person: Person | None
    transitions: list[Transition] = field(default_factory=list)
    acquired: MemberAcquiredV1 | None = None
    intent: ProspectIntentV1 | None = None
    merge_from: str | None = None  # an anonymous id whose history joins this member


def counts(activity: ActivityV1, rules: Rules) -> bool:
    """Team members and bots never move anyone's stage."""
    actor = activity.actor
    return not (
        actor.is_team_member
        or actor.is_bot
        or actor.member_id in rules.team_member_ids
        or actor.member_id in rules.bot_member_ids
    )


def _host(url: object) -> str:
    return (urlparse(url).hostname or "").lower() if isinstance(url, str) else ""


def classify_touch(activity: ActivityV1, rules: Rules) -> Touch:
    """First-touch channel of an activity, from its properties (referrer URL, UTM tags,
    referral) and its source."""
    props = activity.properties
    at, aid = activity.occurred_at, activity.activity_id
    referred_by = props.get("referred_by")
    if isinstance(referred_by, str) and referred_by and referred_by != activity.actor.member_id:
        return Touch("referral", referred_by, at, aid)
    utm = props.get("utm_campaign") or props.get("utm_source")
    if isinstance(utm, str) and utm:
        return Touch("campaign", utm, at, aid)
    host = _host(props.get("referrer"))
    if host and any(h in host for h in rules.search_hosts):
        return Touch("search", host, at, aid)
    if host and any(
        host == h or host.endswith("." + h) or (h.endswith(".") and h in host)
        for h in rules.social_hosts
    ):
        return Touch("social", host, at, aid)
    if activity.source in rules.community_sources or (
        host and any(host.endswith(h) for h in rules.community_hosts)
    ):
        detail = activity.target.url if activity.target and activity.target.url else None
        return Touch("community", detail or activity.source, at, aid)
    return Touch("direct", None, at, aid)


def referrer_of(activity: ActivityV1) -> str | None:
    value = activity.properties.get("referred_by")
    if isinstance(value, str) and value and value != activity.actor.member_id:
        return value
    return None


def prospect_intent(activity: ActivityV1, person: Person | None, rules: Rules) -> list[str]:
    """What in a non-customer's question shows buying intent (empty: none)."""
    if activity.kind not in rules.intent_kinds or (person and person.stage == CUSTOMER):
        return []
    tags = activity.properties.get("tags")
    matched = (
        [t for t in tags if isinstance(t, str) and t.lower() in rules.intent_tags]
        if isinstance(tags, list)
        else []
    )
    text = " ".join(
        s
        for s in (
            activity.properties.get("text"),
            activity.target.thread_title if activity.target else None,
        )
        if isinstance(s, str)
    ).lower()
    matched += [p for p in rules.intent_phrases if contains_phrase(text, p)]
    return sorted(set(matched))


def contains_phrase(text: str, phrase: str) -> bool:
    """`phrase` occurs in `text` as whole words: "sso" is in "SSO login?" but not in "Which
    lesson covers replays?"; "integrate with" is in "integrate with okta". Case-insensitive,
    whitespace inside the phrase matches any run of whitespace."""
    compiled = _phrase_pattern(phrase)
    if compiled is None:
        return False
    first_word, pattern = compiled
    text = text.lower()
    # A match needs the first word as it is: looking for it first skips the pattern's scan
    # (a lookbehind at every position) in most texts: 184 -> 30 us for the default phrases
    # over a 1 KB forum post.
    return first_word in text and pattern.search(text) is not None


@functools.lru_cache(maxsize=1024)
def _phrase_pattern(phrase: str) -> tuple[str, re.Pattern[str]] | None:
    """Built once per phrase: escaping and joining the words for every activity was an
    eighth of awareness's CPU in a history import (docs/PERFORMANCE.md, fourth round)."""
    words = phrase.lower().split()
    if not words:
        return None
    return words[0], re.compile(r"(?<!\w)" + r"\s+".join(re.escape(w) for w in words) + r"(?!\w)")


def _path_of(activity: ActivityV1) -> str:
    for value in (
        activity.properties.get("url"),
        activity.properties.get("path"),
        activity.target.url if activity.target else None,
    ):
        if isinstance(value, str) and value:
            return (urlparse(value).path or "/") if "://" in value else value
    return ""


def considers(activity: ActivityV1, intent: Sequence[str], rules: Rules) -> str | None:
    """What makes this activity an evaluation of the product (None: it is not one): one of the
    consideration kinds, a page view of the docs, pricing or a comparison, or a pre-sales
    question (prospect intent)."""
    if activity.kind in rules.consideration_kinds:
        return activity.kind.replace("_", " ")
    if activity.kind == "page_view":
        path = _path_of(activity).lower().rstrip("/")
        for prefix in rules.consideration_paths:
            p = prefix.lower().rstrip("/")
            if p and (path == p or path.startswith(p + "/") or path.startswith(p + "-")):
                return f"read {path}"
        if activity.source in rules.consideration_sources:
            return f"read {path or activity.source}"
    if intent:
        return f"asked about {', '.join(intent)}"
    return None


def touch_details(person: Person, **extra: object) -> TransitionDetails:
    """First touch (and anything else) as a transition's structured details."""
    touch = person.first_touch
    channel = cast(
        "TouchChannel | None",
        touch.channel if touch else None,
    )
    detail = touch.detail[:500] if touch and touch.detail else None
    return TransitionDetails.model_validate(
        {"first_touch_channel": channel, "first_touch_detail": detail, **extra}
    )


def settled_first_touch(person: Person) -> FirstTouchV1 | None:
    """member.first_touch.v1 for a member whose joining the clock has passed (None: not a
    member yet). Pure: the handler picks who is due."""
    if person.joined_at is None:
        return None
    touch = person.first_touch
    return FirstTouchV1(
        member_id=person.member_id,
        channel=cast("TouchChannel | None", touch.channel if touch else None),
        detail=touch.detail[:500] if touch and touch.detail else None,
        first_seen_at=person.first_seen_at,
        joined_at=person.joined_at,
        occurred_at=person.joined_at,
    )


def _first_consideration(a: Person, b: Person) -> tuple[datetime | None, str | None]:
    both = [(p.considered_at, p.considered_by or "") for p in (a, b) if p.considered_at is not None]
    if not both:
        return None, None
    at, by = min(both)
    return at, by or None


def merge_history(member: Person, visitor: Person) -> Person:
    """A visitor's anonymous history joins the member: earliest first touch, first sight and
    first evaluation of the product."""
    touch = (
        visitor.first_touch.earlier(member.first_touch)
        if visitor.first_touch
        else member.first_touch
    )
    considered_at, considered_by = _first_consideration(member, visitor)
    return replace(
        member,
        first_touch=touch,
        first_seen_at=min(member.first_seen_at, visitor.first_seen_at),
        considered_at=considered_at,
        considered_by=considered_by,
    )


def _retention_move(person: Person, activity: ActivityV1, rules: Rules) -> str | None:
    """The retention stage a CRM activity moves a customer to (None: no move)."""
    kind, stage = activity.kind, person.stage
    if kind in rules.cancellation_kinds and stage in (CUSTOMER, RETAINED, LAPSED):
        return CHURNED
    if kind in rules.downgrade_kinds and stage in (CUSTOMER, RETAINED):
        return LAPSED
    if (kind in rules.renewal_kinds or kind in rules.repeat_purchase_kinds) and stage in (
        CUSTOMER,
        LAPSED,
    ):
        return RETAINED
    return None


def observe(person: Person | None, activity: ActivityV1, rules: Rules) -> Outcome:
    """Fold one activity into the awareness state of the person it is keyed by."""
    if not counts(activity, rules):
        return Outcome(person)
    at, aid = activity.occurred_at, activity.activity_id
    member_id = activity.actor.member_id
    touch = classify_touch(activity, rules)
    transitions: list[Transition] = []
    from_crm = activity.source in rules.customer_sources
    converts = from_crm and (
        activity.kind in rules.customer_kinds
        or activity.kind in rules.renewal_kinds
        or activity.kind in rules.repeat_purchase_kinds
    )
    intent_matched = prospect_intent(activity, person, rules)

    def move(
        current: Person | None,
        to: str,
        reason: str,
        caused_by: tuple[str, ...] = (aid,),
        details: TransitionDetails | None = None,
    ) -> None:
        transitions.append(
            Transition(
                member_id,
                current.stage if current else None,
                to,
                reason,
                at,
                caused_by,
                details=details,
            )
        )

    if person is None:
        person = Person(
            member_id,
            VISITOR if activity.actor.anonymous else MEMBER,
            first_seen_at=at,
            first_touch=touch,
            joined_at=None if activity.actor.anonymous else at,
        )
        if activity.kind != "signup" and not converts:
            if activity.actor.anonymous:
                move(
                    None,
                    VISITOR,
                    f"first touch: {activity.kind} on {activity.source} ({touch.channel})",
                    details=touch_details(person),
                )
            else:
                move(
                    None,
                    MEMBER,
                    f"first seen as a member ({activity.kind} on {activity.source})",
                    details=touch_details(person),
                )
        created = True
    else:
        first_touch = touch.earlier(person.first_touch)
        if first_touch is not person.first_touch or at < person.first_seen_at:
            # only an activity older than everything known moves either (few do)
            person = replace(
                person, first_touch=first_touch, first_seen_at=min(person.first_seen_at, at)
            )
        created = False
    evaluation = None if converts else considers(activity, intent_matched, rules)
    if evaluation and person.stage in PRE_CUSTOMER:
        first = _first_consideration(person, replace(person, considered_at=at, considered_by=aid))
        person = replace(person, considered_at=first[0], considered_by=first[1])

    acquired = None
    merge_from = None
    if activity.kind == "signup" and (created or person.stage == VISITOR):
        anonymous_id = activity.properties.get("anonymous_id")
        merge_from = (
            anonymous_id
            if isinstance(anonymous_id, str) and anonymous_id and anonymous_id != member_id
            else None
        )
        referrer = referrer_of(activity)
        came_from = f", referred by {referrer}" if referrer else ""
        was_visitor = merge_from is not None or not created
        move(
            replace(person, stage=VISITOR) if was_visitor else None,
            MEMBER,
            f"signed up on {activity.source}{came_from}",
            details=touch_details(person),
        )
        person = replace(person, stage=MEMBER, joined_at=at, referred_by=referrer)
        if merge_from is not None:
            # The anonymous id is no longer an open visitor: it is this member now. Emitted
            # from the sign-up, so it is the same whichever partition is read first.
            transitions.append(
                Transition(merge_from, VISITOR, MERGED, f"signed up as {member_id}", at, (aid,))
            )
        if referrer:
            acquired = MemberAcquiredV1(
                member_id=member_id,
                via="referral",
                referrer_member_id=referrer,
                occurred_at=at,
                activity_id=aid,
            )

    elif converts and person.stage not in CUSTOMER_STAGES:
        influence = (
            f"after {person.touchpoints} community touchpoints (community-influenced)"
            if person.touchpoints
            else "with no community touchpoint before it"
        )
        transitions.append(
            Transition(
                member_id,
                None if created else person.stage,
                CUSTOMER,
                f"{activity.kind.replace('_', ' ')} from {activity.source} {influence}",
                at,
                (aid, *person.touchpoint_ids),
                details=touch_details(
                    person,
                    community_touchpoints=person.touchpoints,
                    community_influenced=person.touchpoints > 0,
                    considered=person.stage == CONSIDERING,
                ),
            )
        )
        person = replace(person, stage=CUSTOMER, customer_at=at)

    elif converts and person.stage == CHURNED:
        move(person, CUSTOMER, f"won back: {activity.kind.replace('_', ' ')} after churning")
        person = replace(person, stage=CUSTOMER, customer_at=at)

    elif from_crm and (to := _retention_move(person, activity, rules)) is not None:
        renewed = to == RETAINED
        move(person, to, f"{activity.kind.replace('_', ' ')} from {activity.source}")
        person = replace(person, stage=to, renewals=person.renewals + renewed)

    elif (
        from_crm
        and person.stage == RETAINED
        and (activity.kind in rules.renewal_kinds or activity.kind in rules.repeat_purchase_kinds)
    ):
        person = replace(person, renewals=person.renewals + 1)

    elif evaluation and person.stage == MEMBER:
        # Only the member's own evaluation moves it (its own partition, read in order): an
        # anonymous visitor's is kept (considered_at, merged into the member's at sign-up) but
        # moves nobody, since which of the two ids is read first depends on the partitions.
        transitions.append(
            Transition(
                member_id,
                person.stage,
                CONSIDERING,
                f"evaluating the product: {evaluation} ({activity.source})",
                at,
                (aid,),
                details=touch_details(person),
            )
        )
        person = replace(person, stage=CONSIDERING)

    if (
        activity.source in rules.community_sources
        and activity.kind != "signup"
        and person.stage in PRE_CUSTOMER
    ):
        person = replace(
            person,
            touchpoints=person.touchpoints + 1,
            touchpoint_ids=(*person.touchpoint_ids, aid)[-rules.touchpoints_kept :],
        )

    intent = None
    matched = intent_matched
    if matched:
        target = activity.target
        text = activity.properties.get("text")
        intent = ProspectIntentV1(
            member_id=member_id,
            thread_id=target.thread_id if target else None,
            url=target.url if target else None,
            matched=matched,
            excerpt=text[:500] if isinstance(text, str) else None,
            occurred_at=at,
            activity_id=aid,
        )
    return Outcome(person, transitions, acquired, intent, merge_from)


# --------------------------------------------------------------------------------------------
# a batch
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Caused:
    """An event an activity brings about besides transitions (a member acquired by referral, a
    prospect's intent); its id is derived from the activity."""

    payload: MemberAcquiredV1 | ProspectIntentV1
    activity_id: str


@dataclass(frozen=True)
class BatchOutcome:
    changed: dict[str, Person]
    """The people to save."""
    new_aliases: dict[str, str]
    """Anonymous visitor id -> member id, linked by a sign-up in this batch."""
    emitted: list[Transition | Caused]
    """What to emit, in the order the activities caused it."""


def loads(activities: Sequence[ActivityV1], aliases: Mapping[str, str]) -> set[str]:
    """The people a batch reads: its actors, the members their anonymous ids belong to, and
    the visitors that sign-ups link."""
    wanted = {a.actor.member_id for a in activities} | set(aliases.values())
    wanted |= {
        v
        for a in activities
        if a.kind == "signup" and isinstance(v := a.properties.get("anonymous_id"), str)
    }
    return wanted


def fold_batch(
    people: Mapping[str, Person],
    aliases: Mapping[str, str],
    activities: Sequence[ActivityV1],
    rules: Rules,
) -> BatchOutcome:
    """Fold a batch of activities, in order, into the people they concern (`people`: those
    `loads` names; `aliases`: the known members of the batch's anonymous actors)."""
    people = dict(people)
    aliases = dict(aliases)
    changed: set[str] = set()
    new_aliases: dict[str, str] = {}
    emitted: list[Transition | Caused] = []

    for activity in activities:
        member_id = activity.actor.member_id
        outcome = observe(people.get(member_id), activity, rules)
        if outcome.person is not None and outcome.person != people.get(member_id):
            people[member_id] = outcome.person
            changed.add(member_id)
        transitions = list(outcome.transitions)
        # A visitor's history joins its member, whichever of the two arrives first.
        link = None
        if outcome.merge_from:
            link = (outcome.merge_from, member_id)
            aliases[outcome.merge_from] = new_aliases[outcome.merge_from] = member_id
        elif member_id in aliases:
            link = (member_id, aliases[member_id])
        if link and link[0] in people and link[1] in people:
            visitor_id, owner_id = link
            merged = merge_history(people[owner_id], people[visitor_id])
            if merged != people[owner_id]:
                people[owner_id] = merged
                changed.add(owner_id)

        emitted.extend(transitions)
        if outcome.acquired is not None:
            emitted.append(Caused(outcome.acquired, activity.activity_id))
        if outcome.intent is not None:
            emitted.append(Caused(outcome.intent, activity.activity_id))

    return BatchOutcome({m: people[m] for m in changed}, new_aliases, emitted)


# --------------------------------------------------------------------------------------------
# merges: two member ids are one person
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MergeOutcome:
    person: Person | None
    transitions: list[Transition] = field(default_factory=list)


def _earliest(*times: datetime | None) -> datetime | None:
    return min((t for t in times if t is not None), default=None)


def _stage_time(person: Person) -> datetime:
    """When the person entered their current stage (as far as the state tells)."""
    if person.stage in CUSTOMER_STAGES and person.customer_at is not None:
        return person.customer_at
    if person.stage == MEMBER and person.joined_at is not None:
        return person.joined_at
    return person.first_seen_at


def merge_people(
    survivor: Person | None,
    merged: Person | None,
    survivor_id: str,
    merged_id: str,
    cause: str,
    rules: Rules,
) -> MergeOutcome:
    """One person out of two: the earliest first touch and first sight, the furthest stage,
    both touchpoint histories, the referrer of whichever joined first.

    A survivor never seen here takes the merged person's state as it is (no transition: the
    journey view folds the merged id's stages into the survivor's). A survivor that moves up
    (e.g. member -> customer, because the merged id bought) gets a transition dated when the
    merged id reached that stage, never before the survivor's own stage (its timeline only
    moves forward), caused by the merge event.
    """
    if merged is None:
        return MergeOutcome(survivor)
    if survivor is None:
        return MergeOutcome(replace(merged, member_id=survivor_id))
    first_joined = sorted(
        (p for p in (survivor, merged) if p.joined_at is not None),
        key=lambda p: p.joined_at or p.first_seen_at,
    )
    referrer = next((p.referred_by for p in first_joined if p.referred_by), None)
    if referrer in (survivor_id, merged_id):
        referrer = None
    stage = max((survivor.stage, merged.stage), key=lambda s: STAGE_ORDER.get(s, -1))
    touch = (
        merged.first_touch.earlier(survivor.first_touch)
        if merged.first_touch
        else survivor.first_touch
    )
    person = Person(
        member_id=survivor_id,
        stage=stage,
        first_seen_at=min(survivor.first_seen_at, merged.first_seen_at),
        first_touch=touch,
        joined_at=_earliest(survivor.joined_at, merged.joined_at),
        referred_by=referrer,
        customer_at=_earliest(survivor.customer_at, merged.customer_at),
        touchpoint_ids=tuple(dict.fromkeys((*survivor.touchpoint_ids, *merged.touchpoint_ids)))[
            -rules.touchpoints_kept :
        ],
        touchpoints=survivor.touchpoints + merged.touchpoints,
        considered_at=_first_consideration(survivor, merged)[0],
        considered_by=_first_consideration(survivor, merged)[1],
        renewals=survivor.renewals + merged.renewals,
    )
    if stage == survivor.stage or (survivor.stage, stage) not in LEGAL_MOVES:
        return MergeOutcome(person)
    reached = _stage_time(merged)
    when = max(reached, _stage_time(survivor))
    t = Transition(
        survivor_id,
        survivor.stage,
        stage,
        f"merged with {merged_id}, a {stage} since {reached.isoformat()}",
        when,
        (cause,),
    )
    return MergeOutcome(person, [t])


def erasure_cascade(anonymous_ids: Iterable[str], occurred_at: datetime) -> list[MemberErasedV1]:
    """An erased member's anonymous visitor ids are erased with them, and only awareness knows
    them: it tells everyone else (the journey view holds their visitor transitions)."""
    return [MemberErasedV1(member_id=a, occurred_at=occurred_at) for a in sorted(anonymous_ids)]
