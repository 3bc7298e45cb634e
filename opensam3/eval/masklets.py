"""Spatio-temporal IoU between masklets (per-frame RLE lists) and tracklets (per-frame boxes).

Masklets: intersection and union pixel counts are summed over all frames, so a frame where only
one side is present adds its area to the union; two empty masklets have IoU 1 (the official
convention). Tracklets: per-frame box intersection and union summed over frames, in float32
like the official torch code, with a missing box counted as [0, 0, 0, 0].
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from opensam3.data import rle
from opensam3.eval.errors import EvalInputError


def _frames(masklet: dict, key: str, where: str) -> list:
    frames = masklet.get(key)
    if not isinstance(frames, list):
        raise EvalInputError(f"{where}: '{key}' must be a list with one entry (or null) per frame")
    return frames


def masklet_iou(dets: Sequence[dict], truths: Sequence[dict], where: str) -> np.ndarray:
    """(D, G) masklet IoU from the 'segmentations' of predictions and ground truths."""
    if not dets or not truths:
        return np.zeros((len(dets), len(truths)))
    det_frames = [_frames(d, "segmentations", f"prediction in {where}") for d in dets]
    gt_frames = [_frames(g, "segmentations", f"ground truth in {where}") for g in truths]
    num_frames = len(gt_frames[0])
    if any(len(f) != num_frames for f in det_frames + gt_frames):
        raise EvalInputError(f"{where}: masklets have different numbers of frames; one entry per video frame is needed")
    inter = np.zeros((len(dets), len(truths)), dtype=np.int64)
    det_area = np.zeros(len(dets), dtype=np.int64)
    gt_area = np.zeros(len(truths), dtype=np.int64)
    for t in range(num_frames):
        det_present = [i for i, f in enumerate(det_frames) if f[t]]
        gt_present = [j for j, f in enumerate(gt_frames) if f[t]]
        if not det_present and not gt_present:
            continue
        try:
            frame_inter, frame_det_area, frame_gt_area = rle.intersection_counts(
                [det_frames[i][t] for i in det_present], [gt_frames[j][t] for j in gt_present])
        except rle.RleError as exc:
            raise EvalInputError(f"{where}, frame {t}: {exc}") from exc
        det_area[det_present] += frame_det_area
        gt_area[gt_present] += frame_gt_area
        if det_present and gt_present:
            inter[np.ix_(det_present, gt_present)] += frame_inter
    union = det_area[:, None] + gt_area[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 1.0)


def _boxes_or_zero(masklet: dict, where: str) -> list[list[float]]:
    return [b if b is not None else [0, 0, 0, 0] for b in _frames(masklet, "bboxes", where)]


def tracklet_iou(dets: Sequence[dict], truths: Sequence[dict], where: str) -> np.ndarray:
    """(D, G) tracklet box IoU, float32 like the official torch code (thresholds compare in float32)."""
    if not dets or not truths:
        return np.zeros((len(dets), len(truths)))
    try:
        det = torch.tensor([_boxes_or_zero(d, f"prediction in {where}") for d in dets], dtype=torch.float32)
        gt = torch.tensor([_boxes_or_zero(g, f"ground truth in {where}") for g in truths], dtype=torch.float32)
    except (ValueError, TypeError) as exc:
        raise EvalInputError(f"{where}: 'bboxes' must hold 4 numbers or null per frame, same frame count everywhere") from exc
    det, gt = det.unsqueeze(1), gt.unsqueeze(0)
    det_tl, det_br = det[..., :2], det[..., :2] + det[..., 2:]
    gt_tl, gt_br = gt[..., :2], gt[..., :2] + gt[..., 2:]
    det_area = (det_br - det_tl).prod(-1)
    gt_area = (gt_br - gt_tl).prod(-1)
    inter = (torch.min(det_br, gt_br) - torch.max(det_tl, gt_tl)).clamp(min=0).prod(-1)
    union = det_area + gt_area - inter
    inter_sum, union_sum = inter.sum(-1), union.sum(-1)
    if not bool((union_sum > 0).all()):
        raise EvalInputError(f"{where}: a box tracklet has no box in any frame; drop empty masklets")
    return (inter_sum / union_sum).numpy()


def spatio_temporal_iou(dets: Sequence[dict], truths: Sequence[dict], iou_type: str, where: str) -> np.ndarray:
    if iou_type == "segm":
        return masklet_iou(dets, truths, where)
    return tracklet_iou(dets, truths, where)


def mean_area(masklet: dict, key: str = "areas") -> float:
    """Mean per-frame area (missing frames count as 0), the YT-VIS size of an object."""
    areas: list[Any] = masklet.get(key) or []
    if not areas:
        return 0.0
    return float(np.mean([a if a is not None else 0 for a in areas]))
