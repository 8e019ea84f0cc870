"""The topic registry: every topic the system uses, with its key and retention.

The dev stack and the operator CLI create topics from this list and nothing else, so a topic
that is not here does not exist.
"""

from __future__ import annotations

from dataclasses import dataclass, field

FOREVER = -1


@dataclass(frozen=True)
class Topic:
    name: str
    key: str
    purpose: str
    retention_ms: int = FOREVER
    compacted: bool = False
    partitions: int | None = None  # None: the deployment's default (Settings.topic_partitions)
    extra_config: dict[str, str] = field(default_factory=dict)
    watermark_from: str | None = None
    """The service whose event-time watermark this topic carries in band, on every partition
    (`system.watermark.v1`): a downstream service's clock for this topic is that watermark, not
    the newest event it happened to see. None: progress is the events' own time."""

    @property
    def dlq(self) -> str:
        return f"{self.name}.dlq"

    def config(self) -> dict[str, str]:
        config = {
            "cleanup.policy": "compact" if self.compacted else "delete",
            "retention.ms": str(self.retention_ms),
        }
        config.update(self.extra_config)
        return config


MEMBER_ACTIVITY = Topic(
    "member-activity",
    key="member id (anonymous id for visitors)",
    purpose="community.activity.v1 from the gateway: the log every stage service reads. "
    "Kept forever: replaying it rebuilds every service's state.",
)
JOURNEY_TRANSITIONS = Topic(
    "journey-transitions",
    key="member id",
    purpose="journey.stage_changed.v1 from every stage service: the product of the system. "
    "It carries engagement's watermark: advocacy credits a referral when the member it brought "
    "in becomes engaged, in event time.",
    watermark_from="engagement",
)
MEMBER_LIFECYCLE = Topic(
    "member-lifecycle",
    key="member id",
    purpose="member.acquired.v1 (awareness -> advocacy: closes the flywheel loop); "
    "member.merged.v1 and member.erased.v1 (gateway -> every service: one member per person, "
    "erasure). Kept forever: a replay must apply every merge and erasure again.",
    watermark_from="awareness",
)
SIGNALS_SUPPORT = Topic(
    "signals.support",
    key="member id (the helper for peer help, the asker for questions)",
    purpose="signal.peer_help.v1, signal.question_unanswered.v1 and "
    "signal.question_answered.v1 for support tools. Advocacy builds its state from it, so it "
    "is kept as long as member-activity: a replay must find every signal again.",
    watermark_from="engagement",
)
SIGNALS_SALES = Topic(
    "signals.sales",
    key="member id",
    purpose="signal.prospect_intent.v1 for sales.",
    retention_ms=30 * 24 * 3600 * 1000,
)
SIGNALS_SUCCESS = Topic(
    "signals.success",
    key="member id",
    purpose="signal.churn_risk.v1 and signal.newcomer_drop_off.v1 for customer success and "
    "community teams.",
    retention_ms=30 * 24 * 3600 * 1000,
)
SIGNALS_ADVOCACY = Topic(
    "signals.advocacy",
    key="member id",
    purpose="signal.advocate.v1 and signal.champion_nominated.v1 for the CRM and the "
    "ambassador programme.",
    retention_ms=30 * 24 * 3600 * 1000,
)

SIGNALS_PRODUCT = Topic(
    "signals.product",
    key="member id",
    purpose="signal.product_feedback.v1 (feedback, feature requests, bug reports) for the "
    "product team, and advocacy's signal.champion_feedback.v1 flagging a champion's. It carries "
    "engagement's watermark: advocacy flags in event time.",
    retention_ms=90 * 24 * 3600 * 1000,
    watermark_from="engagement",
)

DATA_TOPICS: tuple[Topic, ...] = (
    MEMBER_ACTIVITY,
    JOURNEY_TRANSITIONS,
    MEMBER_LIFECYCLE,
    SIGNALS_SUPPORT,
    SIGNALS_SALES,
    SIGNALS_SUCCESS,
    SIGNALS_ADVOCACY,
    SIGNALS_PRODUCT,
)

# Every topic a service consumes gets a dead-letter twin, kept for 30 days.
CONSUMED_TOPICS: tuple[Topic, ...] = DATA_TOPICS  # the gateway's read model and webhooks read all
DLQ_TOPICS: tuple[Topic, ...] = tuple(
    Topic(
        t.dlq,
        key="the original record's key",
        purpose=f"Records of {t.name} that could not be applied, with the reason in headers.",
        retention_ms=30 * 24 * 3600 * 1000,
    )
    for t in CONSUMED_TOPICS
)

ALL_TOPICS: tuple[Topic, ...] = DATA_TOPICS + DLQ_TOPICS


def by_name(name: str) -> Topic:
    for topic in ALL_TOPICS:
        if topic.name == name:
            return topic
    raise KeyError(f"unknown topic {name!r}; known: {', '.join(t.name for t in ALL_TOPICS)}")


def markdown_table() -> str:
    """The topic table of docs/ARCHITECTURE.md: `python -m shared.topics`."""
    rows = ["| topic | key | retention | purpose |", "| --- | --- | --- | --- |"]
    for t in DATA_TOPICS:
        retention = (
            "forever" if t.retention_ms == FOREVER else f"{t.retention_ms // 86_400_000} days"
        )
        if t.compacted:
            retention += ", compacted"
        rows.append(f"| `{t.name}` | {t.key} | {retention} | {t.purpose} |")
    rows.append(
        "| `<topic>.dlq` | the original key | 30 days | dead letters of each consumed topic |"
    )
    return "\n".join(rows)


if __name__ == "__main__":
    print(markdown_table())
