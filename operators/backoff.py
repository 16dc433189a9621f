"""Exponential backoff, the one retry schedule of the pipeline: live feeds reconnecting, broker sinks resending."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    """Wait ``initial`` s after the first failure, ``factor`` times longer after each next one, at most
    ``max_delay`` s."""

    initial: float
    max_delay: float
    factor: float = 2.0

    def delay(self, attempt: int) -> float:
        """The wait before attempt ``attempt`` (1-based: the first retry)."""
        return min(self.max_delay, self.initial * self.factor ** max(0, attempt - 1))
