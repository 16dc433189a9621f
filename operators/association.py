"""Stable track identities across keyframes.

Detections of a keyframe are matched to the tracks (as propagated to the same
frame) by Hungarian assignment on a cost mixing mask IoU and appearance
similarity, gated by prompt id. Unmatched detections start new tracks (VGD
finds new instances as they enter). Tracks that vanish are reported absent and
keep their id if they come back, by appearance, within ``max_absent_frames``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

from operators.memory_bank import ObservationBank
from operators.metrics import iou_matrix
from operators.records import Instances, Prompt
from operators.state import StateError, StateReader


@dataclass(frozen=True)
class AssociationConfig:
    iou_weight: float = 0.7
    min_iou: float = 0.2  # a visible track needs at least this IoU to take a detection
    min_reentry_similarity: float = 0.8  # an absent track needs this appearance similarity to come back
    max_drift: float = 1.0  # centre distance, in object sizes, over which a drifted track can still match
    birth_score: float = 0.3  # a new track needs at least this detection score
    coast_score: float = 0.5  # an unmatched propagated track this confident is kept for a keyframe or two
    max_coast_keyframes: int = 1
    max_absent_frames: int = 150
    bank_slots: int = 4  # appearance observations kept per track: the first, pinned, plus the latest confident
    bank_min_score: float = 0.5


@dataclass
class _Track:
    track_id: int
    prompt_id: int
    bank: ObservationBank
    last_seen: int
    coasted: int = 0


def _centre_distance(a: Instances, b: Instances) -> np.ndarray:
    """Pairwise box-centre distance divided by the larger object's size (square root of box area)."""
    boxes_a, boxes_b = a.boxes_xyxy, b.boxes_xyxy
    centres_a = (boxes_a[:, :2] + boxes_a[:, 2:]) / 2
    centres_b = (boxes_b[:, :2] + boxes_b[:, 2:]) / 2
    size_a = np.sqrt(np.prod(boxes_a[:, 2:] - boxes_a[:, :2], axis=1))
    size_b = np.sqrt(np.prod(boxes_b[:, 2:] - boxes_b[:, :2], axis=1))
    gap = np.linalg.norm(centres_a[:, None, :] - centres_b[None, :, :], axis=2)
    return gap / np.maximum(np.maximum(size_a[:, None], size_b[None, :]), 1.0)


