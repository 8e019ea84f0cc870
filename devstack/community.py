"""A simulated community for the demo: a few hundred people over simulated weeks.

Deterministic for a seed. People discover the community through search, social, campaigns,
community content or a member's referral; some read the docs and the pricing page before they
sign up (considering); most sign up; some ask, some answer, some get their answers accepted,
publish, speak and invite others (whose sign-ups close the loop); some buy, renew every 30 days
while they take part, downgrade, or cancel once they went quiet; some newcomers go quiet within
weeks (the honeymoon drop-off) and some come back. Questions nobody answers for two days get a
staff reply (unanswered first); members send feedback, feature requests and bug reports. Staff
and a bot take part too and must never count.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

START = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)

CHANNELS = {
    "search": {"referrer": "https://www.google.com/search?q=flywheel+community"},
    "social": {"referrer": "https://news.ycombinator.com/item?id=4242"},
    "campaign": {"utm_source": "newsletter", "utm_campaign": "summer-launch"},
    "community": {},
    "direct": {},
}
TOPICS = ["install", "kafka lag", "webhooks", "scoring", "exports", "sso", "pricing", "api"]
EVALUATION_PAGES = ["/docs/getting-started", "/pricing", "/compare/orbit", "/docs/webhooks"]
FEEDBACK = [
    ("feature_request", "Could the webhook payloads include the thread title?"),
    ("bug_report", "The export stops at 10,000 rows"),
    ("feedback", "The new onboarding guide was great"),
]


@dataclass
class Person:
    index: int
    archetype: str
    arrives: float  # day
    channel: str
    referred_by: str | None = None
    member: bool = False
    quits_on: float | None = None
    returns_on: float | None = None
    bought_on: float | None = None
    cancelled: bool = False

    @property
    def anonymous_id(self) -> str:
        return f"anon-{self.index:04d}"

    @property
    def member_id(self) -> str:
        return f"m-{self.index:04d}"


@dataclass
class Community:
    seed: int = 7
    people: int = 300
    weeks: int = 20
    start: datetime = START
    activities: list[dict[str, Any]] = field(default_factory=list)
    open_questions: list[tuple[str, str, float]] = field(default_factory=list)  # thread, asker
    _count: int = 0

    def _at(self, day: float) -> str:
        return (self.start + timedelta(days=day)).isoformat()

    def add(
        self,
        day: float,
        actor: dict[str, Any],
        kind: str,
        *,
        source: str = "discourse",
        target: dict[str, Any] | None = None,
        extra: dict[str, Any] | None = None,
        **properties: Any,
    ) -> str:
        self._count += 1
        activity_id = f"demo-{self.seed}-{self._count:06d}"
        activity: dict[str, Any] = {
            "activity_id": activity_id,
            "occurred_at": self._at(day),
            "source": source,
            "kind": kind,
            "actor": actor,
            "properties": {**(extra or {}), **properties},
        }
        if target:
            activity["target"] = target
        self.activities.append(activity)
        return activity_id


ARCHETYPES = [
    ("lurker", 0.35),
    ("participant", 0.30),
    ("helper", 0.15),
    ("advocate", 0.06),
    ("churner", 0.09),
    ("returner", 0.05),
    ("buyer", 0.05),  # buys soon after joining and never takes part; renews, or cancels
]


def simulate(people: int = 300, weeks: int = 20, seed: int = 7) -> list[dict[str, Any]]:
    """The community's activities, in event-time order."""
    rng = random.Random(seed)
    c = Community(seed=seed, people=people, weeks=weeks)
    days = weeks * 7
    population: list[Person] = []
    names, weights = zip(*ARCHETYPES, strict=True)

    def new_person(arrives: float, channel: str, referred_by: str | None = None) -> Person:
        p = Person(len(population), rng.choices(names, weights)[0], arrives, channel, referred_by)
        if p.archetype == "churner":
            p.quits_on = arrives + rng.uniform(14, 28)
        if p.archetype == "buyer":
            p.quits_on = arrives + rng.uniform(20, 120)  # the subscription ends then
        if p.archetype == "returner":
            p.quits_on = arrives + rng.uniform(10, 20)
            p.returns_on = p.quits_on + rng.uniform(40, 60)
        population.append(p)
        return p

    for _ in range(people):
        channel = rng.choices(list(CHANNELS), [0.3, 0.2, 0.15, 0.2, 0.15])[0]
        new_person(rng.uniform(0, days * 0.55), channel)

    staff = {"member_id": "staff-ana", "is_team_member": True, "handle": "ana (staff)"}
    bot = {"member_id": "bot-welcome", "is_bot": True, "handle": "welcome-bot"}

    for day in range(days):
        for p in list(population):
            if p.arrives > day + 1:
                continue
            if p.arrives >= day:  # arrival day: discover, maybe sign up
                _discover(c, rng, p)
                continue
            if not p.member:
                continue
            active = not (
                p.quits_on and p.quits_on <= day and not (p.returns_on and p.returns_on <= day)
            )
            if active:
                _participate(c, rng, p, day + rng.random(), population, new_person)
            _subscription(c, rng, p, day, active)
        # staff answers what nobody answered for two days; the bot greets
        for thread, asker, asked in list(c.open_questions):
            if day - asked > 2:
                c.add(
                    day + 0.5,
                    staff,
                    "reply",
                    target={
                        "thread_id": thread,
                        "thread_author_member_id": asker,
                        "thread_is_question": True,
                    },
                )
                c.open_questions.remove((thread, asker, asked))
        if day % 7 == 0:
            c.add(
                day + 0.1,
                bot,
                "post",
                target={"thread_id": f"weekly-{day}"},
                text="Welcome to this week's newcomers!",
            )
    c.activities.sort(key=lambda a: (a["occurred_at"], a["activity_id"]))
    return c.activities


