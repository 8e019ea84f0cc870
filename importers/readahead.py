"""Reading the export while the previous batch is in flight.

The readers are plain generators (XML, JSON, CSV parsing and the webhook mappers: CPU), the
sender waits on the gateway (I/O). `read_ahead` runs the reader in a thread of its own that
keeps up to `depth` chunks of items ready, each activity already encoded as the JSON the
sender sends, so the runner's loop takes items while its last batch is still at the gateway.

The items come out in exactly the reader's order, so positions, the checkpoint and the
batches are the same as reading in line; what is sent, and when a batch is acknowledged, is
unchanged (one batch in flight, in order). An error of the reader (a file that breaks
half-way) comes out where it happened, after the items before it. Closing the generator
(the import stopped or interrupted) stops the thread at its next chunk.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator

from importers.items import Item

CHUNK = 256
DEPTH = 16  # chunks: a few thousand items ahead, whatever the batch size

_END = object()


def encode(item: Item) -> bytes | None:
    """The activity as the sender sends it (None: nothing to send)."""
    if item.activity is None or item.problem is not None or item.skipped is not None:
        return None
    return item.activity.model_dump_json(exclude_none=True).encode()


def read_ahead(
    stream: Iterator[Item], *, skip: int = 0, chunk: int = CHUNK, depth: int = DEPTH
) -> Iterator[tuple[Item, bytes | None]]:
    """The stream's items with their encoded activity; the first `skip` (already sent, by
    the checkpoint) are not encoded."""
    ready: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(value: object) -> bool:
        while not stop.is_set():
            try:
                ready.put(value, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def read() -> None:
        n = 0
        block: list[tuple[Item, bytes | None]] = []
        try:
            for item in stream:
                n += 1
                block.append((item, encode(item) if n > skip else None))
                if len(block) >= chunk:
                    if not put(block):
                        return
                    block = []
            if block and not put(block):
                return
            put(_END)
        except BaseException as exc:  # given to the consumer where it happened
            if block and not put(block):
                return
            put(exc)

    thread = threading.Thread(target=read, name="import-reader", daemon=True)
    thread.start()
    try:
        while True:
            got = ready.get()
            if got is _END:
                return
            if isinstance(got, BaseException):
                raise got
            assert isinstance(got, list)
            yield from got
    finally:
        stop.set()
        thread.join(timeout=5)
