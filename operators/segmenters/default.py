"""Weight-free VGD segmenter: GrabCut on the prompt, then colour-model search for every look-alike.

It lets the whole pipeline do real work on a CPU with nothing to download. The
prompted object is cut out with GrabCut seeded by the prompt; its appearance is
kept as a posterior P(object | colour) over a Lab colour histogram (object versus
the rest of the frame), a Hellinger colour descriptor and its size. On every
keyframe the posterior is back-projected and cleaned up; blobs that together fit
within one object's extent (an object cut in pieces by an occluder) are grouped,
and each group of plausible size becomes an instance, scored by how closely its
colours and size match the exemplar.

The user's prompt is pinned: :meth:`DefaultSegmenter.refresh` only moves a second,
adaptive copy of the model, and searches blend the two with the adaptive part
weighted at most ``adapt_weight``, so drift stays bounded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Sequence

import cv2
import numpy as np
from scipy.ndimage import gaussian_filter

from operators.records import POINT_RADIUS, Box, Instances, Prompt
from operators.state import StateReader

#: Lab histogram bins (L, a, b) for the posterior; the descriptor halves each axis.
COLOUR_BINS = (8, 16, 16)
DESCRIPTOR_BINS = (4, 8, 8)
N_COLOURS = int(np.prod(COLOUR_BINS))
#: Background density floor: a colour the prompt frame hardly shows (e.g. a blackout) is background
#: unless the object's own density there is well above an even spread over all bins.
UNSEEN_COLOUR_DENSITY = 2 / N_COLOURS
#: A point, scribble or mask prompt's GrabCut window starts at 6 point radii and may double this often.
_MAX_WINDOW_DOUBLINGS = 3
#: GrabCut runs on at most this many pixels (a larger window is cut at a lower resolution and scaled back):
#: its cost grows with the window, which doubles for a point or scribble on a large region (a stroke across
#: Big Buck Bunny's 720p grass took 9.3 s at full resolution, 0.7 s so; a box on its rock 0.29 s, 0.15 s so,
#: the cut 0.96 IoU of the full-resolution one).
GRABCUT_MAX_PIXELS = 60_000


def colour_bins(frame: np.ndarray) -> np.ndarray:
    """Per-pixel index into the ``COLOUR_BINS`` Lab histogram, as ``(H, W)`` int32."""
    lab = cv2.cvtColor(frame, cv2.COLOR_RGB2Lab)
    l_bin = lab[..., 0].astype(np.int32) * COLOUR_BINS[0] >> 8
    a_bin = lab[..., 1].astype(np.int32) * COLOUR_BINS[1] >> 8
    b_bin = lab[..., 2].astype(np.int32) * COLOUR_BINS[2] >> 8
    return (l_bin * COLOUR_BINS[1] + a_bin) * COLOUR_BINS[2] + b_bin


def _normalised(counts: np.ndarray) -> np.ndarray:
    total = counts.sum(axis=-1, keepdims=True)
    return counts / np.maximum(total, 1)


def colour_descriptor(colour_histogram: np.ndarray) -> np.ndarray:
    """Unit-norm square-rooted coarse histogram: dot products are Bhattacharyya coefficients.

    Accepts one ``(N_COLOURS,)`` histogram or a stack ``(K, N_COLOURS)``.
    """
    n = int(np.prod(colour_histogram.shape[:-1]))
    l_bins, a_bins, b_bins = DESCRIPTOR_BINS
    coarse = colour_histogram.reshape(n, l_bins, 2, a_bins, 2, b_bins, 2).sum(axis=(2, 4, 6))
    root = np.sqrt(_normalised(coarse.reshape(n, -1)))
    unit = root / np.maximum(np.linalg.norm(root, axis=1, keepdims=True), 1e-12)
    return unit.astype(np.float32).reshape(colour_histogram.shape[:-1] + (unit.shape[-1],))


@dataclass(frozen=True)
class Appearance:
    """What the object looks like: small, fixed-size arrays whatever the stream length."""

    posterior: np.ndarray  # (N_COLOURS,) float32: P(object | colour), equal priors
    descriptor: np.ndarray  # (D,) float32, unit norm
    area: float  # typical instance area, as a fraction of the frame's area
    extent: float  # typical instance bounding-box diagonal, as a fraction of the frame's diagonal

    @classmethod
    def of(cls, bins: np.ndarray, masks: np.ndarray, smoothing: float) -> "Appearance":
        """Appearance of the ``(N, H, W)`` instance ``masks`` against the rest of the frame."""
        union = masks.any(axis=0)
        inside = np.bincount(bins[union], minlength=N_COLOURS)
        # The rest of the frame as all of it minus the inside: one pass over the frame, not a second mask.
        outside = (np.bincount(bins.ravel(), minlength=N_COLOURS) - inside).astype(np.float64)
        inside = inside.astype(np.float64)
        p_obj = gaussian_filter(_normalised(inside).reshape(COLOUR_BINS), smoothing).ravel()
        p_bg = gaussian_filter(_normalised(outside).reshape(COLOUR_BINS), smoothing).ravel()
        posterior = p_obj / (p_obj + p_bg + UNSEEN_COLOUR_DENSITY)
        h, w = bins.shape
        areas = [np.count_nonzero(m) / (h * w) for m in masks]
        extents = [math.hypot(x1 - x0, y1 - y0) / math.hypot(h, w) for x0, y0, x1, y1 in map(_box_of, masks)]
        return cls(
            posterior.astype(np.float32), colour_descriptor(inside), float(np.median(areas)), float(np.median(extents))
        )

    def blend(self, other: "Appearance", weight: float) -> "Appearance":
        """``(1 - weight) * self + weight * other``; sizes blend geometrically."""
        mixed = (1 - weight) * self.descriptor + weight * other.descriptor

        def geometric(a: float, b: float) -> float:
            return float(math.exp((1 - weight) * math.log(a) + weight * math.log(b)))

        return Appearance(
            posterior=((1 - weight) * self.posterior + weight * other.posterior).astype(np.float32),
            descriptor=(mixed / max(float(np.linalg.norm(mixed)), 1e-12)).astype(np.float32),
            area=geometric(self.area, other.area),
            extent=geometric(self.extent, other.extent),
        )

    @property
    def nbytes(self) -> int:
        return self.posterior.nbytes + self.descriptor.nbytes + 16

    def to_state(self) -> dict:
        return {"posterior": self.posterior, "descriptor": self.descriptor, "area": self.area, "extent": self.extent}

    @classmethod
    def from_state(cls, state: object, where: str) -> "Appearance":
        s = StateReader(state, where)
        return cls(s.array("posterior", np.float32, (N_COLOURS,)),
                   s.array("descriptor", np.float32, (int(np.prod(DESCRIPTOR_BINS)),)),
                   s.number("area"), s.number("extent"))


@dataclass(frozen=True)
class PromptModel:
    """One prompt's appearance: ``pinned`` from the user's prompt, ``adaptive`` from keyframes."""

    prompt_id: int
    pinned: Appearance
    adaptive: Appearance


@dataclass(frozen=True)
class DefaultPromptMemory:
    """Per-stream memory of :class:`DefaultSegmenter`; constant in size."""

    models: tuple[PromptModel, ...]

    @property
    def prompt_ids(self) -> tuple[int, ...]:
        return tuple(m.prompt_id for m in self.models)

    def nbytes(self) -> int:
        return sum(8 + m.pinned.nbytes + m.adaptive.nbytes for m in self.models)

    def to_state(self) -> dict:
        models = [{"prompt_id": m.prompt_id, "pinned": m.pinned.to_state(), "adaptive": m.adaptive.to_state()}
                  for m in self.models]
        return {"models": models}

    @classmethod
    def from_state(cls, state: object) -> "DefaultPromptMemory":
        """The memory :meth:`to_state` saved; :class:`operators.state.StateError` if ``state`` is not one."""
        models = []
        for m in StateReader(state, "memory").readers("models"):
            pinned, adaptive = (Appearance.from_state(m.value(name), f"{m.where}.{name}")
                                for name in ("pinned", "adaptive"))
            models.append(PromptModel(m.integer("prompt_id"), pinned, adaptive))
        return cls(tuple(models))


def _disk(radius: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill every region of background not connected to the frame edge."""
    padded = np.pad(mask.astype(np.uint8), 1)
    cv2.floodFill(padded, None, (0, 0), 2)
    return (padded != 2)[1:-1, 1:-1]


