"""Identity metrics for mask tracks: CLEAR-MOT counts (ID switches, MOTA) and IDF1.

Inputs are per-frame ground truth ``{object id: (H, W) bool mask}`` (an object
with an empty mask is absent on that frame and counts nowhere) and per-frame
predicted :class:`~operators.records.Instances` with track ids. Predictions with
track id -1 (untracked) are left out and only counted (``untracked``).

Definitions, both with a mask-IoU threshold ``iou_threshold`` (0.5):

* **CLEAR-MOT** (Bernardin & Stiefelhagen, 2008), simplified to independent frames:
  each frame, predictions and present objects are matched by Hungarian assignment
  maximising IoU among pairs with IoU >= threshold. Unmatched objects are misses
  (FN), unmatched predictions false positives (FP). An **ID switch** is counted
  when an object is matched to a track id other than the one it was last matched
  to (on any earlier frame: gaps, absences included, do not reset it), so a
  re-entry under a new id is a switch. ``MOTA = 1 - (FN + FP + IDSW) / GT``,
  ``mean_iou`` the mean IoU of the matches (MOTP in IoU form).
* **IDF1** (Ristani et al., 2016): objects and tracks are matched once per clip
  by a bipartite matching maximising IDTP, the number of frames on which an
  object and its track are both present with IoU >= threshold. IDFN = GT - IDTP,
  IDFP = predictions - IDTP, ``IDF1 = 2 IDTP / (GT + predictions)``,
  ``IDP = IDTP / predictions``, ``IDR = IDTP / GT``.

GT counts (object, frame) pairs with a non-empty mask; predictions count tracked
instances. A track with several instances on one frame counts each of them
(the pipeline never emits that).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np
from operators.metrics import FrameTruth, hungarian_match, iou_matrix
from operators.records import Instances

IOU_THRESHOLD = 0.5


@dataclass(frozen=True)
class Switch:
    """One ID switch: ``object_id`` went from ``from_track`` to ``to_track`` on ``frame``.

    ``after_absence`` says whether the object was absent (empty ground truth) on
    some frame since its last match: a re-entry under a new id rather than a swap
    while visible.
    """

    frame: int
    object_id: int
    from_track: int
    to_track: int
    after_absence: bool


@dataclass(frozen=True)
class IdentityScores:
    frames: int
    gt: int  # (object, frame) pairs with a non-empty mask
    predictions: int  # tracked predicted instances
    untracked: int  # predicted instances with track id -1, left out
    matches: int  # CLEAR-MOT true positives
    misses: int  # FN
    false_positives: int  # FP
    id_switches: int
    mota: float
    mean_iou: float  # over CLEAR-MOT matches; nan without any
    idtp: int
    idfp: int
    idfn: int
    idf1: float
    idp: float
    idr: float
    track_of: dict[int, int]  # IDF1's object -> track matching
    tracks_per_object: dict[int, int]  # distinct track ids each object was matched to (CLEAR-MOT)
    spurious_tracks: tuple[int, ...]  # track ids never matched to any object (CLEAR-MOT): false tracks
    switches: tuple[Switch, ...] = field(default=(), repr=False)

    def to_dict(self, with_switches: bool = True) -> dict:
        data = asdict(self)
        data["track_of"] = {str(k): v for k, v in self.track_of.items()}
        data["tracks_per_object"] = {str(k): v for k, v in self.tracks_per_object.items()}
        if not with_switches:
            del data["switches"]
        return data


def _ratio(num: float, den: float, empty: float) -> float:
    return float(num / den) if den else empty


def _frame_match(ious: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    """Hungarian on IoU among pairs at or above ``threshold``: (prediction, object) index pairs."""
    return hungarian_match(np.where(ious >= threshold, ious, 0.0))


def identity_scores(
    pred_frames: Sequence[Instances], gt_frames: Sequence[FrameTruth], iou_threshold: float = IOU_THRESHOLD
) -> IdentityScores:
    """CLEAR-MOT counts and IDF1 of predicted tracks against ground-truth objects (see the module doc)."""
    if len(pred_frames) != len(gt_frames):
        raise ValueError(f"{len(pred_frames)} predicted frames for {len(gt_frames)} ground-truth frames")
    gt_total = n_pred = untracked = matches = false_pos = 0
    iou_sum = 0.0
    last_track: dict[int, int] = {}
    absent_since_match: set[int] = set()
    seen_tracks: dict[int, set[int]] = {}
    switches: list[Switch] = []
    pair_tp: dict[tuple[int, int], int] = {}  # (object, track) -> frames both present with IoU >= threshold
    gt_count: dict[int, int] = {}
    pred_count: dict[int, int] = {}

    for t, (pred, truth) in enumerate(zip(pred_frames, gt_frames)):
        tracked = pred.track_ids >= 0
        untracked += int(np.count_nonzero(~tracked))
        pred = pred[tracked]
        track_ids = [int(x) for x in pred.track_ids]
        present = [o for o in sorted(truth) if np.asarray(truth[o]).any()]
        for o in sorted(truth):
            if o not in present:
                absent_since_match.add(o)
        gt_total += len(present)
        n_pred += len(pred)
        for o in present:
            gt_count[o] = gt_count.get(o, 0) + 1
        for k in track_ids:
            pred_count[k] = pred_count.get(k, 0) + 1
        if present and len(pred):
            gt_masks = np.stack([np.asarray(truth[o], bool) for o in present])
            ious = iou_matrix(pred.masks, gt_masks)
        else:
            ious = np.zeros((len(pred), len(present)))
        # IDF1: every (object, track) overlap counts, independent of this frame's assignment.
        for p, g in zip(*np.nonzero(ious >= iou_threshold)):
            key = (present[g], track_ids[p])
            pair_tp[key] = pair_tp.get(key, 0) + 1
        # CLEAR-MOT: one-to-one per frame.
        matched = _frame_match(ious, iou_threshold)
        matches += len(matched)
        false_pos += len(pred) - len(matched)
        for p, g in matched:
            o, k = present[g], track_ids[p]
            iou_sum += float(ious[p, g])
            if o in last_track and last_track[o] != k:
                switches.append(Switch(t, o, last_track[o], k, o in absent_since_match))
            last_track[o] = k
            absent_since_match.discard(o)
            seen_tracks.setdefault(o, set()).add(k)

    misses = gt_total - matches
    objects = sorted(gt_count)
    tracks = sorted(pred_count)
    weight = np.zeros((len(objects), len(tracks)))
    for (o, k), n in pair_tp.items():
        weight[objects.index(o), tracks.index(k)] = n
    track_of: dict[int, int] = {}
    idtp = 0
    for r, c in hungarian_match(weight):  # the object-track pairing with the most frames matched (IDF1)
        track_of[objects[r]] = tracks[c]
        idtp += int(weight[r, c])
    return IdentityScores(
        frames=len(gt_frames),
        gt=gt_total,
        predictions=n_pred,
        untracked=untracked,
        matches=matches,
        misses=misses,
        false_positives=false_pos,
        id_switches=len(switches),
        mota=_ratio(gt_total - misses - false_pos - len(switches), gt_total, 1.0 if n_pred == 0 else float("nan")),
        mean_iou=_ratio(iou_sum, matches, float("nan")),
        idtp=idtp,
        idfp=n_pred - idtp,
        idfn=gt_total - idtp,
        idf1=_ratio(2 * idtp, gt_total + n_pred, 1.0),
        idp=_ratio(idtp, n_pred, 1.0),
        idr=_ratio(idtp, gt_total, 1.0),
        track_of=track_of,
        tracks_per_object={o: len(seen_tracks.get(o, ())) for o in objects},
        spurious_tracks=tuple(k for k in tracks if not any(k in ks for ks in seen_tracks.values())),
        switches=tuple(switches),
    )
