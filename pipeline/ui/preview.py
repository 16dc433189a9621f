"""The preview: the segmenter on one frame with the prompts placed on it, every instance it finds (VGD)."""

from __future__ import annotations

import threading
import time
from typing import Sequence

import numpy as np

from operators.records import Instances, Prompt
from operators.segmenters import Segmenter, build_segmenter


class Previewer:
    """One segmenter, built at the first preview and kept; previews run one at a time."""

    def __init__(self, segmenter: str = "default") -> None:
        self.name = segmenter
        self._segmenter: Segmenter | None = None
        self._lock = threading.Lock()

    def run(self, frame: np.ndarray, prompts: Sequence[Prompt]) -> tuple[Instances, float]:
        """The instances (track ids 1, 2, … in the order found, for their colours) and the seconds taken."""
        with self._lock:
            if self._segmenter is None:
                self._segmenter = build_segmenter(self.name)
            started = time.perf_counter()
            memory = self._segmenter.encode_prompts(frame, prompts)
            instances = self._segmenter.segment(frame, memory)
            seconds = time.perf_counter() - started
        return instances.with_track_ids(np.arange(1, len(instances) + 1)), seconds
