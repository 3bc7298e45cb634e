"""One still scene: objects placed with bounded occlusion, rendered, with its phrase pairs.

    rng = np.random.default_rng(0)
    scene = generate_scene(rng, 256)
    for pair in scene.pairs():          # positives and negatives
        pair.phrase, pair.masks, pair.boxes, pair.exemplar_box
    for scene in scene_stream(seed=0):  # endless; scene i is image i of the seed's dataset
        ...

Placement: objects are added one at a time, each on top of the previous ones, at a uniformly
random centre. A placement is rejected (and retried, then the object is dropped) if it would
leave any object, itself included, with less than `min_visible_fraction` of its full area
visible (hidden by later objects or cut off by the image border). So every object in a scene
is recognisable and is an instance; nothing is fully hidden.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from opensam3.synth.background import add_distractors, add_sensor_noise, textured_background
from opensam3.synth.phrases import Concept, PhraseQuery, sample_queries
from opensam3.synth.render import PlacedObject, composite, mask_boxes, place, visible_masks
from opensam3.synth.world import (
    SceneObject, SynthConfigError, check_image_size, check_non_negative, indexed_stream, sample_object, sample_sibling,
    sample_theme,
)


@dataclass(frozen=True)
class SceneConfig:
    """Knobs of a scene; the defaults are what the dataset writer uses."""

    min_objects: int = 1
    max_objects: int = 8
    phrases_per_image: int = 8
    negative_fraction: float = 0.375  # 3 of 8 phrases
    min_visible_fraction: float = 0.5
    sibling_probability: float = 0.3  # an object repeats an earlier one's four attribute words
    placement_tries: int = 20
    distractors: bool = True
    anti_alias: bool = True
    noise_sigma: tuple[float, float] = (2.0, 8.0)  # per-image sensor noise range

    def validate(self) -> "SceneConfig":
        if not 1 <= self.min_objects <= self.max_objects:
            raise SynthConfigError(
                f"need 1 <= min_objects <= max_objects, got min_objects={self.min_objects}, max_objects={self.max_objects}")
        if self.max_objects > 32:
            raise SynthConfigError(f"max_objects must be at most 32, got {self.max_objects}")
        if self.phrases_per_image < 1:
            raise SynthConfigError(f"phrases_per_image must be at least 1, got {self.phrases_per_image}")
        if not 0.0 <= self.negative_fraction <= 1.0:
            raise SynthConfigError(f"negative_fraction must be in [0, 1], got {self.negative_fraction}")
        if not 0.0 <= self.sibling_probability <= 1.0:
            raise SynthConfigError(f"sibling_probability must be in [0, 1], got {self.sibling_probability}")
        if not 0.0 < self.min_visible_fraction <= 1.0:
            raise SynthConfigError(f"min_visible_fraction must be in (0, 1], got {self.min_visible_fraction}")
        if self.placement_tries < 1:
            raise SynthConfigError(f"placement_tries must be at least 1, got {self.placement_tries}")
        low, high = self.noise_sigma
        if not 0.0 <= low <= high:
            raise SynthConfigError(f"noise_sigma must be (low, high) with 0 <= low <= high, got {self.noise_sigma}")
        return self


@dataclass(frozen=True)
class Pair:
    """An image-phrase pair: every visible instance of the phrase (none for a negative).

    `masks` (K, H, W) bool, `boxes` (K, 4) xyxy pixels (x1, y1 exclusive), `object_ids` (K,),
    `exemplar_box` the xyxy box of the pair's largest instance (None for negatives).
    """

    phrase: str
    concept: Concept
    masks: np.ndarray
    boxes: np.ndarray
    object_ids: tuple[int, ...]
    exemplar_box: np.ndarray | None
    negative: str | None = None

    @property
    def is_negative(self) -> bool:
        return self.negative is not None


@dataclass
class Scene:
    """A rendered image and its scene graph.

    `objects` are back to front (later ones occlude earlier ones); `masks[i]` is the visible
    part of `objects[i]` and `boxes[i]` its xyxy box. `queries` are the sampled phrases.
    """

    image: np.ndarray
    objects: list[SceneObject]
    masks: np.ndarray
    boxes: np.ndarray
    queries: list[PhraseQuery] = field(default_factory=list)

    @property
    def size(self) -> int:
        return int(self.image.shape[0])

    def instances_of(self, concept: Concept) -> list[int]:
        """Indices of every object the concept matches (exhaustive)."""
        return [i for i, obj in enumerate(self.objects) if concept.matches(obj)]

    def pair_for(self, query: PhraseQuery) -> Pair:
        indices = self.instances_of(query.concept)
        masks = self.masks[indices] if indices else np.zeros((0,) + self.masks.shape[1:], dtype=bool)
        boxes = self.boxes[indices] if indices else np.zeros((0, 4), dtype=np.float32)
        exemplar = None
        if indices:
            areas = masks.reshape(len(indices), -1).sum(axis=1)
            exemplar = boxes[int(np.argmax(areas))].copy()  # first of the largest on ties
        return Pair(query.phrase, query.concept, masks, boxes,
                    tuple(self.objects[i].object_id for i in indices), exemplar, query.negative)

    def pairs(self) -> list[Pair]:
        """One pair per sampled phrase, positives and negatives, in sampling order."""
        return [self.pair_for(q) for q in self.queries]


def _try_place(candidate: PlacedObject, owner: np.ndarray, visible: list[int], full: list[int],
               min_fraction: float) -> bool:
    """Would this object, put on top, keep everyone (itself too) at least min_fraction visible?"""
    raster = candidate.raster
    mask = raster.mask
    own_full = int(mask.sum())
    rows, cols, crop_rows, crop_cols = raster.clipped(*owner.shape)
    inside = mask[crop_rows, crop_cols]
    if own_full == 0 or inside.sum() < min_fraction * own_full:
        return False
    covered = owner[rows, cols][inside]
    lost = np.bincount(covered[covered >= 0], minlength=len(visible))
    return all(visible[j] - lost[j] >= min_fraction * full[j] for j in range(len(visible)))


def place_objects(rng: np.random.Generator, size: int, config: SceneConfig) -> list[PlacedObject]:
    """Sample attributes and positions; see the module docstring for the occlusion rule."""
    theme = sample_theme(rng)
    count = int(rng.integers(config.min_objects, config.max_objects + 1))
    owner = np.full((size, size), -1, dtype=np.int16)
    placed: list[PlacedObject] = []
    visible: list[int] = []
    full: list[int] = []
    for _ in range(count):
        if placed and rng.random() < config.sibling_probability:
            obj = sample_sibling(rng, placed[int(rng.integers(len(placed)))].obj, len(placed), size)
        else:
            obj = sample_object(rng, len(placed), theme, size)
        margin = 0.4 * obj.radius
        for _ in range(config.placement_tries):
            center = tuple(float(c) for c in rng.uniform(margin, size - margin, size=2))
            candidate = place(obj.moved(center, obj.angle), config.anti_alias)
            if _try_place(candidate, owner, visible, full, config.min_visible_fraction):
                break
        else:
            continue  # no room: the scene gets one object fewer
        raster = candidate.raster
        rows, cols, crop_rows, crop_cols = raster.clipped(size, size)
        inside = raster.mask[crop_rows, crop_cols]
        covered = owner[rows, cols][inside]
        for j, lost in enumerate(np.bincount(covered[covered >= 0], minlength=len(visible))):
            visible[j] -= int(lost)
        owner[rows, cols][inside] = len(placed)
        placed.append(candidate)
        visible.append(int(inside.sum()))
        full.append(int(raster.mask.sum()))
    return placed


def generate_scene(rng: np.random.Generator, size: int = 256, config: SceneConfig | None = None) -> Scene:
    """A new random scene; all randomness comes from `rng` (same state -> same scene)."""
    size = check_image_size(size)
    config = (config or SceneConfig()).validate()
    placed = place_objects(rng, size, config)
    background = textured_background(rng, size)
    if config.distractors:
        add_distractors(rng, background)
    image, owner = composite(background, placed, config.anti_alias)
    image_u8 = add_sensor_noise(rng, image, float(rng.uniform(*config.noise_sigma)))
    objects = [p.obj for p in placed]
    masks = visible_masks(owner, len(objects))
    queries = sample_queries(rng, objects, config.phrases_per_image, config.negative_fraction)
    return Scene(image_u8, objects, masks, mask_boxes(masks), queries)


def scene_rng(seed: int, index: int) -> np.random.Generator:
    """The generator of scene `index` of a seed's stream (independent of every other index)."""
    return np.random.default_rng([check_non_negative(seed, "seed"), 0, check_non_negative(index, "scene index")])


def scene_stream(seed: int, size: int = 256, config: SceneConfig | None = None,
                 start: int = 0, step: int = 1) -> Iterator[Scene]:
    """Endless scenes start, start + step, ... of a seed: the very scenes `write_image_dataset`
    writes for that seed, so training in memory and evaluating from disk agree. Give data
    loader worker w of n `start=w, step=n`."""
    return indexed_stream(start, step, lambda index: generate_scene(scene_rng(seed, index), size, config))
