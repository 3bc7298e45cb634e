"""J&F for single-object video segmentation (DAVIS / SA-V protocol).

J: region similarity, the IoU of predicted and true masks per frame (1 when both are empty).
F: boundary F-measure, precision/recall of boundary pixels matched within a tolerance of
0.008 x image diagonal (rounded up), per frame (1 when both boundaries are empty).
J&F: the mean of the two, each averaged over frames.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from opensam3.eval.errors import EvalInputError

BOUNDARY_TOLERANCE = 0.008


def _as_bool(mask: Any) -> np.ndarray:
    if hasattr(mask, "detach"):
        mask = mask.detach().cpu().numpy()
    return np.asarray(mask) != 0


def region_similarity(pred: Any, truth: Any) -> float:
    p, t = _as_bool(pred), _as_bool(truth)
    union = np.logical_or(p, t).sum()
    return 1.0 if union == 0 else float(np.logical_and(p, t).sum() / union)


def boundary_map(mask: np.ndarray) -> np.ndarray:
    """Pixels of the mask that touch background (4-neighbourhood; the image border is background)."""
    padded = np.pad(mask, 1, constant_values=False)
    interior = padded[1:-1, 1:-1] & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~interior


def _dilate_disk(mask: np.ndarray, radius: int) -> np.ndarray:
    out = mask.copy()
    height, width = mask.shape
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            if dy * dy + dx * dx > radius * radius or (dy == 0 and dx == 0):
                continue
            shifted = np.zeros_like(mask)
            ys, yd = (slice(0, height - dy), slice(dy, height)) if dy >= 0 else (slice(-dy, height), slice(0, height + dy))
            xs, xd = (slice(0, width - dx), slice(dx, width)) if dx >= 0 else (slice(-dx, width), slice(0, width + dx))
            shifted[yd, xd] = mask[ys, xs]
            out |= shifted
    return out


def boundary_f_measure(pred: Any, truth: Any) -> float:
    p, t = _as_bool(pred), _as_bool(truth)
    if p.shape != t.shape:
        raise EvalInputError(f"prediction mask {p.shape} and ground truth {t.shape} differ in size")
    radius = int(math.ceil(BOUNDARY_TOLERANCE * math.hypot(*p.shape)))
    pb, tb = boundary_map(p), boundary_map(t)
    if not pb.any() and not tb.any():
        return 1.0
    if not pb.any() or not tb.any():
        return 0.0
    precision = (pb & _dilate_disk(tb, radius)).sum() / pb.sum()
    recall = (tb & _dilate_disk(pb, radius)).sum() / tb.sum()
    return 0.0 if precision + recall == 0 else float(2 * precision * recall / (precision + recall))


def j_and_f(pred_masks: Sequence[Any], true_masks: Sequence[Any]) -> dict[str, float]:
    """{'J': ..., 'F': ..., 'J&F': ...} over the frames of one object."""
    if len(pred_masks) != len(true_masks) or not len(true_masks):
        raise EvalInputError(f"need one predicted mask per annotated frame: {len(pred_masks)} vs {len(true_masks)}")
    j = float(np.mean([region_similarity(p, t) for p, t in zip(pred_masks, true_masks)]))
    f = float(np.mean([boundary_f_measure(p, t) for p, t in zip(pred_masks, true_masks)]))
    return {"J": j, "F": f, "J&F": (j + f) / 2}
