"""When to run the full segmenter instead of cheap propagation.

A keyframe every ``every`` frames, plus adaptive triggers: a track whose
confidence stays low for a few frames, a large jump in a track's mask area, a
scene cut, or a track whose motion optical flow cannot measure (a flat or
striped object: the aperture problem), which shortens the interval to
``ill_posed_every``. Decisions carry a reason so each frame record can say why.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from operators.records import Instances

#: Reasons a frame became a keyframe, in the order they are checked.
KEYFRAME_REASONS = ("prompt", "start", "interval", "low_confidence", "area_jump", "scene_cut", "ill_posed_flow")


@dataclass(frozen=True)
class KeyframeConfig:
    every: int = 10
    low_confidence: float = 0.35
    low_confidence_frames: int = 3
    area_jump: float = 0.5  # relative change of a track's area between consecutive frames
    scene_cut: float = 0.5  # Bhattacharyya distance between consecutive frames' colour histograms
    # A track with less than this share of its pixels under measured flow gets a keyframe every
    # ``ill_posed_every`` frames (0 turns the trigger off).
    ill_posed_flow: float = 0.3
    ill_posed_every: int = 3

    @property
    def watches_flow(self) -> bool:
        """Whether the ill-posed-flow trigger is on, i.e. propagated frames need their flow support."""
        return self.ill_posed_every > 0 and self.ill_posed_flow > 0

    def __post_init__(self) -> None:
        if self.every < 1:
            raise ValueError(f"keyframe interval must be >= 1, got {self.every}")
        if self.ill_posed_every < 0:
            raise ValueError(f"ill-posed-flow keyframe interval must be >= 0 (0: off), got {self.ill_posed_every}")


def colour_signature(image: np.ndarray) -> np.ndarray:
    """A small normalised HSV histogram; consecutive frames of one shot stay close.

    Large frames are sampled down to 256x192 before the area resize: a colour histogram needs no more
    than that, and averaging every pixel of an HD frame costs 6x the rest.
    """
    if image.shape[0] > 192 and image.shape[1] > 256:
        image = cv2.resize(image, (256, 192), interpolation=cv2.INTER_NEAREST)
    small = cv2.resize(image, (64, 48), interpolation=cv2.INTER_AREA)
    hsv = cv2.cvtColor(small, cv2.COLOR_RGB2HSV)
    hist = cv2.calcHist([hsv], [0, 1], None, [16, 8], [0, 180, 0, 256])
    return cv2.normalize(hist, None).astype(np.float32)


@dataclass
class KeyframePolicy:
    """Stateful per-stream keyframe decisions; constant-size state."""

    config: KeyframeConfig = field(default_factory=KeyframeConfig)
    frames_since_keyframe: int | None = None
    low_streak: dict[int, int] = field(default_factory=dict)
    last_areas: dict[int, int] = field(default_factory=dict)
    last_signature: np.ndarray | None = None
    pending_reason: str | None = None
    ill_posed: bool = False  # the last propagated frame had a track whose flow was mostly guessed

    def observe_frame(self, image: np.ndarray) -> None:
        """Check for a scene cut against the previous frame; call once per frame before :meth:`decide`."""
        signature = colour_signature(image)
        if self.last_signature is not None:
            distance = cv2.compareHist(self.last_signature, signature, cv2.HISTCMP_BHATTACHARYYA)
            if distance > self.config.scene_cut:
                self.pending_reason = self.pending_reason or "scene_cut"
        self.last_signature = signature

    def observe_instances(self, instances: Instances, flow_support: np.ndarray | None = None) -> None:
        """Record a propagated frame's tracks; low confidence or area jumps request a keyframe.

        ``flow_support``: per instance, the share of its mask under measured flow
        (:meth:`operators.propagation.FlowPropagator.flow_support`).
        """
        self.ill_posed = (self.config.watches_flow and flow_support is not None
                          and bool(np.any(flow_support < self.config.ill_posed_flow)))
        areas = dict(zip(instances.track_ids.tolist(), instances.areas.tolist()))
        for track_id, score in zip(instances.track_ids.tolist(), instances.scores.tolist()):
            streak = self.low_streak.get(track_id, 0) + 1 if score < self.config.low_confidence else 0
            self.low_streak[track_id] = streak
            if streak >= self.config.low_confidence_frames:
                self.pending_reason = self.pending_reason or "low_confidence"
            before = self.last_areas.get(track_id)
            if before and abs(areas[track_id] - before) / before > self.config.area_jump:
                self.pending_reason = self.pending_reason or "area_jump"
        self.last_areas = areas
        self.low_streak = {t: s for t, s in self.low_streak.items() if t in areas}

    def decide(self, has_new_prompts: bool) -> str | None:
        """Return the keyframe reason for the current frame, or None to propagate."""
        if has_new_prompts:
            reason: str | None = "prompt"
        elif self.frames_since_keyframe is None:
            reason = "start"
        elif self.frames_since_keyframe + 1 >= self.config.every:
            reason = "interval"
        elif self.pending_reason is not None:
            reason = self.pending_reason
        elif self.ill_posed and self.frames_since_keyframe + 1 >= self.config.ill_posed_every:
            reason = "ill_posed_flow"
        else:
            reason = None
        if reason is None:
            self.frames_since_keyframe = (self.frames_since_keyframe or 0) + 1
        else:
            self.frames_since_keyframe = 0
            self.pending_reason = None
            self.ill_posed = False
            self.low_streak.clear()
        return reason
