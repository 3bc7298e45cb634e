"""The concept vocabulary of the synthetic world and how objects are drawn from it.

Every object has four attributes, each with a closed vocabulary:

- shape (10): circle, square, triangle, star, ring, cross, heart, hexagon, diamond, crescent.
  Shapes are told apart by outline alone; a diamond is an elongated rhombus (never a square
  turned by 45 degrees, and rotations stay within +-30 degrees) so "square" and "diamond" never
  describe the same picture.
- colour (10): red, orange, yellow, green, cyan, blue, purple, pink, white, black. Backgrounds
  and distractors are kept muted (low saturation, mid brightness) so an object's colour word is
  never ambiguous with its surroundings.
- size (3): small, medium, large, defined by the shape's radius as a fraction of the image
  side, with gaps between the ranges so the word is unambiguous at a glance.
- pattern (3): solid, striped, dotted. Stripes and dots are a darker (or, on black, lighter)
  shade of the object's own colour, so the pattern never adds a second colour word.

Objects are sampled around a per-scene "theme" (a few shapes and colours) so that shapes repeat
with different colours, sizes and patterns: that is what makes "red star" differ from "star"
and gives hard negatives ("blue star" where only red stars exist). Some objects are
"siblings" of an earlier one (all four words equal), so specific phrases have several
instances too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from opensam3.errors import InvalidInputError

T = TypeVar("T")

SHAPES: tuple[str, ...] = (
    "circle", "square", "triangle", "star", "ring", "cross", "heart", "hexagon", "diamond", "crescent",
)
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (214, 38, 38),
    "orange": (243, 139, 28),
    "yellow": (242, 220, 36),
    "green": (46, 168, 64),
    "cyan": (40, 200, 214),
    "blue": (38, 78, 222),
    "purple": (136, 58, 192),
    "pink": (246, 128, 196),
    "white": (246, 246, 246),
    "black": (22, 22, 22),
}
# Radius (shape extent from its centre) as a fraction of the image side.
SIZES: dict[str, tuple[float, float]] = {
    "small": (0.045, 0.065),
    "medium": (0.085, 0.11),
    "large": (0.14, 0.175),
}
PATTERNS: tuple[str, ...] = ("solid", "striped", "dotted")
_PATTERN_WEIGHTS = np.array([0.4, 0.3, 0.3])

# Image sides the world is designed for: below 128 px small objects are ~6 px across and
# patterns stop being legible; above 2048 a scene is needlessly large for training.
MIN_IMAGE_SIZE = 128
MAX_IMAGE_SIZE = 2048
MAX_ROTATION_DEGREES = 30.0


class SynthConfigError(InvalidInputError):
    """A generator argument is out of range; the message names the argument and the valid range."""


@dataclass(frozen=True)
class SceneObject:
    """One object: its concept attributes and where it is drawn.

    `object_id` is stable within a scene or clip. `center` is (x, y) in pixels (pixel centres at
    +0.5), `radius` in pixels, `angle` in degrees (counter-clockwise), `stripe_angle` the
    direction of the stripes relative to the object.
    """

    object_id: int
    shape: str
    color: str
    size: str
    pattern: str
    center: tuple[float, float]
    radius: float
    angle: float
    rgb: tuple[int, int, int]
    stripe_angle: float = 0.0

    def attributes(self) -> dict[str, str]:
        return {"shape": self.shape, "color": self.color, "size": self.size, "pattern": self.pattern}

    def moved(self, center: tuple[float, float], angle: float) -> "SceneObject":
        """The same object at another position and rotation (a clip frame)."""
        return SceneObject(self.object_id, self.shape, self.color, self.size, self.pattern, center,
                           self.radius, angle, self.rgb, self.stripe_angle)


@dataclass(frozen=True)
class Theme:
    """The shapes and colours one scene draws its objects from."""

    shapes: tuple[str, ...]
    colors: tuple[str, ...]


def check_non_negative(value: object, name: str) -> int:
    """An integer >= 0 (counts, seeds), else an error naming the argument."""
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 0:
        raise SynthConfigError(f"{name} must be a non-negative integer, got {value!r}")
    return int(value)


def indexed_stream(start: int, step: int, make: Callable[[int], T]) -> Iterator[T]:
    """make(start), make(start + step), ... forever; lets data-loader worker w of n take
    ``start=w, step=n`` of a seed's stream."""
    if step < 1:
        raise SynthConfigError(f"step must be at least 1, got {step}")
    index = check_non_negative(start, "start")
    while True:
        yield make(index)
        index += step


