"""A bounded appearance memory per tracked object.

SAM 2 keeps every frame's state and runs out of memory on long videos. Here each
object keeps a fixed number of slots: its first observation is pinned for the
life of the track, and the other slots hold the most recent confident
observations, the oldest evicted first. Writes are quality-gated so occluded or
doubtful frames cannot flush the memory. Size is constant in stream length.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from operators.state import StateError, StateReader, check_array


@dataclass
class ObservationBank:
    slots: int = 4  # pinned observation included
    min_score: float = 0.5
    pinned: np.ndarray | None = None
    recent: deque = field(default_factory=deque)

    def __post_init__(self) -> None:
        if self.slots < 1:
            raise ValueError(f"an observation bank needs at least 1 slot, got {self.slots}")
        self.recent = deque(self.recent, maxlen=self.slots - 1)

    def write(self, embedding: np.ndarray | None, score: float) -> bool:
        """Store ``embedding`` if confident enough (the first one is always pinned); return whether stored."""
        if embedding is None:
            return False
        vector = np.asarray(embedding, np.float32)
        if self.pinned is None:
            self.pinned = vector
            return True
        if score < self.min_score or self.slots == 1:
            return False
        self.recent.append(vector)
        return True

    @property
    def observations(self) -> list[np.ndarray]:
        return ([] if self.pinned is None else [self.pinned]) + list(self.recent)

    def similarity(self, embedding: np.ndarray | None) -> float:
        """Best cosine similarity of ``embedding`` to any stored observation (0 when nothing compares)."""
        if embedding is None or self.pinned is None:
            return 0.0
        stored = np.stack(self.observations)
        norms = np.linalg.norm(stored, axis=1) * float(np.linalg.norm(embedding))
        cosines = stored @ np.asarray(embedding, np.float32) / np.maximum(norms, 1e-12)
        return float(cosines.max())

    def nbytes(self) -> int:
        return sum(o.nbytes for o in self.observations)

    def to_state(self) -> dict:
        return {"pinned": self.pinned, "recent": list(self.recent)}

    @classmethod
    def from_state(cls, slots: int, min_score: float, state: object, where: str = "bank") -> "ObservationBank":
        """The bank :meth:`to_state` saved, with the stream's ``slots`` and ``min_score``."""
        s = StateReader(state, where)
        pinned = s.array("pinned", np.float32, (None,), optional=True)
        size = None if pinned is None else len(pinned)
        recent = [check_array(v, np.float32, (size,), f"{where}.recent[{i}]")
                  for i, v in enumerate(s.items("recent"))]
        if len(recent) > slots - 1 or (recent and pinned is None):
            raise StateError(f"{where}: {len(recent)} recent observations for {slots} slots"
                             + ("" if pinned is not None else " and none pinned"))
        return cls(slots, min_score, pinned, deque(recent))
