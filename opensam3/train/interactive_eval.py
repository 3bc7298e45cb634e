"""Held-out evaluation of the interactive path through the public API (``Sam3.predict``).

Per object of held-out synthetic scenes: one positive click at the point farthest from the
object's boundary (the standard interactive-evaluation click; multimask output, the mask with
the highest predicted IoU kept) and the tight box (single mask). Reported: the fraction of
objects with IoU >= 0.8 for the click and >= 0.85 for the box, mean IoUs, and per shape.
"""

from __future__ import annotations

import os
from collections import defaultdict

import numpy as np
import torch

from opensam3.train.interactive_prompts import farthest_interior_point

EVAL_SEED = 11  # the interactive stage trains on seed 10, the detector on 0 (val 1)


def _iou(pred: torch.Tensor, target: np.ndarray) -> float:
    target = torch.from_numpy(target).to(pred.device)
    union = (pred | target).sum().item()
    return (pred & target).sum().item() / union if union else 1.0


def evaluate_interactive(model, seed: int = EVAL_SEED, num_scenes: int = 200, point_threshold: float = 0.8,
                         box_threshold: float = 0.85, progress: bool = False,
                         max_hole_area: float | None = None, device: torch.device | str = "cpu",
                         zoom: bool | None = None) -> dict:
    """model: a loaded ``Sam3`` with tracker weights (evaluated where it is), or a checkpoint path
    for ``opensam3.load`` (loaded onto ``device``).
    max_hole_area: override the predictor's hole filling (low-res pixels; None keeps the API's).
    zoom: force the second look at small objects on / off (None keeps the config's)."""
    from opensam3.api import load
    from opensam3.synth import scene_stream

    sam = load(model, device=device) if isinstance(model, (str, os.PathLike)) else model
    if max_hole_area is not None:
        sam.interactive.max_hole_area = max_hole_area
    size = sam.model.config.image_size
    stream = scene_stream(seed, size=size)
    point_ious, box_ious, shapes = [], [], []
    iterator = range(num_scenes)
    if progress:
        from tqdm import tqdm

        iterator = tqdm(iterator, desc="eval-interactive", dynamic_ncols=True, leave=False)
    for _ in iterator:
        scene = next(stream)
        if not len(scene.objects):
            continue
        state = sam.set_image(scene.image)
        for obj, mask, box in zip(scene.objects, scene.masks, scene.boxes):
            point = farthest_interior_point(mask)
            if point is None:
                continue
            result = sam.predict(state, points=[point], point_labels=[1], multimask_output=True, zoom=zoom)
            best = int(result.iou_scores.argmax())
            point_ious.append(_iou(result.masks[best], mask))
            result = sam.predict(state, box=box, multimask_output=False, zoom=zoom)
            box_ious.append(_iou(result.masks[0], mask))
            shapes.append(obj.shape)
    points, boxes = np.array(point_ious), np.array(box_ious)
    per_shape = defaultdict(lambda: [[], []])
    for shape, p, b in zip(shapes, points, boxes):
        per_shape[shape][0].append(p >= point_threshold)
        per_shape[shape][1].append(b >= box_threshold)
    return {
        "objects": int(len(points)),
        "point_success": float((points >= point_threshold).mean()) if len(points) else 0.0,
        "box_success": float((boxes >= box_threshold).mean()) if len(boxes) else 0.0,
        "point_miou": float(points.mean()) if len(points) else 0.0,
        "box_miou": float(boxes.mean()) if len(boxes) else 0.0,
        "per_shape": {k: {"point_success": round(float(np.mean(v[0])), 3), "box_success": round(float(np.mean(v[1])), 3),
                          "objects": len(v[0])} for k, v in sorted(per_shape.items())},
    }