def _shrink_labels(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """GrabCut labels at ``size`` (width, height): a cell any (probable) foreground pixel falls in keeps it,
    so a thin stroke survives the shrink; sure foreground wins over probable."""
    small = cv2.resize(labels, size, interpolation=cv2.INTER_NEAREST)
    for label in (cv2.GC_PR_FGD, cv2.GC_FGD):
        small[cv2.resize((labels == label).astype(np.float32), size, interpolation=cv2.INTER_AREA) > 0] = label
    return small


def _box_of(mask: np.ndarray) -> Box:
    """Tight box of a non-empty boolean mask."""
    x, y, w, h = cv2.boundingRect(np.ascontiguousarray(mask).view(np.uint8))
    return x, y, x + w, y + h


def _grow_box(box: Box, margin: float, min_side: int, h: int, w: int) -> Box:
    """``box`` enlarged by ``margin`` of its size on every side and to ``min_side``, clipped to the frame."""
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    half_w = max((x1 - x0) * (0.5 + margin), min_side / 2)
    half_h = max((y1 - y0) * (0.5 + margin), min_side / 2)
    x0, y0 = max(0, int(cx - half_w)), max(0, int(cy - half_h))
    return x0, y0, min(w, math.ceil(cx + half_w)), min(h, math.ceil(cy + half_h))


def _union(a: Box, b: Box) -> Box:
    return min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])


