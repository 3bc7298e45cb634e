"""Painting objects (patterns, shading) back to front and deriving occlusion-aware masks.

Objects are painted in list order, each over everything before it, with its anti-aliased
coverage as alpha. The instance mask of an object is the part of it that stays visible: the
pixels whose centre lies inside it (coverage >= 0.5) and inside no object painted later. It is
read off an "owner" map (the index of the top-most object per pixel, -1 = background), so
masks of one image never overlap and a ring's hole shows (and belongs to) what lies behind it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from opensam3.synth.shapes import Raster, rasterize
from opensam3.synth.world import SceneObject


@dataclass(frozen=True)
class PlacedObject:
    """An object together with its raster at its current position."""

    obj: SceneObject
    raster: Raster


def place(obj: SceneObject, anti_alias: bool = True) -> PlacedObject:
    return PlacedObject(obj, rasterize(obj.shape, obj.center, obj.radius, obj.angle, anti_alias))


def pattern_shade(rgb: tuple[int, int, int]) -> np.ndarray:
    """The colour of stripes and dots: a darker shade of the object's colour (lighter on very
    dark colours), so a pattern never reads as a second colour."""
    base = np.array(rgb, dtype=np.float32)
    if base.max() < 70:
        return base + 0.4 * (255.0 - base)
    return base * 0.55


def pattern_amount(obj: SceneObject, u: np.ndarray, v: np.ndarray, anti_alias: bool) -> np.ndarray | float:
    """Per-pixel share of the pattern colour (0 = base colour) in object-local pixels."""
    if obj.pattern == "solid":
        return 0.0
    if obj.pattern == "striped":
        period = max(4.0, obj.radius * 0.5)
        theta = np.deg2rad(obj.stripe_angle)
        along = (u * np.cos(theta) + v * np.sin(theta)) / period
        # Distance (pixels) to the nearest stripe of half a period's width.
        distance = (np.abs(along - np.floor(along) - 0.5) - 0.25) * period
    else:
        spacing = max(5.0, obj.radius * 0.5)
        du = u / spacing - np.floor(u / spacing) - 0.5
        dv = v / spacing - np.floor(v / spacing) - 0.5
        distance = (np.sqrt(du * du + dv * dv) - 0.3) * spacing
    if anti_alias:
        return np.clip(0.5 - distance, 0.0, 1.0)
    return (distance <= 0).astype(np.float32)


def paint_object(image: np.ndarray, placed: PlacedObject, anti_alias: bool = True) -> None:
    """Alpha-blend one object into a float32 (H, W, 3) image, in place."""
    raster, obj = placed.raster, placed.obj
    rows, cols, crop_rows, crop_cols = raster.clipped(*image.shape[:2])
    coverage = raster.coverage[crop_rows, crop_cols]
    if coverage.size == 0:
        return
    u, v = raster.u[crop_rows, crop_cols], raster.v[crop_rows, crop_cols]
    amount = pattern_amount(obj, u, v, anti_alias)
    base = np.array(obj.rgb, dtype=np.float32)
    shade = pattern_shade(obj.rgb)
    # Soft directional shading (lit from the upper left of the object) gives objects some body.
    light = 1.0 + 0.12 * (v - u) / (obj.radius * 1.41)
    if isinstance(amount, np.ndarray):
        colour = base + amount[..., None] * (shade - base)
    else:
        colour = np.broadcast_to(base, coverage.shape + (3,))
    colour = np.clip(colour * light[..., None], 0, 255)
    region = image[rows, cols]
    region += coverage[..., None] * (colour - region)


def stamp_owner(owner: np.ndarray, placed: PlacedObject, index: int) -> None:
    """Mark the pixels the object covers as owned by `index` (it is on top of earlier ones)."""
    rows, cols, crop_rows, crop_cols = placed.raster.clipped(*owner.shape)
    owner[rows, cols][placed.raster.mask[crop_rows, crop_cols]] = index


def composite(background: np.ndarray, placed: list[PlacedObject], anti_alias: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Paint objects back to front over a copy of the background.

    Returns the float32 image and the (H, W) int16 owner map (index into `placed`, -1 = none).
    """
    image = background.copy()
    owner = np.full(background.shape[:2], -1, dtype=np.int16)
    for index, item in enumerate(placed):
        paint_object(image, item, anti_alias)
        stamp_owner(owner, item, index)
    return image, owner


def visible_masks(owner: np.ndarray, count: int) -> np.ndarray:
    """(count, H, W) bool: each object's visible pixels."""
    return owner[None, :, :] == np.arange(count, dtype=np.int16)[:, None, None]


def mask_boxes(masks: np.ndarray) -> np.ndarray:
    """(N, 4) float32 xyxy pixel boxes of masks (x1, y1 exclusive: one past the last pixel),
    the same box as COCO's [x, y, w, h]; an empty mask gives zeros."""
    boxes = np.zeros((len(masks), 4), dtype=np.float32)
    for i, mask in enumerate(masks):
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        if rows.size:
            boxes[i] = (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)
    return boxes
