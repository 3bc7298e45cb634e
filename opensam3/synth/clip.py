"""Short clips for video concept tracking: objects move, occlude each other, enter and leave.

Every clip stages the same events (positions are linear in time, so they are exact per frame):

- "occluder": a large circle, square or hexagon, drifting slowly near the middle; drawn above
  the bouncers and the passer.
- "passer": a small object drawn at the very back whose path runs straight through the
  occluder's centre at frame T // 2; since a small shape fits inside a large one, it is fully
  hidden for a frame or more and then reappears (a tracker must keep its id).
- "enterer": starts fully outside the frame and moves in; "leaver": starts inside and has left
  by three quarters of the clip. Both are drawn on top, so they are seen whenever in frame.
- "bouncer" (1-2): constant speed, reflected at the image borders. With `twin_probability`
  the first one is the passer's look-alike (same four words), so identity must come from
  motion, not appearance.

Object ids are stable over the clip. A frame's instance mask is the visible part, as for still
scenes; an object with fewer than `min_visible_pixels` visible pixels counts as absent in that
frame (its mask is emptied), which is what the VEval JSON writes as a null segmentation.
Background and distractors are fixed; sensor noise is drawn anew for every frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from opensam3.synth.background import add_distractors, add_sensor_noise, textured_background
from opensam3.synth.phrases import Concept, PhraseQuery, sample_queries
from opensam3.synth.render import composite, mask_boxes, place, visible_masks
from opensam3.synth.world import (
    MAX_ROTATION_DEGREES, SceneObject, SynthConfigError, check_image_size, check_non_negative, indexed_stream,
    sample_object, sample_sibling, sample_theme,
)

OCCLUDER_SHAPES: tuple[str, ...] = ("circle", "square", "hexagon")  # solid bodies a small shape fits inside
ROLES: tuple[str, ...] = ("passer", "bouncer", "occluder", "enterer", "leaver")


@dataclass(frozen=True)
class ClipConfig:
    num_frames: int = 16
    max_bouncers: int = 2
    twin_probability: float = 0.5  # the first bouncer has the passer's four attribute words
    phrases_per_video: int = 6
    negative_fraction: float = 0.375
    min_visible_pixels: int = 8
    distractors: bool = True
    anti_alias: bool = True
    noise_sigma: tuple[float, float] = (2.0, 6.0)

    def validate(self) -> "ClipConfig":
        if not 4 <= self.num_frames <= 1000:
            raise SynthConfigError(
                f"num_frames must be between 4 and 1000 (enter, occlusion and exit need a few frames), got {self.num_frames}")
        if not 0 <= self.max_bouncers <= 16:
            raise SynthConfigError(f"max_bouncers must be between 0 and 16, got {self.max_bouncers}")
        if not 0.0 <= self.twin_probability <= 1.0:
            raise SynthConfigError(f"twin_probability must be in [0, 1], got {self.twin_probability}")
        if self.phrases_per_video < 1:
            raise SynthConfigError(f"phrases_per_video must be at least 1, got {self.phrases_per_video}")
        if not 0.0 <= self.negative_fraction <= 1.0:
            raise SynthConfigError(f"negative_fraction must be in [0, 1], got {self.negative_fraction}")
        if self.min_visible_pixels < 1:
            raise SynthConfigError(f"min_visible_pixels must be at least 1, got {self.min_visible_pixels}")
        return self


@dataclass(frozen=True)
class ClipPair:
    """A video-phrase pair: one masklet per matching object (none for a negative).

    `masks` (K, T, H, W) bool, `boxes` (K, T, 4) xyxy (zeros where absent), `present` (K, T).
    """

    phrase: str
    concept: Concept
    object_ids: tuple[int, ...]
    masks: np.ndarray
    boxes: np.ndarray
    present: np.ndarray
    negative: str | None = None


@dataclass
class Clip:
    """Frames (T, H, W, 3) uint8 and per-frame visible masks (T, N, H, W) of `objects` (back to
    front; attributes fixed, `center`/`angle` as in frame 0). `tracks[t, i]` = (x, y, angle)."""

    frames: np.ndarray
    objects: list[SceneObject]
    tracks: np.ndarray
    masks: np.ndarray
    roles: dict[int, str]
    queries: list[PhraseQuery] = field(default_factory=list)

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    def present(self) -> np.ndarray:
        """(T, N) bool: object i is visible in frame t."""
        return self.masks.reshape(self.masks.shape[0], self.masks.shape[1], -1).any(axis=2)

    def boxes(self) -> np.ndarray:
        """(T, N, 4) xyxy boxes of the visible masks (zeros where absent)."""
        return np.stack([mask_boxes(frame_masks) for frame_masks in self.masks])

    def object_index(self, object_id: int) -> int:
        return next(i for i, o in enumerate(self.objects) if o.object_id == object_id)

    def pairs(self) -> list[ClipPair]:
        boxes, present = self.boxes(), self.present()
        out = []
        for query in self.queries:
            idx = [i for i, o in enumerate(self.objects) if query.concept.matches(o)]
            out.append(ClipPair(
                query.phrase, query.concept, tuple(self.objects[i].object_id for i in idx),
                self.masks[:, idx].transpose(1, 0, 2, 3), boxes[:, idx].transpose(1, 0, 2),
                present[:, idx].T, query.negative))
        return out


def _unit(rng: np.random.Generator) -> np.ndarray:
    theta = rng.uniform(0, 2 * np.pi)
    return np.array([np.cos(theta), np.sin(theta)])


def _bounce(start: np.ndarray, velocity: np.ndarray, low: float, high: float, frames: int) -> np.ndarray:
    """Positions under constant speed, reflected at [low, high] in x and y."""
    span = high - low
    raw = start[None, :] - low + velocity[None, :] * np.arange(frames)[:, None]
    folded = np.mod(raw, 2 * span)
    return low + np.where(folded > span, 2 * span - folded, folded)


def _outside_point(rng: np.random.Generator, size: int, reach: float) -> np.ndarray:
    """A point on a random side, `reach` pixels beyond the border, so a shape there is unseen."""
    along = rng.uniform(0.2, 0.8) * size
    side = int(rng.integers(4))
    return np.array([[-reach, along], [size + reach, along], [along, -reach], [along, size + reach]][side])


def plan_motion(rng: np.random.Generator, size: int, config: ClipConfig) -> tuple[list[SceneObject], list[str], np.ndarray]:
    """Objects (back to front), their roles and (T, N, 3) tracks of (x, y, angle)."""
    frames, t = config.num_frames, np.arange(config.num_frames)[:, None]
    theme = sample_theme(rng)
    mid = frames // 2
    specs: list[tuple[str, SceneObject, np.ndarray]] = []

    occluder = sample_object(rng, 0, theme, size, shape=OCCLUDER_SHAPES[int(rng.integers(3))], size_word="large")
    occluder_path = rng.uniform(0.35, 0.65, size=2) * size + _unit(rng) * rng.uniform(0, 0.004) * size * (t - mid)
    passer = sample_object(rng, 1, theme, size, size_word="small")
    speed = rng.uniform(0.25, 0.35) * size / max(mid, 1)
    passer_path = occluder_path + _unit(rng) * speed * (t - mid)
    specs.append(("passer", passer, passer_path))
    for k in range(int(rng.integers(1, config.max_bouncers + 1)) if config.max_bouncers else 0):
        if k == 0 and rng.random() < config.twin_probability:
            bouncer = sample_sibling(rng, passer, 2 + k, size)  # a look-alike: ids must not swap
        else:
            bouncer = sample_object(rng, 2 + k, theme, size)
        reach = bouncer.radius * 1.08
        start = rng.uniform(reach, size - reach, size=2)
        path = _bounce(start, _unit(rng) * rng.uniform(0.01, 0.03) * size, reach, size - reach, frames)
        specs.append(("bouncer", bouncer, path))
    specs.append(("occluder", occluder, occluder_path))
    arrival = 0.75 * (frames - 1)  # enterer fully in / leaver fully out by this frame
    movers = []
    for role in ("enterer", "leaver"):
        obj = sample_object(rng, 0, theme, size)
        outside = _outside_point(rng, size, obj.radius * 1.08 + 2)
        inside = rng.uniform(0.3, 0.7, size=2) * size
        start, end = (outside, inside) if role == "enterer" else (inside, outside)
        movers.append((role, obj, start + (end - start) * t / arrival))
    specs.extend(movers[int(i)] for i in rng.permutation(2))

    objects, roles, tracks = [], [], np.zeros((frames, len(specs), 3))
    for index, (role, obj, path) in enumerate(specs):
        spin = rng.uniform(-1.0, 1.0)
        angles = np.clip(obj.angle + spin * np.arange(frames), -MAX_ROTATION_DEGREES, MAX_ROTATION_DEGREES)
        tracks[:, index, :2], tracks[:, index, 2] = path, angles
        objects.append(obj.moved((float(path[0, 0]), float(path[0, 1])), float(angles[0])))
        roles.append(role)
    # Ids in depth order so they are stable and unique; the planned ids above were provisional.
    objects = [SceneObject(i, o.shape, o.color, o.size, o.pattern, o.center, o.radius, o.angle, o.rgb, o.stripe_angle)
               for i, o in enumerate(objects)]
    return objects, roles, tracks


def generate_clip(rng: np.random.Generator, size: int = 256, config: ClipConfig | None = None) -> Clip:
    """A new random clip; all randomness comes from `rng`."""
    size = check_image_size(size)
    config = (config or ClipConfig()).validate()
    objects, roles, tracks = plan_motion(rng, size, config)
    background = textured_background(rng, size)
    if config.distractors:
        add_distractors(rng, background)
    frames, masks = [], []
    for t in range(config.num_frames):
        placed = [place(o.moved((float(tracks[t, i, 0]), float(tracks[t, i, 1])), float(tracks[t, i, 2])), config.anti_alias)
                  for i, o in enumerate(objects)]
        image, owner = composite(background, placed, config.anti_alias)
        frames.append(add_sensor_noise(rng, image, float(rng.uniform(*config.noise_sigma))))
        frame_masks = visible_masks(owner, len(objects))
        too_small = frame_masks.reshape(len(objects), -1).sum(axis=1) < config.min_visible_pixels
        frame_masks[too_small] = False
        masks.append(frame_masks)
    mask_array = np.stack(masks)
    # An object never seen in any frame is not an instance of anything; drop it.
    seen = mask_array.reshape(mask_array.shape[0], mask_array.shape[1], -1).any(axis=(0, 2))
    keep = np.flatnonzero(seen)
    objects = [objects[i] for i in keep]
    clip = Clip(np.stack(frames), objects, tracks[:, keep], mask_array[:, keep],
                {objects[n].object_id: roles[i] for n, i in enumerate(keep)})
    clip.queries = sample_queries(rng, objects, config.phrases_per_video, config.negative_fraction)
    return clip


def clip_rng(seed: int, index: int) -> np.random.Generator:
    """The generator of clip `index` of a seed's stream (separate from the scene stream)."""
    return np.random.default_rng([check_non_negative(seed, "seed"), 1, check_non_negative(index, "clip index")])


def clip_stream(seed: int, size: int = 256, config: ClipConfig | None = None,
                start: int = 0, step: int = 1) -> Iterator[Clip]:
    """Endless clips of a seed, the same ones `write_video_dataset` writes (same config)."""
    return indexed_stream(start, step, lambda index: generate_clip(clip_rng(seed, index), size, config))
