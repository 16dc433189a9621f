"""One long video as chunks processed at once: where each chunk starts and ends, and how its track ids are
stitched to the earlier chunk's by mask IoU on the frames the two share.

Chunk ``k`` processes frames ``[start, stop)`` and owns ``[own_from, stop)``: its records of the frames
before ``own_from`` (the overlap, owned by chunk ``k - 1``, which processes them too) serve only to match
its tracks with the earlier chunk's. A chunk after the first starts with a keyframe on the prompts' memory
encoded once, so every chunk's first overlap frame is a keyframe; the overlap is at least one frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

from operators.annotate import track_slots
from operators.records import Instances

#: Shared frames' masks of one track in each chunk need at least this IoU (over the overlap) to be one track.
STITCH_MIN_IOU = 0.3


@dataclass(frozen=True)
class Chunk:
    index: int
    start: int  # first frame processed
    stop: int | None  # first frame not processed; None: to the end of the video
    own_from: int  # first frame whose record is this chunk's in the output

    def __post_init__(self) -> None:
        if not 0 <= self.start <= self.own_from or (self.stop is not None and self.stop <= self.own_from):
            raise ValueError(f"chunk {self.index}: frames [{self.start}, {self.stop}) owning from {self.own_from}")

    @property
    def label(self) -> str:
        """The chunk's folder name: its index, zero-padded so folders list in order."""
        return f"{self.index:03d}"

    def to_dict(self) -> dict:
        return {"index": self.index, "start": self.start, "stop": self.stop, "own_from": self.own_from}


def plan_chunks(frames: int, count: int, overlap: int, first_free: int = 0) -> list[Chunk]:
    """``count`` chunks of about equal work (owned frames plus overlap) over a ``frames``-frame video, each
    after the first sharing ``overlap`` frames with the one before.

    ``first_free``: the first frame a later chunk may process; the frames before it (those with prompts,
    which only the first chunk encodes on their own frame) stay in the first chunk. Fewer chunks than
    ``count`` where the video is too short for each to own more than its overlap; one chunk is no split.
    """
    if count < 1 or overlap < 1:
        raise ValueError(f"chunks need count >= 1 and overlap >= 1, got {count} and {overlap}")
    while count > 1:
        work = (frames + (count - 1) * overlap) / count  # frames each chunk processes
        bounds = [0] + [round(work + k * (work - overlap)) for k in range(count - 1)] + [frames]
        bounds[1] = max(bounds[1], first_free + overlap)
        if all(b - a > overlap for a, b in zip(bounds[1:], bounds[2:])) and bounds[1] > overlap:
            break
        count -= 1
    if count == 1:
        return [Chunk(0, 0, None, 0)]
    return [Chunk(k, max(0, own - overlap) if k else 0, None if k == count - 1 else bounds[k + 1], own)
            for k, own in enumerate(bounds[:-1])]


def _areas(frames: Sequence[Instances]) -> dict[int, int]:
    areas: dict[int, int] = {}
    for instances in frames:
        for track_id, area in zip(instances.track_ids.tolist(), instances.areas.tolist()):
            areas[track_id] = areas.get(track_id, 0) + area
    return areas


def match_tracks(earlier: Sequence[Instances], later: Sequence[Instances],
                 min_iou: float = STITCH_MIN_IOU) -> dict[int, int]:
    """The later chunk's track id -> the earlier chunk's, from the two chunks' records of the same frames.

    A pair's IoU is over all the shared frames at once (intersections summed over summed unions), so a
    track seen on one frame only weighs little; tracks of different prompts never match. Hungarian
    assignment on that IoU, pairs under ``min_iou`` left unmatched (the later track then gets a new id).
    """
    if len(earlier) != len(later):
        raise ValueError(f"{len(earlier)} and {len(later)} shared frames")
    earlier_area, later_area = _areas(earlier), _areas(later)
    prompts = {int(t): int(p) for frame in (*earlier, *later) for t, p in zip(frame.track_ids, frame.prompt_ids)}
    earlier_ids, later_ids = sorted(earlier_area), sorted(later_area)
    inter = np.zeros((len(later_ids), len(earlier_ids)))
    row, col = {t: i for i, t in enumerate(later_ids)}, {t: j for j, t in enumerate(earlier_ids)}
    for a, b in zip(earlier, later):
        for j, mask_a in zip(a.track_ids.tolist(), a.masks):
            for i, mask_b in zip(b.track_ids.tolist(), b.masks):
                if prompts[i] == prompts[j]:
                    inter[row[i], col[j]] += np.count_nonzero(mask_a & mask_b)
    union = np.array([[later_area[i] + earlier_area[j] for j in earlier_ids] for i in later_ids]).reshape(inter.shape)
    iou = inter / np.maximum(union - inter, 1)
    rows, cols = linear_sum_assignment(-iou) if iou.size else ((), ())
    return {later_ids[r]: earlier_ids[c] for r, c in zip(rows, cols) if iou[r, c] >= min_iou}


@dataclass
class TrackStitcher:
    """Chunk-local track ids -> the video's, chunk after chunk in order.

    The first chunk's ids are the video's. A later chunk's track matched (:func:`match_tracks`) to one of
    the earlier chunk's takes that track's video id; an unmatched one takes the next id no chunk has used.
    """

    next_id: int = 1
    mapping: dict[int, int] = field(default_factory=dict)  # the current chunk's
    identity: bool = True  # the current chunk is the first

    def start_chunk(self, matches: dict[int, int]) -> None:
        """A later chunk begins; ``matches``: its track id -> the earlier chunk's."""
        previous = self.mapping
        self.mapping = {later: previous[earlier] for later, earlier in matches.items() if earlier in previous}
        self.identity = False

    def video_id(self, track_id: int) -> int:
        if track_id not in self.mapping:
            self.mapping[track_id] = track_id if self.identity else self.next_id
        video_id = self.mapping[track_id]
        self.next_id = max(self.next_id, video_id + 1)
        return video_id

    def remap(self, record: dict) -> bool:
        """Give a record's (``FrameRecord.to_dict``) track ids the video's, in place; whether any changed."""
        changed = False
        for obj in record["objects"]:
            new = self.video_id(obj["track_id"])
            changed |= new != obj["track_id"]
            obj["track_id"] = new
        absent = sorted(self.video_id(t) for t in record["absent_track_ids"])
        changed |= absent != record["absent_track_ids"]
        record["absent_track_ids"] = absent
        return changed

    def slot_table(self) -> np.ndarray:
        """A 256-entry lookup from each local track's palette slot to its video id's (others kept): a chunk's
        PNG masks relabelled. Exact while the chunk's ids stay under 255 (larger ones share wrapped slots)."""
        table = np.arange(256, dtype=np.uint8)
        local = np.array(sorted(self.mapping), np.int64)
        if len(local):
            table[track_slots(local)] = track_slots(np.array([self.mapping[t] for t in local], np.int64))
        return table