def check_image_size(size: int) -> int:
    if not isinstance(size, (int, np.integer)) or isinstance(size, bool):
        raise SynthConfigError(f"image size must be an integer number of pixels, got {size!r}")
    if not MIN_IMAGE_SIZE <= size <= MAX_IMAGE_SIZE:
        raise SynthConfigError(
            f"image size must be between {MIN_IMAGE_SIZE} and {MAX_IMAGE_SIZE} pixels, got {size} "
            f"(smaller images make small objects and their patterns illegible)"
        )
    return int(size)


def sample_theme(rng: np.random.Generator, max_shapes: int = 4, max_colors: int = 5) -> Theme:
    shapes = rng.choice(len(SHAPES), size=int(rng.integers(1, max_shapes + 1)), replace=False)
    names = list(COLORS)
    colors = rng.choice(len(names), size=int(rng.integers(2, max_colors + 1)), replace=False)
    return Theme(tuple(SHAPES[i] for i in sorted(shapes)), tuple(names[i] for i in sorted(colors)))


def jittered_rgb(rng: np.random.Generator, color: str) -> tuple[int, int, int]:
    """The colour's reference RGB moved by a few levels, so colours are learnt as ranges."""
    base = np.array(COLORS[color], dtype=np.int64)
    return tuple(int(v) for v in np.clip(base + rng.integers(-14, 15, size=3), 0, 255))


def sample_radius(rng: np.random.Generator, size_word: str, image_size: int) -> float:
    low, high = SIZES[size_word]
    return float(rng.uniform(low, high) * image_size)


def sample_object(
    rng: np.random.Generator,
    object_id: int,
    theme: Theme,
    image_size: int,
    center: tuple[float, float] = (0.0, 0.0),
    shape: str | None = None,
    size_word: str | None = None,
) -> SceneObject:
    """Attributes from the theme (shape and size may be forced, e.g. for a clip's occluder)."""
    shape = shape or theme.shapes[int(rng.integers(len(theme.shapes)))]
    color = theme.colors[int(rng.integers(len(theme.colors)))]
    size_word = size_word or tuple(SIZES)[int(rng.integers(len(SIZES)))]
    pattern = PATTERNS[int(rng.choice(len(PATTERNS), p=_PATTERN_WEIGHTS))]
    return SceneObject(
        object_id=object_id,
        shape=shape,
        color=color,
        size=size_word,
        pattern=pattern,
        center=center,
        radius=sample_radius(rng, size_word, image_size),
        angle=float(rng.uniform(-MAX_ROTATION_DEGREES, MAX_ROTATION_DEGREES)),
        rgb=jittered_rgb(rng, color),
        stripe_angle=float(rng.choice([0.0, 45.0, 90.0, 135.0])),
    )


def sample_sibling(rng: np.random.Generator, model: SceneObject, object_id: int, image_size: int) -> SceneObject:
    """A new object with all four attribute words of `model` (its own radius, pose and colour
    jitter): repeated look-alikes give even the most specific phrases several instances."""
    return SceneObject(
        object_id=object_id, shape=model.shape, color=model.color, size=model.size, pattern=model.pattern,
        center=model.center, radius=sample_radius(rng, model.size, image_size),
        angle=float(rng.uniform(-MAX_ROTATION_DEGREES, MAX_ROTATION_DEGREES)),
        rgb=jittered_rgb(rng, model.color), stripe_angle=model.stripe_angle,
    )