def _discover(c: Community, rng: random.Random, p: Person) -> None:
    day = p.arrives
    props: dict[str, Any] = dict(CHANNELS[p.channel])
    source = "discourse" if p.channel == "community" else "web"
    if p.referred_by:
        props = {"referral": True}
    for _ in range(rng.randint(1, 3)):
        c.add(
            day,
            {"member_id": p.anonymous_id, "anonymous": True},
            "page_view",
            source=source,
            extra=props,
        )
        day += rng.uniform(0.01, 0.3)
        props = {}
    evaluating = rng.random() < 0.3
    if evaluating:  # a prospect evaluating the product before joining
        page = rng.choice(EVALUATION_PAGES)
        c.add(
            day,
            {"member_id": p.anonymous_id, "anonymous": True},
            "page_view",
            source="web",
            url=f"https://example.org{page}",
        )
        day += rng.uniform(0.01, 0.3)
    if p.referred_by or p.archetype == "buyer" or rng.random() < 0.75:
        p.member = True
        extra: dict[str, Any] = {"referred_by": p.referred_by} if p.referred_by else {}
        c.add(
            day + 0.05,
            {"member_id": p.member_id, "email": f"{p.member_id}@example.org"},
            "signup",
            source="web",
            extra=extra,
            anonymous_id=p.anonymous_id,
        )
        if evaluating:  # and again as a member: considering
            c.add(
                day + rng.uniform(0.1, 2),
                {"member_id": p.member_id},
                "page_view",
                source="web",
                url=f"https://example.org{rng.choice(EVALUATION_PAGES)}",
            )
        if p.archetype == "buyer":
            p.bought_on = day + rng.uniform(1, 10)
            c.add(p.bought_on, {"member_id": p.member_id}, "purchase", source="crm", plan="team")


