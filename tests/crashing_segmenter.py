"""Default segmenters whose process dies mid-job (once: the fault Ray must absorb; or every time), or that pause
the stream at a known point while a test acts on it."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Sequence

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


class PausingSegmenter(DefaultSegmenter):
    """Holds its stream at its ``pause_on``-th calls (``segment`` or ``segment_regions``), once per ``folder``: writes its pid to
    ``reached_<call>`` and waits (up to a minute) for ``go_<call>``, so a test stops a broker or kills this
    process while the stream stands at a known point."""

    def __init__(self, folder: str, pause_on: Sequence[int], **options) -> None:
        super().__init__(**options)
        self.folder = Path(folder)
        self.pause_on = tuple(pause_on)
        self.calls = 0

    def _gate(self) -> None:
        self.calls += 1
        reached = self.folder / f"reached_{self.calls}"
        if self.calls not in self.pause_on or reached.exists():
            return
        reached.write_text(str(os.getpid()))
        deadline = time.monotonic() + 60
        while not (self.folder / f"go_{self.calls}").exists() and time.monotonic() < deadline:
            time.sleep(0.02)

    def segment(self, frame, memory):
        self._gate()
        return super().segment(frame, memory)

    def segment_regions(self, frame, memory, regions):
        self._gate()
        return super().segment_regions(frame, memory, regions)
