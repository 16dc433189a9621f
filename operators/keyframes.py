"""When to run the full segmenter instead of cheap propagation.

A keyframe every ``every`` frames, plus adaptive triggers: a track whose
confidence stays low for a few frames (low in absolute terms and against what
its last keyframe gave it), a large jump in a track's mask area (or a keyframe
that had to correct one), a scene cut, or a track whose motion optical flow cannot measure (a flat or
striped object: the aperture problem). The last re-anchors the tracked objects
every ``ill_posed_every`` frames: a keyframe that searches only around them
(:func:`reanchor_regions`) and leaves finding new instances and refreshing the
prompt memory to the regular interval, which it does not delay. Decisions carry
a reason so each frame record can say why.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from operators.records import KEYFRAME_REASONS, Box, Instances, KeyframeReason
from operators.state import StateError, StateReader, number_pairs


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


#: Hue and saturation bins of a frame's colour signature.
SIGNATURE_BINS = (16, 8)


def colour_signature(image: np.ndarray) -> np.ndarray:
    """A small normalised HSV histogram; consecutive frames of one shot stay close.

    Large frames are sampled down to 256x192 before the area resize: a colour histogram needs no more
    than that, and averaging every pixel of an HD frame costs 6x the rest.
    """
    if image.shape[0] > 192 and image.shape[1] > 256:
        image = cv2.resize(image, (256, 192), interpolation=cv2.INTER_NEAREST)
    small = cv2.resize(image, (64, 48), interpolation=cv2.INTER_AREA)
    hsv = cv2.cvtColor(small, cv2.COLOR_RGB2HSV)
    hist = cv2.calcHist([hsv], [0, 1], None, list(SIGNATURE_BINS), [0, 180, 0, 256])
    return cv2.normalize(hist, None).astype(np.float32)


#: A re-anchoring keyframe searches each tracked object's box grown on every side by this share of its
#: longer side, and at least ``REANCHOR_MIN_MARGIN`` pixels: room for motion the flow could not measure.
REANCHOR_MARGIN = 0.5
REANCHOR_MIN_MARGIN = 32
#: Regions covering more of the frame than this save too little: the whole frame is searched.
REANCHOR_MAX_SHARE = 0.5


def _overlap(a: Box, b: Box) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def reanchor_regions(instances: Instances) -> list[Box] | None:
    """Disjoint boxes around the tracked ``instances`` for a re-anchoring keyframe to search; None to
    search the whole frame (nothing tracked, or the boxes would cover most of it)."""
    height, width = instances.shape
    regions: list[Box] = []
    for x0, y0, x1, y1 in instances.boxes_xyxy.astype(int).tolist():
        if x1 <= x0:
            continue  # an empty mask: nothing to search around
        margin = max(REANCHOR_MIN_MARGIN, round(REANCHOR_MARGIN * max(x1 - x0, y1 - y0)))
        box = (max(0, x0 - margin), max(0, y0 - margin), min(width, x1 + margin), min(height, y1 + margin))
        # Merge with every region it overlaps, until the regions are disjoint (a search of each finds an
        # instance once).
        while (hits := [r for r in regions if _overlap(r, box)]):
            for r in hits:
                regions.remove(r)
                box = (min(box[0], r[0]), min(box[1], r[1]), max(box[2], r[2]), max(box[3], r[3]))
        regions.append(box)
    covered = sum((x1 - x0) * (y1 - y0) for x0, y0, x1, y1 in regions)
    if not regions or covered > REANCHOR_MAX_SHARE * height * width:
        return None
    return sorted(regions)


#: A propagated track is low-confidence under ``low_confidence`` and under this share of its last keyframe score.
KEYFRAME_SCORE_SHARE = 0.7


@dataclass
class KeyframePolicy:
    """Stateful per-stream keyframe decisions; constant-size state."""

    config: KeyframeConfig = field(default_factory=KeyframeConfig)
    frames_since_keyframe: int | None = None
    frames_since_full: int = 0  # since the last keyframe that was not a re-anchoring one: the interval's clock
    low_streak: dict[int, int] = field(default_factory=dict)
    last_areas: dict[int, int] = field(default_factory=dict)
    last_signature: np.ndarray | None = None
    pending_reason: KeyframeReason | None = None
    ill_posed: bool = False  # the last propagated frame had a track whose flow was mostly guessed
    cut: bool = False  # the current frame starts a new shot
    recheck: bool = False  # the last keyframe corrected a track's area by more than area_jump
    keyframe_scores: dict[int, float] = field(default_factory=dict)  # each track's score at the last keyframe

    def to_state(self) -> dict:
        """Everything but the config (the stream's settings give it): see :mod:`operators.state`."""
        return {
            "frames_since_keyframe": self.frames_since_keyframe,
            "frames_since_full": self.frames_since_full,
            "low_streak": number_pairs(self.low_streak),
            "last_areas": number_pairs(self.last_areas),
            "last_signature": self.last_signature,
            "pending_reason": self.pending_reason,
            "ill_posed": self.ill_posed,
            "cut": self.cut,
            "recheck": self.recheck,
            "keyframe_scores": number_pairs(self.keyframe_scores),
        }

    @classmethod
    def from_state(cls, config: KeyframeConfig, state: object) -> "KeyframePolicy":
        """The policy :meth:`to_state` saved; :class:`operators.state.StateError` if ``state`` is not one."""
        s = StateReader(state, "keyframe_policy")
        pending_reason = s.text("pending_reason", optional=True)
        if pending_reason not in (None, *KEYFRAME_REASONS):
            raise StateError(f"keyframe_policy.pending_reason: unknown keyframe reason {pending_reason!r:.40}")
        return cls(
            config,
            frames_since_keyframe=s.integer("frames_since_keyframe", minimum=0, optional=True),
            frames_since_full=s.integer("frames_since_full", minimum=0),
            low_streak=s.number_map("low_streak"),
            last_areas=s.number_map("last_areas"),
            last_signature=s.array("last_signature", np.float32, SIGNATURE_BINS, optional=True),
            pending_reason=pending_reason,  # type: ignore[arg-type]
            ill_posed=s.flag("ill_posed"),
            cut=s.flag("cut"),
            recheck=s.flag("recheck"),
            keyframe_scores=s.number_map("keyframe_scores", float),
        )

    def observe_frame(self, image: np.ndarray) -> None:
        """Check for a scene cut against the previous frame; call once per frame before :meth:`decide`."""
        signature = colour_signature(image)
        self.cut = self.last_signature is not None and (
            cv2.compareHist(self.last_signature, signature, cv2.HISTCMP_BHATTACHARYYA) > self.config.scene_cut)
        self.last_signature = signature

    def observe_keyframe(self, instances: Instances) -> None:
        """A keyframe's tracks: the areas the next propagated frames are compared with.

        A keyframe that had to correct a track's area by more than ``area_jump`` found the flow drifting
        on it: once one frame has been propagated from the corrected mask, another keyframe checks it
        (``area_jump``), rather than the interval. (On the tracking benchmark, a check on the very next frame
        costs as many keyframes but loses 0.016 J&F: the flow needs a frame to show where it goes.)
        """
        areas = dict(zip(instances.track_ids.tolist(), instances.areas.tolist()))
        self.recheck = any(self._area_jumped(t, a) for t, a in areas.items())
        self.last_areas = areas
        self.keyframe_scores = dict(zip(instances.track_ids.tolist(), instances.scores.tolist()))

    def observe_instances(self, instances: Instances, flow_support: np.ndarray | None = None) -> None:
        """Record a propagated frame's tracks; low confidence or area jumps request a keyframe.

        ``flow_support``: per instance, the share of its mask under measured flow
        (:meth:`operators.propagation.FlowPropagator.flow_support`).
        """
        if self.recheck:
            self.pending_reason = self.pending_reason or "area_jump"
            self.recheck = False
        self.ill_posed = (self.config.watches_flow and flow_support is not None
                          and bool(np.any(flow_support < self.config.ill_posed_flow)))
        areas = dict(zip(instances.track_ids.tolist(), instances.areas.tolist()))
        for track_id, score in zip(instances.track_ids.tolist(), instances.scores.tolist()):
            # Low also against what the last keyframe gave the track: one its segmenter always scores low is
            # not re-checked every few frames for it (bench.tracking: 224 -> 197 keyframes, J&F 0.887 -> 0.884,
            # ID switches per clip 0.60 -> 0.50).
            floor = min(self.config.low_confidence, KEYFRAME_SCORE_SHARE * self.keyframe_scores.get(track_id, 1.0))
            streak = self.low_streak.get(track_id, 0) + 1 if score < floor else 0
            self.low_streak[track_id] = streak
            if streak >= self.config.low_confidence_frames:
                self.pending_reason = self.pending_reason or "low_confidence"
            if self._area_jumped(track_id, areas[track_id]):
                self.pending_reason = self.pending_reason or "area_jump"
        self.last_areas = areas
        self.low_streak = {t: s for t, s in self.low_streak.items() if t in areas}

    def _area_jumped(self, track_id: int, area: int) -> bool:
        """Whether the track's mask area changed by more than ``area_jump`` since the last frame observed."""
        before = self.last_areas.get(track_id)
        return bool(before) and abs(area - before) / before > self.config.area_jump

    def decide(self, has_new_prompts: bool) -> KeyframeReason | None:
        """Return the keyframe reason for the current frame, or None to propagate.

        A scene cut outranks every reason but a new prompt: whatever the reason, a keyframe on a cut is
        matched against the last shot's masks as they were (:attr:`cut`), not carried across by flow.
        """
        if has_new_prompts:
            reason: KeyframeReason | None = "prompt"
        elif self.frames_since_keyframe is None:
            reason = "start"
        elif self.cut:
            reason = "scene_cut"
        elif self.frames_since_full + 1 >= self.config.every:
            reason = "interval"
        elif self.pending_reason is not None:
            reason = self.pending_reason
        elif self.ill_posed and self.frames_since_keyframe + 1 >= self.config.ill_posed_every:
            reason = "ill_posed_flow"
        else:
            reason = None
        if reason is None:
            self.frames_since_keyframe = (self.frames_since_keyframe or 0) + 1
            self.frames_since_full += 1
        else:
            self.frames_since_keyframe = 0
            self.frames_since_full = self.frames_since_full + 1 if reason == "ill_posed_flow" else 0
            self.pending_reason = None
            self.ill_posed = False
            self.low_streak.clear()
        return reason
