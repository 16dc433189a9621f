"""Typed records that flow between pipeline stages.

Every stage receives and returns these objects; no stage reaches into another's
internals. Masks travel as boolean arrays inside a process and as COCO RLE once
they leave it (see :meth:`FrameRecord.to_dict`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Literal, Sequence, get_args

import cv2
import numpy as np

from operators import rle
from operators.state import StateError, StateReader, is_number

if TYPE_CHECKING:
    import supervision as sv

PromptKind = Literal["point", "box", "scribble", "mask"]
FrameKind = Literal["keyframe", "propagated", "skipped"]
#: Why a keyframe ran (:meth:`operators.keyframes.KeyframePolicy.decide`; ``worker_restarted``: a live feed's
#: first frame after its stream actor was restarted, pipeline.live).
KeyframeReason = Literal["prompt", "start", "scene_cut", "interval", "area_jump", "low_confidence", "ill_posed_flow",
                         "worker_restarted"]
#: Why a frame was skipped: no prompt yet, every prompt removed, or a live feed dropped it (pipeline.live): its
#: queue was full, the frame was older than the latency budget, or no actor ran the feed (``worker_restarted``).
SkipReason = Literal["no_prompt_yet", "prompts_removed", "dropped_queue_full", "dropped_latency", "worker_restarted"]
FrameReason = Literal[KeyframeReason, SkipReason]
FRAME_KINDS: tuple[FrameKind, ...] = get_args(FrameKind)
KEYFRAME_REASONS: tuple[KeyframeReason, ...] = get_args(KeyframeReason)
SKIP_REASONS: tuple[SkipReason, ...] = get_args(SkipReason)
Box = tuple[int, int, int, int]  # x0, y0, x1, y1 in pixels, max exclusive

#: Radius of the disk a point prompt is drawn as; X-SAM's point prompts are disks of radius 10 px.
POINT_RADIUS = 10


class PromptError(ValueError):
    """A prompt that cannot be applied to the frame it names."""


@dataclass(frozen=True)
class Prompt:
    """A visual prompt in source-pixel coordinates, applied on ``frame_index``.

    X-SAM reduces every prompt type to a binary mask of the image's size;
    :meth:`to_mask` does the same, so segmenters only ever see masks.
    """

    prompt_id: int
    kind: PromptKind
    frame_index: int = 0
    points: tuple[tuple[float, float], ...] = ()
    box: tuple[float, float, float, float] | None = None
    mask: np.ndarray | None = field(default=None, compare=False, repr=False)
    # The id the track this prompt starts takes on its frame (a DAVIS annotation's object index), where no
    # track has had it yet; None: the next free id.
    track_id: int | None = None

    def __post_init__(self) -> None:
        coordinates = [v for point in self.points for v in point] + list(self.box or ())
        if not all(math.isfinite(v) for v in coordinates):  # NaN passes every comparison below
            raise PromptError(f"prompt {self.prompt_id}: coordinates must be finite numbers, got "
                              f"{self.box if self.box is not None else self.points}")
        if self.kind == "point" and not self.points:
            raise PromptError(f"prompt {self.prompt_id}: a point prompt needs at least one x,y point")
        if self.kind == "box":
            if self.box is None:
                raise PromptError(f"prompt {self.prompt_id}: a box prompt needs x0,y0,x1,y1")
            x0, y0, x1, y1 = self.box
            if x1 <= x0 or y1 <= y0:
                raise PromptError(f"prompt {self.prompt_id}: box {self.box} has x1<=x0 or y1<=y0")
        if self.kind in ("scribble", "mask"):
            if self.mask is None or self.mask.ndim != 2:
                raise PromptError(f"prompt {self.prompt_id}: a {self.kind} prompt needs a 2-D mask")
            if not self.mask.any():
                raise PromptError(f"prompt {self.prompt_id}: the {self.kind} mask has no nonzero pixel")
        if self.frame_index < 0:
            raise PromptError(f"prompt {self.prompt_id}: frame index {self.frame_index} is negative")
        if self.track_id is not None and self.track_id < 1:
            raise PromptError(f"prompt {self.prompt_id}: track id {self.track_id} is not positive")

    def validate(self, height: int, width: int) -> None:
        """Raise :class:`PromptError` naming the reason if the prompt does not fit a ``height`` x ``width`` frame."""
        where = f"prompt {self.prompt_id} ({self.kind}) on frame {self.frame_index}"
        for x, y in self.points:
            if not (0 <= x < width and 0 <= y < height):
                raise PromptError(f"{where}: point ({x:g},{y:g}) is outside the {width}x{height} frame")
        if self.box is not None:
            x0, y0, x1, y1 = self.box
            # A box reaching past an edge (an object cut by it, a sloppy drag) is clipped by to_mask.
            if x0 >= width or y0 >= height or x1 <= 0 or y1 <= 0:
                raise PromptError(f"{where}: box {self.box} lies entirely outside the {width}x{height} frame")
        if self.mask is not None and self.mask.shape != (height, width):
            raise PromptError(
                f"{where}: mask is {self.mask.shape[1]}x{self.mask.shape[0]}, the frame is {width}x{height}"
            )

    def to_mask(self, height: int, width: int) -> np.ndarray:
        """Rasterise the prompt to a boolean ``(height, width)`` mask."""
        self.validate(height, width)
        if self.mask is not None:
            return self.mask.astype(bool)
        canvas = np.zeros((height, width), np.uint8)
        if self.kind == "box":
            x0, x1 = (min(max(int(round(v)), 0), width) for v in self.box[::2])  # type: ignore[index]
            y0, y1 = (min(max(int(round(v)), 0), height) for v in self.box[1::2])  # type: ignore[index]
            canvas[y0:y1, x0:x1] = 1
        else:
            for x, y in self.points:
                cv2.circle(canvas, (int(round(x)), int(round(y))), POINT_RADIUS, 1, thickness=-1)
        return canvas.astype(bool)

    def with_frame(self, frame_index: int) -> "Prompt":
        return replace(self, frame_index=frame_index)

    def to_state(self) -> dict:
        """JSON values and the mask array (:mod:`operators.state`)."""
        return {"prompt_id": self.prompt_id, "kind": self.kind, "frame_index": self.frame_index,
                "points": [list(p) for p in self.points], "box": None if self.box is None else list(self.box),
                "mask": None if self.mask is None else self.mask.astype(bool, copy=False), "track_id": self.track_id}

    @classmethod
    def from_state(cls, state: object, where: str = "prompt") -> "Prompt":
        """The prompt :meth:`to_state` saved, checked as a parsed one is; :class:`StateError` otherwise."""
        s = StateReader(state, where)
        kind = s.text("kind")
        if kind not in ("point", "box", "scribble", "mask"):
            raise StateError(f"{where}.kind: unknown prompt kind {kind!r:.40}")
        points = [_numbers(p, 2, f"{where}.points") for p in s.items("points")]
        box = s.items("box", optional=True)
        try:
            return cls(s.integer("prompt_id"), kind, s.integer("frame_index"), tuple(points),  # type: ignore[arg-type]
                       None if box is None else _numbers(box, 4, f"{where}.box"),
                       s.array("mask", bool, (None, None), optional=True), s.integer("track_id", optional=True))
        except PromptError as exc:
            raise StateError(f"{where}: {exc}") from None


def _numbers(values: object, count: int, where: str) -> tuple:
    if not (isinstance(values, list) and len(values) == count
            and all(is_number(v) for v in values)):
        raise StateError(f"{where}: expected {count} numbers, got {values!r:.60}")
    return tuple(values)


@dataclass
class Instances:
    """Instance masks found in one frame, in the style of supervision's ``Detections``.

    ``track_ids`` is -1 until association assigns identities. ``embeddings`` is an
    optional appearance descriptor per instance that association may use.
    """

    masks: np.ndarray  # (N, H, W) bool
    scores: np.ndarray  # (N,) float32
    prompt_ids: np.ndarray  # (N,) int32
    track_ids: np.ndarray  # (N,) int64
    embeddings: np.ndarray | None = None  # (N, D) float32

    def __post_init__(self) -> None:
        n = len(self.masks)
        if self.masks.ndim != 3:
            raise ValueError(f"masks must be (N, H, W), got shape {self.masks.shape}")
        for name in ("scores", "prompt_ids", "track_ids"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{name} has {len(getattr(self, name))} entries for {n} masks")
        if self.embeddings is not None and len(self.embeddings) != n:
            raise ValueError(f"embeddings has {len(self.embeddings)} rows for {n} masks")

    @classmethod
    def empty(cls, height: int, width: int) -> "Instances":
        return cls(
            masks=np.zeros((0, height, width), bool),
            scores=np.zeros(0, np.float32),
            prompt_ids=np.zeros(0, np.int32),
            track_ids=np.zeros(0, np.int64),
        )

    @classmethod
    def from_masks(
        cls,
        masks: Sequence[np.ndarray] | np.ndarray,
        scores: Sequence[float],
        prompt_ids: Sequence[int],
        height: int,
        width: int,
        embeddings: np.ndarray | None = None,
    ) -> "Instances":
        if len(masks) == 0:
            return cls.empty(height, width)
        return cls(
            masks=np.asarray(masks, dtype=bool).reshape(len(masks), height, width),
            scores=np.asarray(scores, np.float32),
            prompt_ids=np.asarray(prompt_ids, np.int32),
            track_ids=np.full(len(masks), -1, np.int64),
            embeddings=None if embeddings is None else np.asarray(embeddings, np.float32),
        )

    def __len__(self) -> int:
        return len(self.masks)

    def __getstate__(self) -> dict:
        """Masks cross process boundaries as their bounding boxes' bits: cost follows object size, not frame size."""
        state = dict(self.__dict__)
        crops = []
        for mask in self.masks:
            x, y, w, h = cv2.boundingRect(np.ascontiguousarray(mask).view(np.uint8))
            crops.append(((y, x, h, w), np.packbits(mask[y : y + h, x : x + w])))
        state["masks"] = (crops, self.masks.shape)
        return state

    def __setstate__(self, state: dict) -> None:
        crops, shape = state["masks"]
        masks = np.zeros(shape, bool)
        for mask, ((y, x, h, w), bits) in zip(masks, crops):
            mask[y : y + h, x : x + w] = np.unpackbits(bits, count=h * w).view(bool).reshape(h, w)
        state["masks"] = masks
        self.__dict__.update(state)

    def to_state(self) -> dict:
        """Arrays only (:mod:`operators.state`): masks as they are, a checkpoint's file compresses them."""
        return {"masks": self.masks, "scores": self.scores, "prompt_ids": self.prompt_ids,
                "track_ids": self.track_ids, "embeddings": self.embeddings}

    @classmethod
    def from_state(cls, state: object, frame_size: tuple[int, int] | None = None,
                   where: str = "instances") -> "Instances":
        """The instances :meth:`to_state` saved, their masks ``frame_size`` (H, W) if given."""
        s = StateReader(state, where)
        height, width = frame_size or (None, None)
        masks = s.array("masks", bool, (None, height, width))
        n = len(masks)
        embeddings = s.array("embeddings", np.float32, (n, None), optional=True)
        return cls(masks, s.array("scores", np.float32, (n,)), s.array("prompt_ids", np.int32, (n,)),
                   s.array("track_ids", np.int64, (n,)), embeddings)

    def __getitem__(self, index: np.ndarray | slice | Sequence[int]) -> "Instances":
        return Instances(
            masks=self.masks[index],
            scores=self.scores[index],
            prompt_ids=self.prompt_ids[index],
            track_ids=self.track_ids[index],
            embeddings=None if self.embeddings is None else self.embeddings[index],
        )

    @property
    def shape(self) -> tuple[int, int]:
        return self.masks.shape[1], self.masks.shape[2]

    @property
    def areas(self) -> np.ndarray:
        # count_nonzero per mask: a popcount, ~10x faster than a boolean sum over an HD frame
        return np.array([np.count_nonzero(mask) for mask in self.masks], np.int64)

    @property
    def boxes_xyxy(self) -> np.ndarray:
        """Tight ``(N, 4)`` boxes ``x0, y0, x1, y1`` (exclusive max); zeros for empty masks."""
        boxes = np.zeros((len(self), 4), np.float32)
        for i, mask in enumerate(self.masks):
            x, y, w, h = cv2.boundingRect(np.ascontiguousarray(mask).view(np.uint8))
            if w:
                boxes[i] = (x, y, x + w, y + h)
        return boxes

    def object_dicts(self) -> list[dict]:
        """One JSON-ready dict per instance: ``track_id``, ``prompt_id``, ``score``, COCO ``bbox``
        ``[x, y, width, height]``, ``area`` and COCO compressed ``rle`` (``counts`` as an ASCII string)."""
        boxes = self.boxes_xyxy
        encoded = rle.encode(self.masks, boxes)
        objects = []
        for i, box in enumerate(boxes):
            x0, y0, x1, y1 = (int(v) for v in box)
            objects.append({
                "track_id": int(self.track_ids[i]),
                "prompt_id": int(self.prompt_ids[i]),
                "score": round(float(self.scores[i]), 4),
                "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
                "area": int(np.count_nonzero(self.masks[i, y0:y1, x0:x1])),  # inside its box
                "rle": encoded[i],
            })
        return objects

    def to_supervision(self) -> "sv.Detections":
        """These instances as supervision's ``sv.Detections`` (:mod:`operators.supervision_interop`)."""
        from operators.supervision_interop import to_detections

        return to_detections(self)

    @classmethod
    def from_supervision(cls, detections: "sv.Detections", frame_size: tuple[int, int] | None = None) -> "Instances":
        """Instances from supervision's ``sv.Detections``; ``frame_size`` (H, W) turns mask-less boxes into masks."""
        from operators.supervision_interop import from_detections

        return from_detections(detections, frame_size)

    def placed(self, box: Box, height: int, width: int) -> "Instances":
        """These instances, found in the crop ``box`` (x0, y0, x1, y1) of a ``height`` x ``width`` frame, on that frame."""
        x0, y0, x1, y1 = box
        if self.shape != (y1 - y0, x1 - x0):
            raise ValueError(f"masks are {self.shape}, the box {box} is {(y1 - y0, x1 - x0)}")
        masks = np.zeros((len(self), height, width), bool)
        masks[:, y0:y1, x0:x1] = self.masks
        return replace(self, masks=masks)

    def with_track_ids(self, track_ids: Sequence[int]) -> "Instances":
        return replace(self, track_ids=np.asarray(track_ids, np.int64))

    @staticmethod
    def concatenate(parts: Sequence["Instances"], height: int, width: int) -> "Instances":
        parts = [p for p in parts if len(p)]
        if not parts:
            return Instances.empty(height, width)
        with_embeddings = all(p.embeddings is not None for p in parts)
        return Instances(
            masks=np.concatenate([p.masks for p in parts]),
            scores=np.concatenate([p.scores for p in parts]),
            prompt_ids=np.concatenate([p.prompt_ids for p in parts]),
            track_ids=np.concatenate([p.track_ids for p in parts]),
            embeddings=np.concatenate([p.embeddings for p in parts]) if with_embeddings else None,
        )


