"""What a consumer reads from Kafka, as the rest of the code sees it.

Its own module, importing nothing of ours: the batch processor (`shared.consumer`), metrics and
telemetry all take records, and metrics and telemetry are imported by the consumer, so the type
cannot live in any of the three without an import circle.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


class RawRecord(Protocol):
    """What we read from an aiokafka ConsumerRecord."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]]