def _participate(
    c: Community,
    rng: random.Random,
    p: Person,
    day: float,
    population: list[Person],
    new_person: Any,
) -> None:
    me = {"member_id": p.member_id}
    if p.archetype == "buyer":
        return  # a customer who never takes part in the community
    rate = {
        "lurker": 0.08,
        "participant": 0.35,
        "helper": 0.6,
        "advocate": 0.7,
        "churner": 0.5,
        "returner": 0.45,
    }[p.archetype]
    if rng.random() > rate:
        return
    roll = rng.random()
    if p.archetype in ("helper", "advocate") and c.open_questions and roll < 0.55:
        thread, asker, _ = rng.choice(c.open_questions)
        if asker != p.member_id:
            target = {
                "thread_id": thread,
                "thread_author_member_id": asker,
                "url": f"https://forum.example.org/t/{thread}",
                "thread_is_question": True,
            }
            c.add(day, me, "reply", target=target)
            if rng.random() < 0.5:
                c.add(day + 0.2, me, "answer_accepted", target=target)
                c.open_questions.remove(next(q for q in c.open_questions if q[0] == thread))
            return
    if roll < 0.25 and p.archetype != "lurker":
        thread = f"q-{len(c.activities)}"
        topic = rng.choice(TOPICS)
        text = f"How do I configure {topic}?"
        tags = [topic]
        if topic in ("pricing", "sso") and rng.random() < 0.7:
            text = f"What is the pricing for the enterprise plan with {topic}?"
        c.add(
            day,
            me,
            "post",
            target={"thread_id": thread, "thread_title": text},
            text=text,
            tags=tags,
            question=True,
        )
        c.open_questions.append((thread, p.member_id, day))
        return
    if p.archetype == "advocate" and roll < 0.35:
        kind = rng.choice(["content_published", "event_talk", "content_published"])
        source = "events" if kind == "event_talk" else "blog"
        c.add(
            day,
            me,
            kind,
            source=source,
            target={
                "thread_id": f"c-{len(c.activities)}",
                "url": f"https://blog.example.org/{p.member_id}/{len(c.activities)}",
            },
        )
        return
    if p.archetype in ("advocate", "helper") and roll < 0.45 and len(population) < 2000:
        c.add(day, me, "referral_invite", source="web", invitee="friend")
        if rng.random() < 0.6:
            new_person(day + rng.uniform(0.5, 3), "direct", referred_by=p.member_id)
        return
    if roll < 0.5:
        c.add(day, me, "event_attended", source="events")
        return
    buys = p.archetype in ("participant", "helper", "advocate", "churner")
    if roll < 0.55 and buys and p.bought_on is None:
        c.add(day, me, "purchase", source="crm", plan="team")
        p.bought_on = day
        return
    if roll < 0.6 and p.archetype in ("participant", "helper", "advocate"):
        kind, text = rng.choice(FEEDBACK)
        c.add(
            day,
            me,
            kind,
            target={
                "thread_id": f"f-{len(c.activities)}",
                "thread_title": text,
                "url": f"https://forum.example.org/t/f-{len(c.activities)}",
            },
            text=text,
        )
        return
    others = [
        a
        for a in c.activities[-50:]
        if a["kind"] in ("post", "content_published") and a["actor"]["member_id"] != p.member_id
    ]
    if others:
        parent = rng.choice(others)
        c.add(
            day,
            me,
            "reaction",
            target={
                "thread_id": parent.get("target", {}).get("thread_id"),
                "parent_id": parent["activity_id"],
                "parent_author_member_id": parent["actor"]["member_id"],
                "parent_kind": parent["kind"],
            },
        )


def _subscription(c: Community, rng: random.Random, p: Person, day: int, active: bool) -> None:
    """A customer's subscription month by month, from the CRM: renewed while they take part in
    the community (now and then on a smaller plan), cancelled once they went quiet."""
    if p.bought_on is None or p.cancelled or day <= p.bought_on:
        return
    if (day - int(p.bought_on)) % 30:
        return
    me = {"member_id": p.member_id}
    if not active:
        c.add(day + 0.4, me, "cancellation", source="crm", plan="team")
        p.cancelled = True
    elif rng.random() < 0.15:
        c.add(day + 0.4, me, "downgrade", source="crm", plan="starter")
    else:
        c.add(day + 0.4, me, "renewal", source="crm", plan="team")