@dataclass
class FrameRecord:
    """One frame's result: what every sink writes, one per decoded frame, in order.

    A record is not changed once made: its JSON form (:meth:`to_json`) is encoded once and shared by every
    sink that takes it.
    """

    stream_id: str
    frame_index: int
    pts: float | None  # presentation time in seconds, from the container
    kind: FrameKind
    instances: Instances
    absent_track_ids: tuple[int, ...] = ()
    reason: FrameReason | None = None  # a keyframe's reason, a skipped frame's; None for a propagated one
    image: np.ndarray | None = field(default=None, repr=False)  # RGB uint8, kept only for sinks that draw
    _json: str | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        allowed = {"keyframe": (None, *KEYFRAME_REASONS), "skipped": SKIP_REASONS, "propagated": (None,)}.get(self.kind)
        if allowed is None:
            raise ValueError(f"frame {self.frame_index}: unknown kind {self.kind!r:.40}; one of {', '.join(FRAME_KINDS)}")
        if self.reason not in allowed:
            raise ValueError(f"frame {self.frame_index}: {self.reason!r:.40} is not a reason for a {self.kind} frame")

    @property
    def height(self) -> int:
        return self.instances.shape[0]

    @property
    def width(self) -> int:
        return self.instances.shape[1]

    def to_dict(self) -> dict:
        """JSON-ready form: the schema of the JSONL file sink and the message-queue sinks.

        ``bbox`` is COCO ``[x, y, width, height]``; ``rle`` is COCO compressed RLE
        (``counts`` as an ASCII string), decodable by ``pycocotools.mask.decode``.
        """
        return json.loads(self.to_json())

    def to_json(self) -> str:
        """:meth:`to_dict` as compact JSON, RLE-encoded and serialised on the first call only."""
        if self._json is None:
            self._json = json.dumps({
                "stream_id": self.stream_id,
                "frame_index": self.frame_index,
                "pts": None if self.pts is None else round(self.pts, 6),
                "kind": self.kind,
                "reason": self.reason,
                "height": self.height,
                "width": self.width,
                "objects": self.instances.object_dicts(),
                "absent_track_ids": [int(t) for t in self.absent_track_ids],
            }, separators=(",", ":"))
        return self._json

    @classmethod
    def from_dict(cls, data: dict) -> "FrameRecord":
        """Inverse of :meth:`to_dict` (without the image): how consumers of sinks read records back."""
        objects = data["objects"]
        height, width = data["height"], data["width"]
        masks = rle.decode([o["rle"] for o in objects]) if objects else np.zeros((0, height, width), bool)
        instances = Instances(
            masks=masks.reshape(len(objects), height, width),
            scores=np.asarray([o["score"] for o in objects], np.float32),
            prompt_ids=np.asarray([o["prompt_id"] for o in objects], np.int32),
            track_ids=np.asarray([o["track_id"] for o in objects], np.int64),
        )
        return cls(
            stream_id=data["stream_id"],
            frame_index=data["frame_index"],
            pts=data["pts"],
            kind=data["kind"],
            instances=instances,
            absent_track_ids=tuple(data.get("absent_track_ids", ())),
            reason=data.get("reason"),
        )
