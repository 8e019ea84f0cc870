"""The engagement scoring stage once more, as a Quix Streams application: the peer the stage
service is compared with, on the same backlog in the same run.

    python -m bench.quix_engagement --bootstrap HOST:PORT --source TOPIC --sink TOPIC \
        --group G --state-dir DIR [--guarantee exactly-once]

Same decoder (`shared.cloudevents.decode`) and the same pure rules
(`services.engagement.domain`: `observe`, `peer_help`, and the member's honeymoon and product
feedback, `observe_newcomer`, `product_feedback`), so the difference is the runtime: Quix keeps
each member's participant and honeymoon in its own RocksDB state store (changelogged to Kafka,
as Quix does) where the service keeps them in PostgreSQL, and it emits transitions and signals
to one topic. What it does not do, so its figure is an upper bound for this design: no
watermark sweep (a quiet member is demoted, or dropped off, only by their own next activity,
not by the event time of others: Quix has no timers per key), no questions (their state is
per thread, not per member: it would need a repartition, and their signals come only from the
sweep), no inbox of event ids (exactly-once comes from Kafka transactions instead), no merges
or erasures, no dead letters. `--no-journey` leaves the honeymoon and feedback out (the peer
as first written, before the stage had them).
"""

from __future__ import annotations

import argparse
import logging
from datetime import UTC, datetime
from functools import partial
from typing import Any

from quixstreams import Application, State  # type: ignore[import-not-found,unused-ignore]

from services.engagement import domain
from shared.cloudevents import DecodeError, decode, encode
from shared.contracts import ActivityV1
from shared.journey import transition_record
from shared.topics import MEMBER_ACTIVITY

RULES = domain.Rules()
_TIMES = ("score_at", "first_seen_at", "last_active_at", "stage_since")


def _dump(p: domain.Participant) -> dict[str, Any]:
    """Quix state values are JSON: times as epoch seconds."""
    row: dict[str, Any] = {
        "stage": p.stage,
        "score": p.score,
        "activities": p.activities,
    }
    for name in _TIMES:
        at: datetime | None = getattr(p, name)
        row[name] = at.timestamp() if at is not None else None
    return row


def _load(member_id: str, row: dict[str, Any] | None) -> domain.Participant | None:
    if row is None:
        return None
    since = row["stage_since"]
    return domain.Participant(
        member_id=member_id,
        stage=row["stage"],
        score=row["score"],
        score_at=datetime.fromtimestamp(row["score_at"], UTC),
        first_seen_at=datetime.fromtimestamp(row["first_seen_at"], UTC),
        last_active_at=datetime.fromtimestamp(row["last_active_at"], UTC),
        stage_since=datetime.fromtimestamp(since, UTC) if since is not None else None,
        activities=row["activities"],
    )


def _dump_newcomer(n: domain.Newcomer) -> dict[str, Any]:
    return {
        "as": n.newcomer_as,
        "started_at": n.started_at.timestamp(),
        "last_active_at": n.last_active_at.timestamp(),
        "did": dict(n.did),
        "signalled": n.signalled,
    }


def _load_newcomer(member_id: str, row: dict[str, Any] | None) -> domain.Newcomer | None:
    if row is None:
        return None
    return domain.Newcomer(
        member_id,
        row["as"],
        datetime.fromtimestamp(row["started_at"], UTC),
        datetime.fromtimestamp(row["last_active_at"], UTC),
        tuple(sorted(row["did"].items())),
        row["signalled"],
    )


def _signal_value(signal: domain.Signal) -> bytes:
    return encode(signal.event_type, signal.data, event_id=signal.event_id, source="/quix").value


def score(
    value: bytes,
    key: bytes,
    timestamp: int,
    headers: Any,
    state: State[Any, Any],
    *,
    journey: bool = True,
) -> list[bytes]:
    """One record: decode, fold into the member's state, emit what it caused."""
    try:
        envelope = decode(
            topic=MEMBER_ACTIVITY.name,
            partition=-1,
            offset=-1,
            key=key,
            value=value,
            headers=headers or (),
        )
    except DecodeError:
        return []  # the service dead-letters it; the peer only skips
    activity = envelope.data
    if not isinstance(activity, ActivityV1):
        return []
    member_id = activity.actor.member_id
    before = _load(member_id, state.get("p"))
    after, transitions = domain.observe(before, activity, RULES)
    if after is not None and after != before:
        state.set("p", _dump(after))
    out = [transition_record("engagement", t).value for t in transitions]
    signal = domain.peer_help(activity, RULES)
    if signal is not None:
        out.append(_signal_value(signal))
    if journey:  # the member's honeymoon and feedback, as fold_journey does them per activity
        n_before = _load_newcomer(member_id, state.get("n"))
        known = before.first_seen_at if before is not None else None
        n_after, signals = domain.observe_newcomer(n_before, activity, known, RULES)
        if n_after is not None and n_after != n_before:
            state.set("n", _dump_newcomer(n_after))
        stage = after.stage if after is not None else None
        if (feedback := domain.product_feedback(activity, stage, RULES)) is not None:
            signals.append(feedback)
        out += [_signal_value(s) for s in signals]
    return out


def build(
    bootstrap: str,
    source: str,
    sink: str,
    group: str,
    state_dir: str,
    guarantee: str,
    journey: bool = True,
) -> Application:
    app = Application(
        broker_address=bootstrap,
        consumer_group=group,
        auto_offset_reset="earliest",
        state_dir=state_dir,
        commit_interval=1.0,  # the bench watches committed lag; the service commits per batch
        processing_guarantee=guarantee,  # type: ignore[arg-type]
        loglevel="WARNING",
    )
    activities = app.topic(source, value_deserializer="bytes", key_deserializer="bytes")
    out = app.topic(sink, value_serializer="bytes", key_serializer="bytes")
    sdf = app.dataframe(topic=activities)
    sdf = sdf.apply(partial(score, journey=journey), stateful=True, expand=True, metadata=True)
    sdf.to_topic(out)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--source", required=True)
    parser.add_argument("--sink", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--state-dir", required=True)
    parser.add_argument(
        "--guarantee", choices=("at-least-once", "exactly-once"), default="exactly-once"
    )
    parser.add_argument(
        "--no-journey",
        action="store_true",
        help="leave the honeymoon and product feedback out (the peer before the stage had them)",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    app = build(
        args.bootstrap,
        args.source,
        args.sink,
        args.group,
        args.state_dir,
        args.guarantee,
        journey=not args.no_journey,
    )
    app.run()  # until SIGTERM: Quix stops gracefully, committing what it processed


if __name__ == "__main__":
    main()
