"""Process-wide settings of the Python runtime every service process applies at start."""

from __future__ import annotations

import gc


def tune_garbage_collector(threshold: tuple[int, int, int]) -> None:
    """Set the cyclic garbage collector's thresholds, and exempt what exists now from it.

    A consumer allocates a few dozen container objects per record (the contract's models,
    envelopes, rows), nearly all freed by reference counting and none of them cyclic. With
    Python's own thresholds (700 allocations) the collector runs every few records and, every
    tenth and hundredth time, walks the older generations: the batch in hand, the caches, the
    framework. Measured in bench phase 2 (docs/PERFORMANCE.md): with 50,000, awareness and
    advocacy caught up with 21-25 % less CPU per record, engagement with 10 % less.
    Collections still run, every 50,000 allocations; cyclic garbage is rare here, so memory
    does not grow by more than a generation's worth.

    `gc.freeze()` moves every object alive at start (modules, the contracts' validators, the
    app) to a generation the collector never walks: call this once the process has imported
    and built what it runs, before it starts serving."""
    gc.freeze()
    gc.set_threshold(*threshold)
