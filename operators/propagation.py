"""Carry instance masks from one frame to the next with dense optical flow (DIS).

Flow and warp are separate steps so the pipeline can compute flows while the
keyframe's masks are still being segmented. Flow is computed at a reduced
resolution for large frames; masks are warped at full resolution.

A mask is pulled backwards: each new pixel looks up where it came from. DIS
matches patches, so within half a patch of an object's outline the flow mixes
object and background motion, and a backward-warped mask would smear into the
background it leaves behind a little more every frame. So that band around the
outline follows the object's own motion instead, an affine fit to the flow inside
it; the interior keeps the per-pixel flow, which allows non-rigid motion.

A mask's score is multiplied by the share of its pixels whose flow is
consistent, so an object that gets occluded, or that the flow loses, fades.
Consistency is photometric: the previous frame, pulled along the flow, matches
the current one there. That needs one flow per frame; a forward-backward round
trip would need two, for the same masks on the benchmark clips.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import cv2
import numpy as np

from operators.records import Instances

DIS_PRESETS = {
    "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
    "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}

#: DIS's smallest image, (longer side, shorter side): its 8-pixel patches need 8 pixels across and 12 along
#: (measured on OpenCV 5.1, every preset and finest scale). Frames keep the shorter side when downscaled.
MIN_FLOW_SIZE = (12, 8)


def coarsest_scale(height: int, width: int, patch: int) -> int:
    """DIS's coarsest pyramid level for an image (OpenCV's dis_flow.cpp formula). A finest level above it sends
    DIS down a path that fails on wide images (a 45x8 image raises, a 40x1000 one crashes the process), so the
    finest level is capped at it."""
    return max(0, min(int(math.log2(max(height, width) / (4 * patch)) + 0.5), int(math.log2(min(height, width) / patch))))

#: Row and column slices of a frame.
Window = tuple[slice, slice]

#: Most flow vectors an object's affine motion is fitted to; more only cost time.
_MAX_FIT_SAMPLES = 4000

#: Smallest eigenvalue of a patch's structure tensor (``cv2.cornerMinEigenVal``) for its flow to count as
#: measured. Flat patches and 1-D texture (stripes, straight edges) leave the motion along them unknown:
#: the aperture problem. On the benchmark clips stripes measure ~3e-4, noise texture ~1.7e-3.
WELL_POSED_MIN_EIGENVALUE = 8e-4


@dataclass(frozen=True)
class Flow:
    """Motion from a previous frame to the current one, at working resolution.

    ``backward[y, x]`` is the offset from current pixel ``(x, y)`` to where it was in
    the previous frame; ``consistent`` marks pixels where the previous frame, pulled along
    that flow, looks like the current one: pixels visible in both frames. ``image`` is the
    current frame at working resolution, kept so :meth:`FlowPropagator.flow_support` can tell
    measured flow from guessed flow where it is asked, and only then.
    ``blur_radius`` is how far (full-resolution pixels) flow mixes across an edge.
    """

    backward: np.ndarray  # (h, w, 2) float32, working-resolution pixels
    consistent: np.ndarray  # (h, w) bool
    image: np.ndarray  # (h, w) uint8: the current frame, grey, at working resolution
    patch: int  # DIS's patch size, working-resolution pixels
    frame_size: tuple[int, int]  # full-resolution (H, W)
    blur_radius: int


def _gray(frame: np.ndarray) -> np.ndarray:
    return frame if frame.ndim == 2 else cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)


def well_posed(image: np.ndarray, patch: int) -> np.ndarray:
    """Pixels of a grey ``image`` whose ``patch``-sized neighbourhood pins motion down in both directions."""
    return cv2.cornerMinEigenVal(image, patch, 3) > WELL_POSED_MIN_EIGENVALUE


def _as_u8(mask: np.ndarray) -> np.ndarray:
    """0/1 ``uint8`` view of a boolean mask, for OpenCV; bilinear results round at 0.5 back to 0/1."""
    return np.ascontiguousarray(mask).view(np.uint8)


def _square(radius: int) -> np.ndarray:
    """Square structuring element: separable, so OpenCV's morphology with it is fast at any size."""
    return np.ones((2 * radius + 1, 2 * radius + 1), np.uint8)


