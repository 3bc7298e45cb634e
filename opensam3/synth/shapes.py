"""Shape rasterisation by signed distance, on the object's bounding crop only.

Each shape is a signed distance function (SDF) of the unit shape (extent about 1 around its
centre, y pointing up). A pixel's coverage is `clip(0.5 - distance_in_pixels, 0, 1)`: a
one-pixel anti-aliased edge for free, and the binary mask is `coverage >= 0.5`, i.e. the pixel
centre lies inside the shape. Distances need only be right near the edge, so unions use `min`
and differences `max(a, -b)`. Everything is numpy over the crop, which is what keeps a 256 px
scene in the low milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

# How far a unit shape reaches from its centre at most (the square's corner is at 1.06).
_EXTENT = 1.08


def _regular_polygon(count: int, radius: float = 1.0, phase_degrees: float = 90.0) -> np.ndarray:
    angles = np.deg2rad(phase_degrees + 360.0 * np.arange(count) / count)
    return np.stack([radius * np.cos(angles), radius * np.sin(angles)], axis=1)


def _star_vertices(points: int = 5, outer: float = 1.0, inner: float = 0.45) -> np.ndarray:
    angles = np.deg2rad(90.0 + 180.0 * np.arange(2 * points) / points)
    radii = np.where(np.arange(2 * points) % 2 == 0, outer, inner)
    return np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)


_TRIANGLE = _regular_polygon(3) + np.array([0.0, -0.12])  # centred on its box, not its centroid
_HEXAGON = _regular_polygon(6, phase_degrees=0.0)
_DIAMOND = np.array([[0.0, 1.0], [-0.6, 0.0], [0.0, -1.0], [0.6, 0.0]])
_STAR = _star_vertices()


def polygon_sdf(x: np.ndarray, y: np.ndarray, vertices: np.ndarray) -> np.ndarray:
    """Exact signed distance to a simple polygon (negative inside), any convexity."""
    distance_sq = np.full(x.shape, np.inf, dtype=np.float32)
    inside = np.zeros(x.shape, dtype=bool)
    count = len(vertices)
    for i in range(count):
        xi, yi = vertices[i]
        xj, yj = vertices[i - 1]
        ex, ey = xj - xi, yj - yi
        wx, wy = x - xi, y - yi
        t = np.clip((wx * ex + wy * ey) / (ex * ex + ey * ey), 0.0, 1.0)
        bx, by = wx - ex * t, wy - ey * t
        np.minimum(distance_sq, bx * bx + by * by, out=distance_sq)
        # Crossing-number parity: a horizontal ray from the point crosses this edge.
        crosses = (yi > y) != (yj > y)
        crosses &= x < (xj - xi) * (y - yi) / np.where(yj != yi, yj - yi, 1.0) + xi
        inside ^= crosses
    return np.where(inside, -1.0, 1.0).astype(np.float32) * np.sqrt(distance_sq)


def box_sdf(x: np.ndarray, y: np.ndarray, half_width: float, half_height: float) -> np.ndarray:
    qx, qy = np.abs(x) - half_width, np.abs(y) - half_height
    outside = np.sqrt(np.maximum(qx, 0.0) ** 2 + np.maximum(qy, 0.0) ** 2)
    return outside + np.minimum(np.maximum(qx, qy), 0.0)


def _heart_sdf(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    # Inigo Quilez's heart (tip at the origin, lobes up to y = 1.10), rescaled to extent ~1.
    scale = 1.85
    px, py = np.abs(x) / scale, y / scale + 0.55
    upper = np.sqrt((px - 0.25) ** 2 + (py - 0.75) ** 2) - np.sqrt(2.0) / 4.0
    half = 0.5 * np.maximum(px + py, 0.0)
    lower = np.sqrt(np.minimum(px ** 2 + (py - 1.0) ** 2, (px - half) ** 2 + (py - half) ** 2)) * np.sign(px - py)
    return np.where(py + px > 1.0, upper, lower) * scale


def _circle(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.sqrt(x * x + y * y) - 1.0


def _ring(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.abs(np.sqrt(x * x + y * y) - 0.72) - 0.28


def _cross(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.minimum(box_sdf(x, y, 0.95, 0.3), box_sdf(x, y, 0.3, 0.95))


def _crescent(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.maximum(np.sqrt(x * x + y * y) - 1.0, -(np.sqrt((x - 0.5) ** 2 + y * y) - 0.85))


UNIT_SDFS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "circle": _circle,
    "square": lambda x, y: box_sdf(x, y, 0.75, 0.75),
    "triangle": lambda x, y: polygon_sdf(x, y, _TRIANGLE),
    "star": lambda x, y: polygon_sdf(x, y, _STAR),
    "ring": _ring,
    "cross": _cross,
    "heart": _heart_sdf,
    "hexagon": lambda x, y: polygon_sdf(x, y, _HEXAGON),
    "diamond": lambda x, y: polygon_sdf(x, y, _DIAMOND),
    "crescent": _crescent,
}


@dataclass(frozen=True)
class Raster:
    """A shape drawn on its crop: rows [top, top + h), columns [left, left + w) of the image
    (may reach outside it), the coverage in [0, 1] and the object-local coordinates of each
    pixel in pixels (u right, v up, rotated with the object) for patterns and shading."""

    top: int
    left: int
    coverage: np.ndarray
    u: np.ndarray
    v: np.ndarray

    @property
    def mask(self) -> np.ndarray:
        return self.coverage >= 0.5

    def clipped(self, height: int, width: int) -> tuple[slice, slice, slice, slice]:
        """(image rows, image cols, crop rows, crop cols) of the part inside the image."""
        h, w = self.coverage.shape
        r0, c0 = max(self.top, 0), max(self.left, 0)
        r1, c1 = min(self.top + h, height), min(self.left + w, width)
        r1, c1 = max(r1, r0), max(c1, c0)
        return (slice(r0, r1), slice(c0, c1),
                slice(r0 - self.top, r1 - self.top), slice(c0 - self.left, c1 - self.left))


def rasterize(shape: str, center: tuple[float, float], radius: float, angle_degrees: float,
              anti_alias: bool = True) -> Raster:
    """Coverage of a shape of the given radius (pixels), centre (x, y) and rotation."""
    reach = radius * _EXTENT + 1.5
    cx, cy = center
    left, top = int(np.floor(cx - reach)), int(np.floor(cy - reach))
    right, bottom = int(np.ceil(cx + reach)), int(np.ceil(cy + reach))
    xs = np.arange(left, right, dtype=np.float32) + 0.5 - cx
    ys = np.arange(top, bottom, dtype=np.float32) + 0.5 - cy
    dx, dy = np.meshgrid(xs, -ys)  # image y grows downwards; local v grows upwards
    theta = np.deg2rad(angle_degrees)
    cos, sin = np.float32(np.cos(theta)), np.float32(np.sin(theta))
    u = dx * cos + dy * sin
    v = -dx * sin + dy * cos
    distance = UNIT_SDFS[shape](u / radius, v / radius) * radius
    if anti_alias:
        coverage = np.clip(0.5 - distance, 0.0, 1.0).astype(np.float32)
    else:
        coverage = (distance <= 0.0).astype(np.float32)
    return Raster(top, left, coverage, u.astype(np.float32), v.astype(np.float32))
