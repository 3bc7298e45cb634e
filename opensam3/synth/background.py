"""Textured, noisy backgrounds and distractor clutter (never an instance of any concept).

Backgrounds are two nearby muted colours (saturation <= 0.3, brightness 0.3-0.75) mixed by a
texture: smooth clouds, warped stripes, soft tiles or wood grain, under a lighting gradient.
Muted and mid-bright so that every object colour word, white and black included, stays
unambiguous against them.

Distractors are drawn on the background, behind every object, so they never change an
instance mask: irregular "potato" blobs (an outline no shape word describes), thin line
segments and small specks, in muted colours.
"""

from __future__ import annotations

import colorsys
from functools import lru_cache

import numpy as np
from PIL import Image

TEXTURES: tuple[str, ...] = ("clouds", "stripes", "tiles", "grain")


@lru_cache(maxsize=4)
def _pixel_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column index grids (read-only, shared between images of one size)."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    y.flags.writeable = x.flags.writeable = False
    return y, x


def muted_rgb(rng: np.random.Generator, max_saturation: float = 0.3, value: tuple[float, float] = (0.3, 0.75)) -> np.ndarray:
    hue = rng.uniform()
    rgb = colorsys.hsv_to_rgb(hue, rng.uniform(0.0, max_saturation), rng.uniform(*value))
    return np.array(rgb, dtype=np.float32) * 255.0


def value_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Smooth noise in [0, 1]: a cells x cells random grid upsampled bicubically (PIL, fast)."""
    grid = rng.random((cells, cells), dtype=np.float32)
    image = Image.fromarray(grid, mode="F").resize((size, size), Image.Resampling.BICUBIC)
    return np.asarray(image, dtype=np.float32)


def clouds(rng: np.random.Generator, size: int) -> np.ndarray:
    octaves = [(4, 0.55), (9, 0.3), (20, 0.15)]
    field = sum(weight * value_noise(rng, size, cells) for cells, weight in octaves)
    low, high = float(field.min()), float(field.max())
    return (field - low) / max(high - low, 1e-6)


def texture(rng: np.random.Generator, size: int, kind: str) -> np.ndarray:
    """An (size, size) mixing field in [0, 1]."""
    cloud = clouds(rng, size)
    if kind == "clouds":
        return cloud
    y, x = _pixel_grid(size)
    theta = rng.uniform(0, np.pi)
    along = x * np.cos(theta) + y * np.sin(theta)
    if kind == "stripes":
        period = rng.uniform(0.04, 0.12) * size
        return 0.5 + 0.5 * np.sin(2 * np.pi * along / period + 3.0 * cloud)
    if kind == "tiles":
        period = rng.uniform(0.08, 0.2) * size
        checker = ((np.floor(x / period) + np.floor(y / period)) % 2).astype(np.float32)
        return 0.6 * checker + 0.4 * cloud
    # Wood grain: rings of a strongly warped distance field.
    return 0.5 + 0.5 * np.sin(2 * np.pi * (along / size * rng.uniform(2, 5) + 4.0 * cloud))


def textured_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """(size, size, 3) float32 RGB in [0, 255]."""
    first = muted_rgb(rng)
    second = np.clip(first + rng.uniform(-45, 45, size=3).astype(np.float32), 0, 255)
    kind = TEXTURES[int(rng.integers(len(TEXTURES)))]
    mix = texture(rng, size, kind)[..., None] * np.float32(rng.uniform(0.4, 1.0))
    image = first + mix * (second - first)
    # A soft lighting gradient, so brightness alone never gives objects away.
    y, x = _pixel_grid(size)
    theta = rng.uniform(0, 2 * np.pi)
    along = (x * np.float32(np.cos(theta)) + y * np.float32(np.sin(theta))) / np.float32(size) - np.float32(
        0.5 * (np.cos(theta) + np.sin(theta)))
    light = 1.0 + np.float32(rng.uniform(0.0, 0.25)) * along
    return np.clip(image * light[..., None], 0, 255).astype(np.float32)


def _paint(image: np.ndarray, top: int, left: int, coverage: np.ndarray, rgb: np.ndarray) -> None:
    """Alpha-blend a colour through a coverage crop that may reach outside the image."""
    height, width = image.shape[:2]
    h, w = coverage.shape
    r0, c0, r1, c1 = max(top, 0), max(left, 0), min(top + h, height), min(left + w, width)
    if r1 <= r0 or c1 <= c0:
        return
    alpha = coverage[r0 - top:r1 - top, c0 - left:c1 - left, None]
    region = image[r0:r1, c0:c1]
    region += alpha * (rgb - region)


def _blob(rng: np.random.Generator, image: np.ndarray, size: int) -> None:
    radius = rng.uniform(0.03, 0.09) * size
    cx, cy = rng.uniform(0, size, size=2)
    reach = int(np.ceil(radius * 1.6)) + 2
    top, left = int(cy) - reach, int(cx) - reach
    y, x = np.mgrid[top:top + 2 * reach, left:left + 2 * reach].astype(np.float32) + 0.5
    dx, dy = x - cx, y - cy
    angle = np.arctan2(dy, dx)
    # An irregular, lumpy outline that no shape word describes: mostly the 2nd and 3rd harmonics,
    # moderately (stronger ones give two-lobed, heart-like, or star-like outlines).
    outline = np.ones_like(angle)
    for k, strength in ((2, 0.12), (3, 0.12), (4, 0.04), (5, 0.03)):
        outline += rng.uniform(0.3, 1.0) * strength * np.sin(k * angle + rng.uniform(0, 2 * np.pi))
    distance = np.sqrt(dx * dx + dy * dy) - radius * outline
    _paint(image, top, left, np.clip(0.5 - distance, 0, 1), muted_rgb(rng, 0.35, (0.2, 0.8)))


def _segment(rng: np.random.Generator, image: np.ndarray, size: int) -> None:
    start = rng.uniform(0, size, size=2)
    end = start + rng.uniform(-0.35, 0.35, size=2) * size
    half_width = rng.uniform(0.5, 1.5)
    left, top = (np.floor(np.minimum(start, end)) - 3).astype(int)
    right, bottom = (np.ceil(np.maximum(start, end)) + 3).astype(int)
    y, x = np.mgrid[top:bottom, left:right].astype(np.float32) + 0.5
    direction = end - start
    t = np.clip(((x - start[0]) * direction[0] + (y - start[1]) * direction[1]) / max(direction @ direction, 1e-6), 0, 1)
    distance = np.hypot(x - start[0] - t * direction[0], y - start[1] - t * direction[1]) - half_width
    _paint(image, top, left, np.clip(0.5 - distance, 0, 1), muted_rgb(rng, 0.3, (0.15, 0.85)))


def add_distractors(rng: np.random.Generator, image: np.ndarray) -> None:
    """Blobs, line segments and specks, painted in place on a float32 background."""
    size = image.shape[0]
    for _ in range(int(rng.integers(1, 5))):
        _blob(rng, image, size)
    for _ in range(int(rng.integers(2, 8))):
        _segment(rng, image, size)
    specks = int(rng.integers(5, 30))
    rows, cols = rng.integers(0, size, size=(2, specks))
    image[rows, cols] = np.stack([muted_rgb(rng, 0.3, (0.1, 0.9)) for _ in range(specks)])


def add_sensor_noise(rng: np.random.Generator, image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian pixel noise, rounded to uint8 (the last step of every rendered image)."""
    noisy = image + rng.standard_normal(image.shape, dtype=np.float32) * np.float32(sigma)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
