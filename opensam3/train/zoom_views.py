"""Training views shaped like the predictor's zoom windows (``opensam3.predictor.zoom``).

At inference a small object is looked at again on a window a few times its size, cut from the
image and resized to the model's input: the object and its neighbours then appear several times
larger (and softer) than in any full scene. Training the interactive heads on such views as well
as on full scenes teaches them the objects they meet in the second look.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from opensam3.predictor.zoom import ZoomRule, ZoomWindow

NO_PROMPTS = np.zeros((0, 2))


def _jittered(window: ZoomWindow, rng: np.random.Generator, jitter: float, height: int, width: int) -> ZoomWindow:
    """The window moved by up to ``jitter`` x its side each way (the predictor centres it on its
    first, imperfect mask), kept inside the image."""
    shift = rng.uniform(-jitter, jitter, size=2) * window.side
    left = int(np.clip(round(window.left + shift[0]), 0, width - window.side))
    top = int(np.clip(round(window.top + shift[1]), 0, height - window.side))
    return ZoomWindow(left, top, window.side)


def zoomed_view(image: np.ndarray, masks: np.ndarray, rng: np.random.Generator, size: int,
                margins: tuple[float, float] = (2.5, 4.5), jitter: float = 0.1,
                min_pixels: int = 16) -> tuple[np.ndarray, torch.Tensor] | None:
    """A zoom window around one randomly chosen small object of a scene.

    image (H, W, 3) uint8 and masks (K, H, W) bool -> the window's pixels (side, side, 3), uncut
    by resizing (the model's preprocessing resizes them, as it does for the predictor's window),
    and the masks (K', size, size) bool of the objects with at least ``min_pixels`` visible in it.
    The window is the predictor's (``ZoomRule`` with its default bounds) for a margin drawn from
    ``margins``; None when the scene has no object small enough to zoom on."""
    height, width = image.shape[:2]
    for index in rng.permutation(len(masks)):
        margin = float(rng.uniform(*margins))
        window = ZoomRule(margin).window(masks[index], NO_PROMPTS)
        if window is None:
            continue
        window = _jittered(window, rng, jitter, height, width)
        rows, cols = window.slices()
        crop = torch.from_numpy(np.ascontiguousarray(masks[:, rows, cols]))[None].float()
        resized = F.interpolate(crop, size=(size, size), mode="bilinear", align_corners=False)[0] >= 0.5
        visible = resized.flatten(1).sum(1) >= min_pixels
        if not visible.any():
            continue
        return np.ascontiguousarray(image[rows, cols]), resized[visible]
    return None
