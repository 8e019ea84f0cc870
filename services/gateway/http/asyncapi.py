"""The AsyncAPI 3.0 description of the event backbone, generated from the registries.

`shared.topics` and `shared.contracts.EVENT_TYPES` are the source of truth: every topic is a
channel, every event type a message whose payload schema is its pydantic model's JSON schema,
with the CloudEvents binary-mode headers and the record key described. Nothing is written by
hand, so the document cannot drift from what the services actually send.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic.json_schema import models_json_schema

from shared.cloudevents import CONTENT_TYPE, SPEC_VERSION
from shared.contracts import EVENT_TYPES, EventType
from shared.topics import DATA_TOPICS, DLQ_TOPICS, Topic

ASYNCAPI_VERSION = "3.0.0"
KAFKA_BINDING_VERSION = "0.5.0"
DEAD_LETTER = "DeadLetter"
_SCHEMA_REF = "#/components/schemas/{model}"


def _component_id(name: str) -> str:
    """AsyncAPI map keys allow [A-Za-z0-9_-] (channels) only: `signals.sales` -> `signals-sales`."""
    return re.sub(r"[^A-Za-z0-9_\-]", "-", name)


def _message_id(event_type: EventType) -> str:
    return _component_id(event_type.type).replace("-", "_")


def _cloudevents_headers(event_type: EventType) -> dict[str, Any]:
    return {
        "type": "object",
        "description": "CloudEvents 1.0 attributes, Kafka protocol binding, binary content mode.",
        "required": [
            "ce_specversion",
            "ce_id",
            "ce_source",
            "ce_type",
            "ce_time",
            "ce_subject",
            "content-type",
        ],
        "properties": {
            "ce_specversion": {"type": "string", "const": SPEC_VERSION},
            "ce_id": {
                "type": "string",
                "description": "Event id, derived from what caused the event: a re-emission "
                "carries the same id, and consumers drop it as a duplicate.",
            },
            "ce_source": {
                "type": "string",
                "description": "The emitter: `/gateway`, `/services/awareness`, ...",
            },
            "ce_type": {"type": "string", "const": event_type.type},
            "ce_time": {
                "type": "string",
                "format": "date-time",
                "description": "Event time (the data's `occurred_at`), in UTC.",
            },
            "ce_subject": {
                "type": "string",
                "description": f"Same as the record key: {event_type.topic.key}.",
            },
            "content-type": {"type": "string", "const": CONTENT_TYPE},
        },
        "additionalProperties": {"type": "string"},
    }


def _key_binding(description: str) -> dict[str, Any]:
    return {
        "kafka": {
            "key": {"type": "string", "description": description},
            "bindingVersion": KAFKA_BINDING_VERSION,
        }
    }


def _channel(topic: Topic, address: str, message_ids: list[str]) -> dict[str, Any]:
    config: dict[str, Any] = {
        "cleanup.policy": ["compact" if topic.compacted else "delete"],
        "retention.ms": topic.retention_ms,
    }
    binding: dict[str, Any] = {
        "topic": address,
        "topicConfiguration": config,
        "bindingVersion": KAFKA_BINDING_VERSION,
    }
    if topic.partitions is not None:
        binding["partitions"] = topic.partitions
    return {
        "address": address,
        "title": topic.name,
        "description": f"{topic.purpose}\n\nRecord key: {topic.key}.",
        "messages": {m: {"$ref": f"#/components/messages/{m}"} for m in message_ids},
        "bindings": {"kafka": binding},
    }


def _dead_letter_message() -> dict[str, Any]:
    return {
        "name": DEAD_LETTER,
        "title": "Dead letter",
        "summary": "A record a consumer could not apply, unchanged, with why in its headers.",
        "contentType": "application/octet-stream",
        "headers": {
            "type": "object",
            "description": "The original record's headers (ce_* included), plus these.",
            "properties": {
                "dlq_reason": {"type": "string", "description": "Why it could not be applied."},
                "dlq_service": {"type": "string", "description": "The consumer that gave up."},
                "dlq_topic": {"type": "string", "description": "Where it was read."},
                "dlq_partition": {"type": "string"},
                "dlq_offset": {"type": "string"},
                "dlq_detail": {
                    "type": "string",
                    "description": "Schema errors or the handler's traceback, when known.",
                },
            },
            "required": ["dlq_reason", "dlq_service", "dlq_topic", "dlq_partition", "dlq_offset"],
            "additionalProperties": {"type": "string"},
        },
        "payload": {"description": "The original record value, byte for byte (may not be JSON)."},
        "bindings": _key_binding("The original record's key."),
    }


def build_asyncapi(
    *,
    topic_prefix: str = "",
    bootstrap_servers: str = "",
    version: str = "1.0.0",
) -> dict[str, Any]:
    """The document for one deployment: channel addresses carry its topic prefix."""
    event_types = list(EVENT_TYPES.values())
    schema_refs, top = models_json_schema(
        [(e.model, "validation") for e in event_types], ref_template=_SCHEMA_REF
    )
    messages: dict[str, Any] = {}
    for e in event_types:
        messages[_message_id(e)] = {
            "name": e.type,
            "title": e.model.__name__,
            "summary": (e.model.__doc__ or e.type).strip().splitlines()[0],
            "contentType": CONTENT_TYPE,
            "headers": _cloudevents_headers(e),
            "payload": schema_refs[(e.model, "validation")],
            "correlationId": {
                "description": "The CloudEvents id.",
                "location": "$message.header#/ce_id",
            },
            "bindings": _key_binding(f"{e.topic.key} (the data's `{e.key_path}`)."),
        }

    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    for topic in DATA_TOPICS:
        ids = [_message_id(e) for e in event_types if e.topic.name == topic.name]
        channel_id = _component_id(topic.name)
        channels[channel_id] = _channel(topic, topic_prefix + topic.name, ids)
        operations[f"send-{channel_id}"] = {
            "action": "send",
            "title": f"Publish to {topic.name}",
            "summary": topic.purpose,
            "channel": {"$ref": f"#/channels/{channel_id}"},
            "messages": [{"$ref": f"#/channels/{channel_id}/messages/{m}"} for m in ids],
        }
    if DLQ_TOPICS:
        messages[DEAD_LETTER] = _dead_letter_message()
    for topic in DLQ_TOPICS:
        channel_id = _component_id(topic.name)
        channels[channel_id] = _channel(topic, topic_prefix + topic.name, [DEAD_LETTER])

    document: dict[str, Any] = {
        "asyncapi": ASYNCAPI_VERSION,
        "id": "urn:flywheel:events",
        "info": {
            "title": "Community flywheel events",
            "version": version,
            "description": "Community activity in, versioned customer-journey events out, "
            "over Apache Kafka. Every event is a CloudEvent 1.0 in binary content mode (`ce_*` "
            "headers, JSON value) keyed by member id, so all events about one member are on one "
            "partition, in order. A breaking change is a new event type (`...v2`) published "
            "beside the old one.",
            "license": {"name": "Apache-2.0"},
        },
        "defaultContentType": CONTENT_TYPE,
    }
    hosts = [h.strip() for h in bootstrap_servers.split(",") if h.strip()]
    if hosts:
        document["servers"] = {
            f"kafka-{i}": {
                "host": host,
                "protocol": "kafka",
                "description": "A bootstrap server of this deployment's Kafka cluster.",
            }
            for i, host in enumerate(hosts, 1)
        }
    document |= {
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": top.get("$defs", {})},
    }
    return document