def _group_fragments(stats: np.ndarray, fragments: np.ndarray, max_extent: float) -> list[list[int]]:
    """Greedily group connected components, largest first, while a group's box diagonal stays within
    ``max_extent``: the pieces of one object cut by an occluder fit in one object's extent; two
    instances side by side do not."""
    members: list[list[int]] = []
    boxes: list[Box] = []
    for label in sorted(fragments, key=lambda c: -stats[c, cv2.CC_STAT_AREA]):
        x, y, w, h = (int(v) for v in stats[label, :4])
        box = (x, y, x + w, y + h)
        for i, group_box in enumerate(boxes):
            union = _union(box, group_box)
            if math.hypot(union[2] - union[0], union[3] - union[1]) <= max_extent:
                members[i].append(int(label))
                boxes[i] = union
                break
        else:
            members.append([int(label)])
            boxes.append(box)
    return members


class DefaultSegmenter:
    """GrabCut exemplar + Lab colour posterior back-projection; see the module docstring.

    ``adapt_weight`` caps the refreshed model's share of every search; ``adapt_rate``
    is how far one refresh moves it; only instances scoring ``refresh_min_score`` or
    more teach it. Blobs under ``min_fragment_ratio`` of the expected area are noise;
    groups of blobs under ``min_area_ratio`` of it are too small to be the object.
    """

    name = "default"
    lightweight = True
    memory_type = DefaultPromptMemory

    def __init__(
        self,
        grabcut_iterations: int = 4,
        threshold: float = 0.5,
        min_area_ratio: float = 0.2,
        min_fragment_ratio: float = 0.05,
        histogram_smoothing: float = 0.7,
        adapt_weight: float = 0.4,
        adapt_rate: float = 0.3,
        refresh_min_score: float = 0.6,
        min_score: float = 0.05,
    ) -> None:
        self.grabcut_iterations = grabcut_iterations
        self.threshold = threshold
        self.min_area_ratio = min_area_ratio
        self.min_fragment_ratio = min_fragment_ratio
        self.histogram_smoothing = histogram_smoothing
        self.adapt_weight = adapt_weight
        self.adapt_rate = adapt_rate
        self.refresh_min_score = refresh_min_score
        self.min_score = min_score  # below it a blob is noise, not an instance worth encoding and tracking
        # The last whole frame searched and its colour bins: a keyframe's refresh follows its search on the
        # same frame and reuses them (a third of the refresh's cost on an HD frame).
        self._searched: tuple[np.ndarray, np.ndarray] | None = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_searched": None}

    # -- prompts ---------------------------------------------------------------------------

    def encode_prompts(self, frame: np.ndarray, prompts: Sequence[Prompt]) -> DefaultPromptMemory:
        bins = colour_bins(frame)
        models = []
        for prompt in prompts:
            appearance = Appearance.of(bins, self.cut_out(frame, prompt)[None], self.histogram_smoothing)
            models.append(PromptModel(prompt.prompt_id, appearance, appearance))
        return DefaultPromptMemory(tuple(models))

    def cut_out(self, frame: np.ndarray, prompt: Prompt) -> np.ndarray:
        """The prompted object's mask on ``frame``: GrabCut seeded by the prompt.

        A box bounds the object; a point, scribble or mask only says where it is, so
        the search window doubles while the cut reaches the window's edge.
        """
        h, w = frame.shape[:2]
        seed = prompt.to_mask(h, w)
        if prompt.kind == "box":
            return self._grabcut(frame, seed, _box_of(seed), core=None)
        depth = cv2.distanceTransform(np.pad(seed, 1).astype(np.uint8), cv2.DIST_L2, 3)[1:-1, 1:-1]
        core = depth >= 0.7 * depth.max()
        side = 6 * POINT_RADIUS
        for _ in range(1 + _MAX_WINDOW_DOUBLINGS):
            window = _grow_box(_box_of(seed), 0.5, side, h, w)
            mask = self._grabcut(frame, seed, window, core)
            if not self._reaches_edge(mask, window, h, w):
                break
            side *= 2
        return mask

    def _grabcut(self, frame: np.ndarray, seed: np.ndarray, window: Box, core: np.ndarray | None) -> np.ndarray:
        """GrabCut in ``window`` (plus a sure-background margin), keeping the blob on the seed.

        Without a ``core`` the window is a box and all probable foreground; otherwise it
        is probable background around the probable-foreground seed and its sure core.
        """
        h, w = frame.shape[:2]
        x0, y0, x1, y1 = window
        labels = np.full((h, w), cv2.GC_BGD, np.uint8)
        labels[y0:y1, x0:x1] = cv2.GC_PR_FGD if core is None else cv2.GC_PR_BGD
        if core is not None:
            labels[seed] = cv2.GC_PR_FGD
            labels[core] = cv2.GC_FGD
        rx0, ry0, rx1, ry1 = _grow_box(window, 0.25, 0, h, w)
        roi_labels = np.ascontiguousarray(labels[ry0:ry1, rx0:rx1])
        roi_image = np.ascontiguousarray(frame[ry0:ry1, rx0:rx1])
        scale = min(1.0, (GRABCUT_MAX_PIXELS / roi_labels.size) ** 0.5)
        if scale < 1.0:
            size = (max(1, round(roi_labels.shape[1] * scale)), max(1, round(roi_labels.shape[0] * scale)))
            roi_image, roi_labels = cv2.resize(roi_image, size, interpolation=cv2.INTER_AREA), _shrink_labels(roi_labels, size)
        models = (np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64))
        cv2.setRNGSeed(0)  # GrabCut seeds its colour models with k-means on OpenCV's global RNG
        try:
            cv2.grabCut(roi_image, roi_labels, None, *models, self.grabcut_iterations, cv2.GC_INIT_WITH_MASK)
        except cv2.error:  # one colour class empty (e.g. the window is the whole frame): keep the seed
            return seed
        if scale < 1.0:
            roi_labels = cv2.resize(roi_labels, (rx1 - rx0, ry1 - ry0), interpolation=cv2.INTER_NEAREST)
        labels[ry0:ry1, rx0:rx1] = roi_labels
        if scale < 1.0 and core is not None:  # GrabCut keeps sure labels: only a scaled-back cut can lose them
            labels[core] = cv2.GC_FGD  # sure foreground at full resolution, however thin the stroke
        foreground = (labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD)
        count, blobs, stats, _ = cv2.connectedComponentsWithStats(foreground.astype(np.uint8), connectivity=8)
        if count == 1:
            return seed
        if core is None:
            keep = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
            return _fill_holes(blobs == keep)
        on_core = np.unique(blobs[core & foreground])
        return _fill_holes(np.isin(blobs, on_core[on_core > 0])) if on_core.any() else seed

    @staticmethod
    def _reaches_edge(mask: np.ndarray, window: Box, h: int, w: int) -> bool:
        """Whether ``mask`` touches a side of ``window`` that is not the frame's edge."""
        x0, y0, x1, y1 = window
        return bool(
            (x0 > 0 and mask[y0:y1, x0].any())
            or (y0 > 0 and mask[y0, x0:x1].any())
            or (x1 < w and mask[y0:y1, x1 - 1].any())
            or (y1 < h and mask[y1 - 1, x0:x1].any())
        )

    # -- search ----------------------------------------------------------------------------

    def segment(self, frame: np.ndarray, memory: DefaultPromptMemory) -> Instances:
        h, w = frame.shape[:2]
        return self._search(frame, memory, (0, 0, w, h))

    def segment_regions(self, frame: np.ndarray, memory: DefaultPromptMemory, regions: Sequence[Box]) -> Instances:
        """:meth:`segment` searching only ``regions`` (disjoint boxes), at a cost that follows their area.

        Sizes are still judged against the whole frame, so an instance inside a region is found as the
        full search finds it. An instance cut by a region's side (one that is not the frame's) may reach
        beyond it: then the whole frame is searched.
        """
        h, w = frame.shape[:2]
        found = []
        for region in regions:
            placed = self._search(frame, memory, region).placed(region, h, w)
            if any(self._reaches_edge(mask, region, h, w) for mask in placed.masks):
                return self.segment(frame, memory)
            found.append(placed)
        return Instances.concatenate(found, h, w)

    def _search(self, frame: np.ndarray, memory: DefaultPromptMemory, region: Box) -> Instances:
        """Instances within ``region`` of ``frame``, as masks of that region."""
        x0, y0, x1, y1 = region
        bins = colour_bins(frame[y0:y1, x0:x1])
        if (y1 - y0, x1 - x0) == frame.shape[:2]:
            self._searched = (frame, bins)
        found = [
            self._find_instances(bins, model.prompt_id, model.pinned.blend(model.adaptive, self.adapt_weight),
                                 frame.shape[:2])
            for model in memory.models
        ]
        return Instances.concatenate(found, y1 - y0, x1 - x0)

    def _find_instances(self, bins: np.ndarray, prompt_id: int, model: Appearance,
                        frame_shape: tuple[int, int]) -> Instances:
        """Every group of blobs of ``model``'s colours with a plausible size, best first.

        ``bins`` may cover part of a frame of ``frame_shape``, which the model's sizes are relative to.
        Score = colour match (Bhattacharyya coefficient with the model's descriptor)
        x size match (1 at the expected area, 0.61 at half or double, 0.08 at a fifth).
        """
        h, w = bins.shape
        expected_area = model.area * frame_shape[0] * frame_shape[1]
        labels, stats = self._blobs(bins, model.posterior, expected_area)
        areas = stats[:, cv2.CC_STAT_AREA]
        fragments = np.flatnonzero(areas >= self.min_fragment_ratio * expected_area)
        fragments = fragments[fragments > 0]  # label 0 is the background
        groups = [
            g
            for g in _group_fragments(stats, fragments, 1.2 * model.extent * math.hypot(*frame_shape))
            if areas[g].sum() >= self.min_area_ratio * expected_area
        ]
        if not groups:
            return Instances.empty(h, w)
        slot = np.zeros(len(stats), np.int64)
        for i, members in enumerate(groups, start=1):
            slot[members] = i
        pixel_slot = slot[labels]
        histograms = np.bincount((pixel_slot * N_COLOURS + bins).ravel(), minlength=(len(groups) + 1) * N_COLOURS)
        embeddings = colour_descriptor(histograms.reshape(len(groups) + 1, N_COLOURS)[1:].astype(np.float64))
        colour_match = np.clip(embeddings @ model.descriptor, 0, 1)
        group_areas = np.array([areas[g].sum() for g in groups], np.float64)
        size_match = np.exp(-0.5 * (np.log(group_areas / expected_area) / math.log(2)) ** 2)
        scores = colour_match * size_match
        masks = pixel_slot[None] == np.arange(1, len(groups) + 1)[:, None, None]
        order = np.argsort(-scores)
        order = order[scores[order] >= self.min_score]
        return Instances.from_masks(masks[order], scores[order], [prompt_id] * len(order), h, w, embeddings[order])

    def _blobs(self, bins: np.ndarray, posterior: np.ndarray, expected_area: float) -> tuple[np.ndarray, np.ndarray]:
        """Connected components (labels, stats) of the smoothed, thresholded posterior, holes filled.

        Smoothing and morphology scale with the object, so texture does not break it up.
        """
        radius = max(1, round(0.05 * math.sqrt(expected_area)))
        probability = cv2.GaussianBlur(posterior[bins], (0, 0), radius)
        blobs = (probability > self.threshold).astype(np.uint8)
        blobs = cv2.morphologyEx(blobs, cv2.MORPH_OPEN, _disk(radius))
        blobs = cv2.morphologyEx(blobs, cv2.MORPH_CLOSE, _disk(radius))
        blobs = _fill_holes(blobs.astype(bool)).astype(np.uint8)
        _, labels, stats, _ = cv2.connectedComponentsWithStats(blobs, connectivity=8)
        return labels, stats

    # -- memory update ---------------------------------------------------------------------

    def refresh(self, frame: np.ndarray, memory: DefaultPromptMemory, instances: Instances) -> DefaultPromptMemory:
        searched = self._searched  # read once: another thread may search meanwhile
        bins = searched[1] if searched is not None and searched[0] is frame else colour_bins(frame)
        models = []
        for model in memory.models:
            confident = (
                (instances.prompt_ids == model.prompt_id)
                & (instances.scores >= self.refresh_min_score)
                & instances.masks.any(axis=(1, 2))
            )
            if not confident.any():
                models.append(model)
                continue
            seen = Appearance.of(bins, instances.masks[confident], self.histogram_smoothing)
            models.append(replace(model, adaptive=model.adaptive.blend(seen, self.adapt_rate)))
        return DefaultPromptMemory(tuple(models))
