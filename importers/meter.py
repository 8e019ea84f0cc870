"""Bytes of the export read so far, out of how many: what the progress bar's ETA is made of.

Item counts of an export are unknown until it is read; its size is known up front, so the
readers report bytes as they go and the runner turns them into a fraction and an ETA.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Meter:
    total: int = 0
    done: int = 0
    phase: str = "reading"

    def plan(self, nbytes: int) -> None:
        self.total += nbytes

    def advance(self, nbytes: int) -> None:
        self.done += nbytes
