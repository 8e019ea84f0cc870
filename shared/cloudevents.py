"""CloudEvents 1.0 in the Kafka protocol binding, binary content mode.

Attributes travel as `ce_*` headers, the data is the record value (JSON), and the record key
is the member id, so that every event about one member lands on one partition, in order.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from pydantic import ValidationError

from shared.contracts import EVENT_TYPES, Contract, EventType

SPEC_VERSION = "1.0"
CONTENT_TYPE = "application/json"
_ID_NAMESPACE = uuid.UUID("6f1c2d55-8a4b-4f0e-9a51-3c1d7e2b9f10")

Headers = list[tuple[str, bytes]]
ContractT = TypeVar("ContractT", bound=Contract)


_ID_NAMESPACE_BYTES = _ID_NAMESPACE.bytes


def source_of(service: str) -> str:
    """The CloudEvents `source` of what a service publishes: set here once, so consumers that
    filter or trace by source see one spelling. The gateway is `/gateway`; a stage service is
    `/services/<name>`."""
    return "/gateway" if service == "gateway" else f"/services/{service}"


def derive_event_id(*cause: str) -> str:
    """An id computed from what caused the event, so a re-emission carries the same id and
    any consumer can drop it as a duplicate.

    Exactly `str(uuid.uuid5(_ID_NAMESPACE, "\\x1f".join(cause)))` (a test holds them equal),
    without building a UUID object: every emitted event and every activity pays for it.
    """
    digest = bytearray(
        hashlib.sha1(_ID_NAMESPACE_BYTES + "\x1f".join(cause).encode()).digest()[:16]
    )
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


@dataclass(frozen=True)
class OutgoingRecord:
    """A record ready for the producer (or for the outbox table)."""

    topic: str
    key: bytes
    value: bytes
    headers: Headers
    event_id: str
    partition: int | None = None
    """None: the producer's partitioner picks by key. BROADCAST: a copy on every partition."""


BROADCAST = -1
"""An outgoing record's partition meaning "every partition of the topic" (the relay expands it):
clock ticks and watermarks must reach every partition, whichever keys land where."""


@dataclass(frozen=True)
class Envelope:
    """A decoded event plus where it was read from."""

    id: str
    type: str
    source: str
    time: datetime
    data: Contract
    key: str
    topic: str = ""
    partition: int = -1
    offset: int = -1
    headers: Headers = field(default_factory=list)

    @property
    def event_type(self) -> EventType:
        return EVENT_TYPES[self.type]


