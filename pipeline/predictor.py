"""SAM 2's video-predictor calls over a :class:`~pipeline.session.StreamSession`, for code written against it.

``init_state`` opens a video (file, frame folder or frames) as a session, ``add_new_points_or_box`` and
``add_new_mask`` give an object its prompt on a frame (the object id is its prompt id and, on that frame,
its track id, as a DAVIS annotation's index is), ``propagate_in_video`` yields ``(frame_index, object ids,
masks)`` per frame in order. Unlike SAM 2, the masks are boolean ``(N, H, W)`` arrays (no logits), objects
can be added while propagation runs (from the next frame on), and a session propagates once, forwards.
"""

from __future__ import annotations

from typing import Any, Iterator, Sequence

import numpy as np

from operators.records import Prompt
from pipeline.session import Source, StreamSession


class VideoPredictor:
    """Builds sessions with one segmenter (``segmenter``: a name, ``segmenter_options``: its options)."""

    def __init__(self, segmenter: str = "default", **segmenter_options: Any) -> None:
        self.segmenter, self.segmenter_options = segmenter, segmenter_options

    def init_state(self, video_path: Source, **options: Any) -> StreamSession:
        """A session on ``video_path``; ``options`` go to :meth:`StreamSession.open` (sinks, out_dir, fps...)."""
        return StreamSession.open(video_path, self.segmenter, segmenter_options=self.segmenter_options, **options)

    def add_new_points_or_box(self, inference_state: StreamSession, frame_idx: int, obj_id: int,
                              points: Sequence[Sequence[float]] | None = None, labels: Sequence[int] | None = None,
                              box: Sequence[float] | None = None) -> Prompt:
        """Prompt object ``obj_id`` on ``frame_idx`` with foreground ``points`` (x, y) or a ``box``
        (x0, y0, x1, y1). Background points (label 0) have no equivalent here and are refused."""
        if (points is None) == (box is None):
            raise ValueError("give points or a box (one of them)")
        if box is not None:
            prompt = Prompt(obj_id, "box", frame_idx, box=tuple(float(v) for v in box), track_id=obj_id)
        else:
            if labels is not None and any(int(label) != 1 for label in labels):
                raise ValueError("only foreground points (label 1) are supported")
            prompt = Prompt(obj_id, "point", frame_idx, points=tuple((float(x), float(y)) for x, y in points),
                            track_id=obj_id)
        return inference_state.add_prompts([prompt])[0]

    def add_new_mask(self, inference_state: StreamSession, frame_idx: int, obj_id: int, mask: np.ndarray) -> Prompt:
        """Prompt object ``obj_id`` on ``frame_idx`` with a (H, W) mask (nonzero is the object)."""
        prompt = Prompt(obj_id, "mask", frame_idx, mask=np.asarray(mask) != 0, track_id=obj_id)
        return inference_state.add_prompts([prompt])[0]

    def propagate_in_video(self, inference_state: StreamSession) -> Iterator[tuple[int, list[int], np.ndarray]]:
        """``(frame_index, track ids, masks)`` for every frame, in order."""
        for record in inference_state:
            yield record.frame_index, [int(t) for t in record.instances.track_ids], record.instances.masks
