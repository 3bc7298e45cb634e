"""Prompt sampling for interactive (SAM 1/2 style) training and evaluation.

Coordinates are x, y pixel indices of the mask's grid (the predictor's convention: the prompt
encoder adds half a pixel to reach the pixel centre). Boxes are x0, y0, x1, y1 with x1, y1
exclusive, as ``opensam3.synth`` writes them.

    farthest_interior_point(mask)            the standard evaluation click
    random_interior_point(mask, rng)         a uniform positive click
    jittered_box(box, rng, size)             SAM's box noise (10% of the side, at most 20 px)
    corrective_clicks(pred, target, rng)     one click per mask in its error region
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def _as_bool_tensor(mask) -> torch.Tensor:
    return (mask if torch.is_tensor(mask) else torch.from_numpy(np.asarray(mask))).bool()


def distance_to_boundary(mask) -> torch.Tensor:
    """(H, W) bool -> (H, W) float: each object pixel's Euclidean distance to the nearest pixel
    outside the object (the image border counts as outside); 0 outside the object."""
    mask = _as_bool_tensor(mask)
    height, width = mask.shape
    out = torch.zeros(height, width, device=mask.device)
    if not mask.any():
        return out
    padded = F.pad(mask[None, None].float(), (1, 1, 1, 1))[0, 0] > 0
    # outside pixels (padding included) with an object pixel among their 4 neighbours
    near = F.max_pool2d(padded[None, None].float(), 3, stride=1, padding=1)[0, 0] > 0
    outside = (~padded & near).nonzero().float() - 1.0  # back to image coordinates
    inside = mask.nonzero().float()
    nearest = torch.cdist(inside, outside).amin(dim=1)
    out[mask] = nearest
    return out


def farthest_interior_point(mask) -> tuple[int, int] | None:
    """The object pixel farthest from the object's boundary as (x, y); None for an empty mask.
    Ties go to the first such pixel in raster order."""
    mask = _as_bool_tensor(mask)
    if not mask.any():
        return None
    distance = distance_to_boundary(mask)
    index = int(distance.flatten().argmax())
    return index % mask.shape[1], index // mask.shape[1]


def random_interior_point(mask, rng: np.random.Generator) -> tuple[int, int] | None:
    """A uniformly random object pixel as (x, y); None for an empty mask."""
    ys, xs = np.nonzero(np.asarray(mask))
    if len(xs) == 0:
        return None
    pick = int(rng.integers(len(xs)))
    return int(xs[pick]), int(ys[pick])


def jittered_box(box, rng: np.random.Generator, size: int, noise: float = 0.1, max_shift: float = 20.0) -> np.ndarray:
    """Move each box edge by Gaussian noise of ``noise`` x the box side (at most ``max_shift``
    pixels), keeping the box inside the image and at least one pixel wide."""
    x0, y0, x1, y1 = (float(v) for v in box)
    sides = np.array([x1 - x0, y1 - y0, x1 - x0, y1 - y0])
    shift = np.clip(rng.normal(size=4) * noise * sides, -max_shift, max_shift)
    x0, y0, x1, y1 = np.array([x0, y0, x1, y1]) + shift
    x0, y0 = np.clip([x0, y0], 0, size - 1)
    x1, y1 = np.clip([x1, y1], [x0 + 1, y0 + 1], size)
    return np.array([x0, y0, x1, y1], dtype=np.float32)


def corrective_clicks(pred: torch.Tensor, target: torch.Tensor, generator: torch.Generator | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """One corrective click per mask, sampled uniformly from its error region.

    pred, target: (B, H, W) bool. A click in a missed object pixel (false negative) is
    positive (label 1), one in a wrongly included pixel (false positive) negative (label 0).
    Returns (B, 2) float x, y and (B,) long labels on ``pred``'s device. A mask without errors
    gets a positive click at a random object pixel (or anywhere, labelled 0, if the object is empty).

    The random keys are drawn on ``generator``'s device (on ``pred``'s without one) and then
    moved to ``pred``'s, so a CPU generator gives the same clicks whichever device the masks are on.
    """
    pred, target = pred.bool(), target.bool().to(pred.device)
    batch, height, width = pred.shape
    error = (pred ^ target).reshape(batch, -1)
    fallback = target.reshape(batch, -1).clone()
    fallback[~fallback.any(dim=1)] = True
    pool = torch.where(error.any(dim=1, keepdim=True), error, fallback)
    # a uniform draw among the pool's pixels: the largest of independent uniform keys
    draw_device = generator.device if generator is not None else pool.device
    keys = torch.rand(pool.shape, generator=generator, device=draw_device).to(pool.device)
    index = torch.where(pool, keys, torch.full_like(keys, -1.0)).argmax(dim=1)
    xy = torch.stack((index % width, index // width), dim=1).float()
    labels = target.reshape(batch, -1).gather(1, index[:, None])[:, 0].long()
    return xy, labels