class DecodeError(Exception):
    """A record that can never be applied, whatever we retry: it goes to the dead letters."""

    def __init__(self, reason: str, detail: Any = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.detail = detail


def encode(
    event_type: EventType,
    data: Contract,
    *,
    event_id: str,
    source: str,
    extra_headers: Iterable[tuple[str, bytes]] = (),
) -> OutgoingRecord:
    if not isinstance(data, event_type.model):
        raise TypeError(f"{event_type.type} carries {event_type.model.__name__}, got {type(data)}")
    occurred_at: datetime = data.occurred_at  # type: ignore[attr-defined]
    key = event_type.key_of(data)
    headers: Headers = [
        ("ce_specversion", SPEC_VERSION.encode()),
        ("ce_id", event_id.encode()),
        ("ce_source", source.encode()),
        ("ce_type", event_type.type.encode()),
        ("ce_time", occurred_at.astimezone(UTC).isoformat().encode()),
        ("ce_subject", key.encode()),
        ("content-type", CONTENT_TYPE.encode()),
    ]
    headers.extend(extra_headers)
    return OutgoingRecord(
        topic=event_type.topic.name,
        key=key.encode(),
        value=data.model_dump_json().encode(),
        headers=headers,
        event_id=event_id,
    )


def header_map(headers: Sequence[tuple[str, bytes]] | None) -> dict[str, str]:
    result: dict[str, str] = {}
    for name, value in headers or ():
        try:
            result[name] = value.decode() if value is not None else ""
        except UnicodeDecodeError:
            result[name] = value.decode("utf-8", "replace")
    return result


_CE_ATTRIBUTES = frozenset(("ce_specversion", "ce_id", "ce_source", "ce_type"))


def _ce_attributes(headers: Sequence[tuple[str, bytes]] | None) -> dict[str, str]:
    """`header_map` of only the four attributes `decode` reads (the last of a repeated
    header wins, as there): every consumed record pays for this, not for the rest."""
    result: dict[str, str] = {}
    for name, value in headers or ():
        if name in _CE_ATTRIBUTES:
            try:
                result[name] = value.decode() if value is not None else ""
            except UnicodeDecodeError:
                result[name] = value.decode("utf-8", "replace")
    return result


_TOPIC_NAMES: dict[str, tuple[EventType, frozenset[str]]] = {}


def _topics_of(event_type: EventType) -> frozenset[str]:
    """The logical topics an event type may travel on, computed once per registered type."""
    cached = _TOPIC_NAMES.get(event_type.type)
    if cached is None or cached[0] is not event_type:
        cached = (event_type, frozenset(t.name for t in event_type.topics))
        _TOPIC_NAMES[event_type.type] = cached
    return cached[1]


UNKNOWN_FIELD = "extra_forbidden"
"""pydantic's error type for a field the contract does not declare."""


def validate_tolerantly(model: type[ContractT], value: bytes) -> ContractT:
    """The event's data, its unknown fields ignored: a tolerant reader.

    The contracts forbid unknown fields (`Contract`), because the public API must tell a client
    that `colour` is not a field rather than drop it. A consumer must not: a producer upgraded
    first may add an optional field to a v1 event (the compatibility rule, docs/GUARANTEES.md),
    and the consumers not yet upgraded read on. So one model serves both: the strict validation
    runs first (the fast path, and every event of producers on the same version passes it);
    only when it fails, the fields it names as unknown (`extra_forbidden`, with their exact
    path, top level or nested) are removed from the parsed JSON and the rest validated again.
    Any other error stands, reported as the second validation finds it. Cheaper and simpler
    than a second, lenient copy of every model, or a Python validator on every nested model
    that every record would pay for.
    """
    validator = model.__pydantic_validator__
    try:
        # the model's core validator itself: model_validate_json's wrapper costs ~10 % per record
        return validator.validate_json(value)  # type: ignore[no-any-return]
    except ValidationError as exc:
        unknown = [err["loc"] for err in exc.errors() if err["type"] == UNKNOWN_FIELD]
        if not unknown:
            raise
    document = json.loads(value)
    for loc in unknown:
        _remove(document, loc)
    return validator.validate_python(document)  # type: ignore[no-any-return]


def _remove(document: Any, loc: Sequence[str | int]) -> None:
    """Delete the field at a pydantic error location; segments that are not steps into the
    document (union member tags) are passed over."""
    node = document
    for segment in loc[:-1]:
        in_object = isinstance(node, dict) and isinstance(segment, str) and segment in node
        in_array = isinstance(node, list) and isinstance(segment, int) and 0 <= segment < len(node)
        if in_object or in_array:
            node = node[segment]
    if isinstance(node, dict) and loc:
        node.pop(loc[-1], None)


def decode(
    *,
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    headers: Sequence[tuple[str, bytes]] | None,
    max_value_bytes: int = 1_048_576,
    topic_prefix: str = "",
) -> Envelope:
    """Turn one Kafka record into an Envelope, or say precisely why it cannot be one.

    The type must be registered for the topic the record was read from (`topic`, with the
    deployment's `topic_prefix`): whoever may write one topic must not be able to send,
    say, an erasure through it (docs/SECURITY.md)."""
    attrs = _ce_attributes(headers)
    if attrs.get("ce_specversion") != SPEC_VERSION:
        raise DecodeError(
            "not a CloudEvent 1.0: ce_specversion header is "
            + repr(attrs.get("ce_specversion", "missing"))
        )
    event_id, source, type_name = attrs.get("ce_id"), attrs.get("ce_source"), attrs.get("ce_type")
    if not (event_id and source and type_name):
        missing = [h for h in ("ce_id", "ce_source", "ce_type") if not attrs.get(h)]
        raise DecodeError(f"missing CloudEvents header(s): {', '.join(missing)}")
    event_type = EVENT_TYPES.get(type_name)
    if event_type is None:
        raise DecodeError(
            f"unknown event type {type_name!r}; this service knows {sorted(EVENT_TYPES)}"
        )
    logical_topic = topic.removeprefix(topic_prefix)
    if logical_topic not in _topics_of(event_type):
        allowed = [t.name for t in event_type.topics]
        raise DecodeError(
            f"event type {type_name!r} is not registered for topic {logical_topic!r} (only "
            f"{', '.join(repr(t) for t in allowed)}): refused"
        )
    if value is None:
        raise DecodeError("record has no value (tombstone) where an event was expected")
    if len(value) > max_value_bytes:
        raise DecodeError(f"value of {len(value)} bytes exceeds the {max_value_bytes} limit")
    try:
        data = validate_tolerantly(event_type.model, value)
    except ValidationError as exc:
        errors = [
            {"loc": ".".join(str(p) for p in err["loc"]), "msg": err["msg"], "type": err["type"]}
            for err in exc.errors(include_url=False, include_input=False)
        ]
        first = errors[0] if errors else {"loc": "", "msg": str(exc)}
        raise DecodeError(
            f"{type_name} failed its schema: {first['loc'] or 'value'}: {first['msg']}"
            + (f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""),
            detail=errors,
        ) from None
    member_key = key.decode("utf-8", "replace") if key is not None else event_type.key_of(data)
    return Envelope(
        id=event_id,
        type=type_name,
        source=source,
        time=data.occurred_at,  # type: ignore[attr-defined]
        data=data,
        key=member_key,
        topic=topic,
        partition=partition,
        offset=offset,
        headers=list(headers or ()),
    )


def payloads(events: Iterable[Envelope], model: type[ContractT]) -> list[ContractT]:
    """The data of the events carrying `model`, in their order."""
    return [e.data for e in events if isinstance(e.data, model)]


_SPEC_VERSION_BYTES = SPEC_VERSION.encode()


def _envelope(
    id: str,
    type: str,
    source: str,
    time: datetime,
    data: Contract,
    key: str,
    topic: str,
    partition: int,
    offset: int,
    headers: Headers,
    _new: Any = object.__new__,
) -> Envelope:
    """`Envelope(...)` without the frozen dataclass's `object.__setattr__` per field (a fifth
    of a record's decoding besides the validation itself): the same instance, fields and
    equality."""
    envelope: Envelope = _new(Envelope)
    envelope.__dict__.update(
        id=id,
        type=type,
        source=source,
        time=time,
        data=data,
        key=key,
        topic=topic,
        partition=partition,
        offset=offset,
        headers=headers,
    )
    return envelope


def decode_batch(
    records: Sequence[Any], *, max_value_bytes: int = 1_048_576, topic_prefix: str = ""
) -> list[Envelope | DecodeError]:
    """`decode` for each record of a batch, in order: its envelope, or the DecodeError
    `decode` raises for it.

    The same checks in one pass, with what is the same for the whole batch looked up once
    (a topic's logical name, a type's contract and whether it may travel on that topic).
    A record off the regular path (a missing or undecodable attribute, no key, no value, a
    value too long, data failing the strict contract) goes through `decode` itself, so its
    outcome, and its error's wording, are exactly `decode`'s: only the regular records are
    decoded here, by the same validator."""
    out: list[Envelope | DecodeError] = []
    allowed: dict[tuple[str, bytes], tuple[str, Any] | None] = {}
    wanted = _CE_ATTRIBUTES
    for record in records:
        topic = record.topic
        value = record.value
        key = record.key
        headers = record.headers
        spec: bytes | None = None
        event_id: bytes | None = None
        source: bytes | None = None
        type_name: bytes | None = None
        for name, header in headers or ():
            if name in wanted:
                if name == "ce_id":
                    event_id = header
                elif name == "ce_type":
                    type_name = header
                elif name == "ce_source":
                    source = header
                else:
                    spec = header
        if (
            spec == _SPEC_VERSION_BYTES
            and event_id
            and source
            and type_name
            and key is not None
            and value is not None
            and len(value) <= max_value_bytes
        ):
            cache_key = (topic, type_name)
            if cache_key in allowed:
                found = allowed[cache_key]
            else:
                found = allowed[cache_key] = _allowed(topic, type_name, topic_prefix)
            if found is not None:
                try:
                    data = found[1].validate_json(value)
                    out.append(
                        _envelope(
                            event_id.decode(),
                            found[0],
                            source.decode(),
                            data.occurred_at,
                            data,
                            key.decode("utf-8", "replace"),
                            topic,
                            record.partition,
                            record.offset,
                            list(headers),
                        )
                    )
                    continue
                except (ValidationError, UnicodeDecodeError):
                    pass  # decode says why, or reads it tolerantly
        try:
            out.append(
                decode(
                    topic=topic,
                    partition=record.partition,
                    offset=record.offset,
                    key=key,
                    value=value,
                    headers=headers,
                    max_value_bytes=max_value_bytes,
                    topic_prefix=topic_prefix,
                )
            )
        except DecodeError as exc:
            out.append(exc)
    return out


def _allowed(topic: str, type_bytes: bytes, topic_prefix: str) -> tuple[str, Any] | None:
    """(type name, its contract's validator) when the type is registered and may travel on
    `topic`; None when not (`decode` then says why)."""
    try:
        type_name = type_bytes.decode()
    except UnicodeDecodeError:
        return None
    event_type = EVENT_TYPES.get(type_name)
    if event_type is None or topic.removeprefix(topic_prefix) not in _topics_of(event_type):
        return None
    return type_name, event_type.model.__pydantic_validator__