@dataclass
class TrackAssigner:
    """Per-stream identity state: a bounded table of live and recently absent tracks."""

    config: AssociationConfig = field(default_factory=AssociationConfig)
    tracks: dict[int, _Track] = field(default_factory=dict)
    next_id: int = 1

    def _new_track(self, prompt_id: int, embedding: np.ndarray | None, frame_index: int,
                   track_id: int | None = None) -> int:
        if track_id is None:
            track_id = self.next_id
            self.next_id += 1
        bank = ObservationBank(self.config.bank_slots, self.config.bank_min_score)
        bank.write(embedding, score=1.0)
        self.tracks[track_id] = _Track(track_id, prompt_id, bank, frame_index)
        return track_id

    def to_state(self) -> dict:
        """Everything but the config (the stream's settings give it): see :mod:`operators.state`."""
        tracks = [{"track_id": t.track_id, "prompt_id": t.prompt_id, "bank": t.bank.to_state(),
                   "last_seen": t.last_seen, "coasted": t.coasted} for t in self.tracks.values()]
        return {"tracks": tracks, "next_id": self.next_id}

    @classmethod
    def from_state(cls, config: AssociationConfig, state: object) -> "TrackAssigner":
        """The tracks :meth:`to_state` saved, in their order; :class:`operators.state.StateError` if not one."""
        s = StateReader(state, "track_assigner")
        tracks: dict[int, _Track] = {}
        for t in s.readers("tracks"):
            track_id = t.integer("track_id", minimum=1)
            if track_id in tracks:
                raise StateError(f"{t.where}: track id {track_id} appears twice")
            bank = ObservationBank.from_state(config.bank_slots, config.bank_min_score, t.value("bank"),
                                              f"{t.where}.bank")
            tracks[track_id] = _Track(track_id, t.integer("prompt_id"), bank, t.integer("last_seen"),
                                      t.integer("coasted", minimum=0))
        next_id = s.integer("next_id", minimum=max(tracks, default=0) + 1)
        return cls(config, tracks, next_id)

    def nbytes(self) -> int:
        """Appearance memory of all live and recently absent tracks."""
        return sum(t.bank.nbytes() for t in self.tracks.values())

    def _cost(self, detections: Instances, propagated: Instances, absent: list[_Track]) -> np.ndarray:
        """Cost matrix detections x (visible tracks + absent tracks); inf where gated out.

        Overlap decides first. A visible track whose propagated mask drifted off
        its object (occlusion, fast motion) can still take a nearby detection that
        looks like it; an absent track can take any detection that looks like it.
        """
        cfg = self.config
        iou = iou_matrix(detections.masks, propagated.masks)
        distance = _centre_distance(detections, propagated)
        cost = np.full((len(detections), len(propagated) + len(absent)), np.inf)
        for d in range(len(detections)):
            emb = None if detections.embeddings is None else detections.embeddings[d]
            for t in range(len(propagated)):
                track = self.tracks.get(int(propagated.track_ids[t]))
                if track is None or track.prompt_id != detections.prompt_ids[d]:
                    continue
                sim = track.bank.similarity(emb) if track.bank.pinned is not None else iou[d, t]
                if iou[d, t] >= cfg.min_iou:
                    cost[d, t] = 1.0 - (cfg.iou_weight * iou[d, t] + (1 - cfg.iou_weight) * sim)
                elif sim >= cfg.min_reentry_similarity and distance[d, t] <= cfg.max_drift:
                    cost[d, t] = 1.5 - 0.5 * sim + 0.25 * distance[d, t]
            if detections.scores[d] < cfg.birth_score:
                continue  # a doubtful detection may extend a visible track but not bring one back
            for a, track in enumerate(absent):
                if track.prompt_id != detections.prompt_ids[d]:
                    continue
                sim = track.bank.similarity(emb)
                if sim >= cfg.min_reentry_similarity:
                    cost[d, len(propagated) + a] = 2.5 - sim  # above every visible match (at most 1.35)
        return cost

    def assign_keyframe(
        self, detections: Instances, propagated: Instances, frame_index: int, births: bool = True,
        named: Sequence[Prompt] = (),
    ) -> Instances:
        """Give keyframe detections track ids, using the tracks warped to this frame as reference.

        ``births=False``: detections that match no track are dropped rather than start one (a keyframe that
        only re-anchors the tracked objects). ``named``: this frame's new prompts that ask for a track id
        (:attr:`Prompt.track_id`); see :meth:`_named_births`.
        """
        cfg = self.config
        visible_ids = set(propagated.track_ids.tolist())
        absent = [t for t in self.tracks.values()
                  if t.track_id not in visible_ids and frame_index - t.last_seen <= cfg.max_absent_frames]
        cost = self._cost(detections, propagated, absent)
        finite = np.where(np.isfinite(cost), cost, 1e6)
        rows, cols = linear_sum_assignment(finite) if cost.size else (np.array([], int), np.array([], int))
        ids = np.full(len(detections), -1, np.int64)
        matched_visible: set[int] = set()
        for d, c in zip(rows, cols):
            if not np.isfinite(cost[d, c]):
                continue
            track = self.tracks[int(propagated.track_ids[c])] if c < len(propagated) else absent[c - len(propagated)]
            ids[d] = track.track_id
            matched_visible.add(track.track_id)
        born: set[int] = set()
        newborn = [int(d) for d in np.flatnonzero(ids < 0) if births and detections.scores[d] >= cfg.birth_score]
        asked = self._named_births(detections, newborn, named)
        if asked:  # the next free ids start above the asked ones
            self.next_id = max(self.next_id, max(asked.values()) + 1)
        for d in newborn:
            emb = None if detections.embeddings is None else detections.embeddings[d]
            ids[d] = self._new_track(int(detections.prompt_ids[d]), emb, frame_index, asked.get(d))
            born.add(int(ids[d]))
        kept = detections.with_track_ids(ids)[ids >= 0]
        coasting = self._coasting(propagated, matched_visible)
        result = Instances.concatenate([kept, coasting], *detections.shape)
        self._refresh_tracks(result, frame_index, coasted=set(coasting.track_ids.tolist()), born=born)
        return result

    def _named_births(self, detections: Instances, newborn: list[int], named: Sequence[Prompt]) -> dict[int, int]:
        """Detection -> the track id its prompt asks for: per prompt, the new detection overlapping the prompt's
        mask most (none if no detection overlaps it). Only ids no track has had yet are given (all of them on the
        stream's first prompt frame); otherwise the object takes the next free id, as any other."""
        asked: dict[int, int] = {}
        for prompt in named:
            mine = [d for d in newborn if detections.prompt_ids[d] == prompt.prompt_id and d not in asked]
            if prompt.track_id is None or prompt.track_id < self.next_id or prompt.track_id in asked.values() or not mine:
                continue
            overlap = iou_matrix(detections.masks[mine], prompt.to_mask(*detections.shape)[None])[:, 0]
            if overlap.max() > 0:  # a detection elsewhere is another instance of the kind, not the object
                asked[mine[int(np.argmax(overlap))]] = prompt.track_id
        return asked

    def _coasting(self, propagated: Instances, matched: set[int]) -> Instances:
        """Confident propagated tracks the keyframe missed, kept for at most ``max_coast_keyframes``."""
        keep = [
            i
            for i, tid in enumerate(propagated.track_ids.tolist())
            if tid not in matched
            and tid in self.tracks
            and propagated.scores[i] >= self.config.coast_score
            and self.tracks[tid].coasted < self.config.max_coast_keyframes
        ]
        return propagated[np.asarray(keep, int)]

    def _refresh_tracks(self, instances: Instances, frame_index: int, coasted: set[int], born: set[int]) -> None:
        """Tracks seen on a keyframe; their appearance is written, except a coasting track's (no detection)
        and a new track's (its birth pinned it already)."""
        no_new_look = coasted | born
        for i, tid in enumerate(instances.track_ids.tolist()):
            track = self.tracks[tid]
            track.last_seen = frame_index
            track.coasted = track.coasted + 1 if tid in coasted else 0
            if instances.embeddings is not None and tid not in no_new_look:
                track.bank.write(instances.embeddings[i], float(instances.scores[i]))

    def forget_prompts(self, prompt_ids: set[int]) -> None:
        """Drop the tracks of removed prompts: they can never come back."""
        self.tracks = {tid: t for tid, t in self.tracks.items() if t.prompt_id not in prompt_ids}

    def observe(self, instances: Instances, frame_index: int) -> None:
        """Note tracks seen on a propagated frame (ids already set by propagation)."""
        for tid in instances.track_ids.tolist():
            if tid in self.tracks:
                self.tracks[tid].last_seen = frame_index

    def absent(self, visible: Instances, frame_index: int) -> tuple[int, ...]:
        """Ids of tracks not visible now but still within the re-entry window; forgets older ones."""
        limit = self.config.max_absent_frames
        self.tracks = {tid: t for tid, t in self.tracks.items() if frame_index - t.last_seen <= limit}
        visible_ids = set(visible.track_ids.tolist())
        return tuple(sorted(tid for tid in self.tracks if tid not in visible_ids))
