"""Default segmenters whose process dies mid-job: once (the fault Ray must absorb), or every time."""

from __future__ import annotations

import os
from pathlib import Path

from operators.segmenters.default import DefaultSegmenter


class CrashOnceSegmenter(DefaultSegmenter):
    """Kills its own worker process on the ``crash_on``-th ``segment`` call, once per ``marker`` file."""

    def __init__(self, marker: str, crash_on: int = 3, **options) -> None:
        super().__init__(**options)
        self.marker = Path(marker)
        self.calls = 0
        self.crash_on = crash_on

    def segment(self, frame, memory):
        self.calls += 1
        if self.calls == self.crash_on and not self.marker.exists():
            self.marker.write_text(str(os.getpid()))
            os._exit(1)  # no cleanup, no exception: as an OOM kill or a segfault would
        return super().segment(frame, memory)


class CrashAlwaysSegmenter(DefaultSegmenter):
    """Kills its own worker process on its first ``segment`` call, every time: a video that can never finish."""

    def segment(self, frame, memory):
        os._exit(1)