def _pull(image: np.ndarray, offsets: np.ndarray, interpolation: int, border: int) -> np.ndarray:
    """``image`` sampled, at each pixel, ``offsets`` (``(h, w, 2)`` float32, x then y) away from it.

    OpenCV's relative maps spare building absolute coordinates (a pixel grid plus the offsets) per call.
    """
    return cv2.remap(image, offsets, None, interpolation | cv2.WARP_RELATIVE_MAP, borderMode=border, borderValue=0)


def _pull_mask(mask: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Bilinear pull of a boolean mask, each pixel from ``offsets`` away; outside ``mask`` counts as empty."""
    return _pull(_as_u8(mask), offsets, cv2.INTER_LINEAR, cv2.BORDER_CONSTANT).view(bool)


def _upsample(field: np.ndarray, window: Window, scale: np.ndarray, interpolation: int) -> np.ndarray:
    """``field`` (working resolution) sampled at the full-resolution pixels of ``window``, as a resize would.

    Full-resolution pixel ``x`` is working-resolution ``(x + 0.5) / scale - 0.5``. Where the frame is a whole
    multiple of the working size (720p, 1080p, 480p and 4K are), that is a resize of the part of ``field``
    under the window, one working pixel wider on each side so its edge interpolates as inside the frame
    (6x faster than sampling the map); otherwise a remap samples it.
    """
    rows, cols = window
    factor = int(scale[0])
    if factor == scale[0] == scale[1]:
        height, width = field.shape[:2]
        top, left = max(0, rows.start // factor - 1), max(0, cols.start // factor - 1)
        bottom, right = min(height, -(-rows.stop // factor) + 1), min(width, -(-cols.stop // factor) + 1)
        part = cv2.resize(field[top:bottom, left:right], None, fx=factor, fy=factor, interpolation=interpolation)
        y0, x0 = rows.start - factor * top, cols.start - factor * left
        return part[y0 : y0 + rows.stop - rows.start, x0 : x0 + cols.stop - cols.start]
    xs = (np.arange(cols.start, cols.stop, dtype=np.float32) + 0.5) / scale[0] - 0.5
    ys = (np.arange(rows.start, rows.stop, dtype=np.float32) + 0.5) / scale[1] - 0.5
    map_x, map_y = np.meshgrid(xs, ys)
    return cv2.remap(field, map_x, map_y, interpolation, borderMode=cv2.BORDER_REPLICATE)


def _window(mask: np.ndarray, reach: int) -> Window | None:
    """Slices of the part of the frame a warp of ``mask`` can touch; None for an empty mask."""
    x, y, w, h = cv2.boundingRect(_as_u8(mask))
    if w == 0:
        return None
    height, width = mask.shape
    return slice(max(0, y - reach), min(height, y + h + reach)), slice(max(0, x - reach), min(width, x + w + reach))


def _object_motion(backward: np.ndarray, region: np.ndarray) -> np.ndarray | None:
    """Least-squares affine map (2x3) from positions to previous positions, fitted to ``backward`` over
    ``region`` (both cropped to one window, positions in it); None if the region is too small."""
    points = cv2.findNonZero(_as_u8(region))
    if points is None or len(points) < 6:
        return None
    xs, ys = points.reshape(-1, 2).T
    step = max(1, len(xs) // _MAX_FIT_SAMPLES)
    ys, xs = ys[::step], xs[::step]
    offsets = backward[ys, xs]
    here = np.stack([xs, ys, np.ones_like(xs)], axis=1).astype(np.float64)
    there = np.stack([xs + offsets[:, 0], ys + offsets[:, 1]], axis=1)
    # Least squares through the 3x3 normal equations: the same solution, a third of the time for 4000 points.
    return np.linalg.lstsq(here.T @ here, here.T @ there, rcond=None)[0].T


class FlowPropagator:
    """DIS optical flow with photometric consistency; see the module docstring.

    ``preset`` names DIS's speed/quality preset; ``finest_scale`` overrides the preset's
    finest pyramid level (0 = full resolution; the presets stop at 1/4, which blurs
    motion boundaries); ``None`` keeps the preset's. ``max_side``: frames larger than
    this are downscaled for flow. ``score_decay`` is a per-frame factor on top of
    consistency, so unconfirmed masks age.

    It holds no stream state, only settings and caches (DIS's estimator, the last frame's working image)
    that the next call rebuilds, so a stream's checkpoint (:meth:`StreamProcessor.to_state`) leaves it out.
    """

    def __init__(
        self,
        preset: str = "ultrafast",
        finest_scale: int | None = 1,
        max_side: int = 320,
        score_decay: float = 0.99,
        photometric_tolerance: int = 20,
    ) -> None:
        if preset not in DIS_PRESETS:
            raise ValueError(f"unknown DIS preset {preset!r}; choose one of {', '.join(DIS_PRESETS)}")
        self.photometric_tolerance = photometric_tolerance
        self.preset = preset
        self.finest_scale = finest_scale
        self.max_side = max_side
        self.score_decay = score_decay
        self._dis: cv2.DISOpticalFlow | None = None
        self._preset_finest = 0  # the preset's finest scale, where ``finest_scale`` is None
        self._last: tuple[np.ndarray, np.ndarray] | None = None  # (frame, its working image): the next prev_frame

    def _estimator(self, height: int, width: int) -> cv2.DISOpticalFlow:
        if self._dis is None:
            self._dis = cv2.DISOpticalFlow_create(DIS_PRESETS[self.preset])
            self._preset_finest = self._dis.getFinestScale()
        finest = self._preset_finest if self.finest_scale is None else self.finest_scale
        self._dis.setFinestScale(min(finest, coarsest_scale(height, width, self._dis.getPatchSize())))
        return self._dis

    @staticmethod
    def too_small(height: int, width: int) -> str | None:
        """Why optical flow cannot track frames of this size, or None when it can."""
        longer, shorter = MIN_FLOW_SIZE
        if max(height, width) >= longer and min(height, width) >= shorter:
            return None
        minimum = f"{longer}x{shorter}" if width >= height else f"{shorter}x{longer}"
        return (f"frame {width}x{height} is smaller than the minimum {minimum} (optical flow needs {shorter} pixels "
                f"on the shorter side and {longer} on the longer)")

    def _working(self, frame: np.ndarray) -> np.ndarray:
        gray = _gray(frame)
        h, w = gray.shape
        scale = max(self.max_side / max(h, w), MIN_FLOW_SIZE[1] / min(h, w))  # a thin frame keeps DIS's minimum
        if scale >= 1:
            return gray
        return cv2.resize(gray, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)

    def flow(self, prev_frame: np.ndarray, frame: np.ndarray) -> Flow:
        """Flow from ``prev_frame`` to ``frame`` (RGB or grayscale, same size)."""
        if prev_frame.shape[:2] != frame.shape[:2]:
            raise ValueError(f"frame sizes differ: {prev_frame.shape[:2]} and {frame.shape[:2]}")
        # A stream's flows chain (each frame is the next call's prev_frame): convert each frame once.
        prev = self._last[1] if self._last is not None and self._last[0] is prev_frame else self._working(prev_frame)
        cur = self._working(frame)
        self._last = (frame, cur)
        dis = self._estimator(*cur.shape)
        backward = dis.calc(cur, prev, None)
        # A pixel is consistent if the previous frame, pulled along the flow, looks like it there; occluded or
        # lost pixels do not.
        pulled = _pull(prev, backward, cv2.INTER_LINEAR, cv2.BORDER_REPLICATE)
        consistent = cv2.absdiff(pulled, cur) <= self.photometric_tolerance
        upscale = frame.shape[1] / cur.shape[1]
        blur_radius = math.ceil(dis.getPatchSize() / 2 * upscale)
        return Flow(backward, consistent, cur, dis.getPatchSize(), frame.shape[:2], blur_radius)

    @staticmethod
    def flow_support(instances: Instances, flow: Flow) -> np.ndarray:
        """Per instance, the share of its mask where ``flow`` was measured (1.0 for an empty mask).

        Low for a flat or striped object: its propagated mask lags or slips, and only keyframes keep it.
        """
        height, width = flow.image.shape
        support = np.ones(len(instances))
        small = [cv2.resize(_as_u8(m), (width, height), interpolation=cv2.INTER_NEAREST).view(bool)
                 for m in instances.masks]
        # Texture is measured only around the objects (~1 ms for a whole 320x180 working image).
        window = _window(np.logical_or.reduce(small), flow.patch) if small else None
        if window is None:
            return support
        measured = well_posed(flow.image[window], flow.patch)
        for i, mask in enumerate(small):
            area = np.count_nonzero(mask)
            if area:
                support[i] = np.count_nonzero(mask[window] & measured) / area
        return support

    def warp(self, instances: Instances, flow: Flow) -> Instances:
        """``instances`` moved into the flow's current frame, one for one.

        Ids and embeddings are kept; masks stay boolean; scores fall with the share of
        inconsistent pixels under the warped mask (0 for a mask that left the frame).
        """
        if instances.shape != flow.frame_size:
            raise ValueError(f"masks are {instances.shape}, the flow is for frames of {flow.frame_size}")
        if len(instances) == 0:
            return instances
        h, w = flow.frame_size
        fh, fw = flow.consistent.shape
        scale = np.array([w / fw, h / fh], np.float32)
        reach = math.ceil(float(np.abs(flow.backward).max()) * float(scale.max())) + 2 * flow.blur_radius + 2
        # In full-resolution pixels once per frame, at working resolution: a bilinear upsample commutes with it.
        backward_full = cv2.multiply(flow.backward, (float(scale[0]), float(scale[1]), 0.0, 0.0))
        masks = np.zeros_like(instances.masks)
        consistency = np.zeros(len(masks))
        for i, (mask, warped) in enumerate(zip(instances.masks, masks)):
            window = _window(mask, reach)
            if window is None:
                continue
            # Only the window around each mask is brought to full resolution: cost follows object size.
            backward = _upsample(backward_full, window, scale, cv2.INTER_LINEAR)
            # The window holds every pixel the mask can be pulled from (its box plus the reach), so pulling
            # from the window's part of the mask equals pulling from the whole frame.
            moved = self._warp_mask(mask[window], backward, flow.blur_radius)
            warped[window] = moved
            consistent = _upsample(_as_u8(flow.consistent), window, scale, cv2.INTER_NEAREST).view(bool)
            area = np.count_nonzero(moved)
            consistency[i] = np.count_nonzero(moved & consistent) / area if area else 0.0
        scores = (instances.scores * self.score_decay * consistency).astype(np.float32)
        return replace(instances, masks=masks, scores=scores)

    @staticmethod
    def _warp_mask(mask: np.ndarray, backward: np.ndarray, band_radius: int) -> np.ndarray:
        """The warped mask inside a window (``mask`` and ``backward`` are cropped to it).

        Per-pixel flow inside the object, the object's affine motion within
        ``band_radius`` of its outline.
        """
        pulled = _pull_mask(mask, backward)
        square = _square(band_radius)
        interior = cv2.erode(_as_u8(pulled), square).view(bool)
        motion = _object_motion(backward, interior if np.count_nonzero(interior) >= 6 else pulled)
        if motion is None:
            return pulled
        size = pulled.shape[::-1]
        moved = cv2.warpAffine(_as_u8(mask), motion, size, flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP).view(bool)
        band = cv2.dilate(_as_u8(moved), square).view(bool) & ~cv2.erode(_as_u8(moved), square).view(bool)
        return np.where(band, moved, pulled)
