"""Mask overlap and duplicate suppression, shared by the image predictor and the video rules."""

from __future__ import annotations

import torch


def mask_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(N, H, W) bool x (M, H, W) bool -> (N, M) IoU (0 for two empty masks)."""
    a = a.flatten(1)
    b = b.flatten(1)
    inter = (a[:, None] & b[None]).sum(-1).float()
    union = (a[:, None] | b[None]).sum(-1).float()
    return inter / union.clamp(min=1)


def nms_keep(probs: torch.Tensor, masks: torch.Tensor, prob_threshold: float, iou_threshold: float) -> torch.Tensor:
    """(Q,) probabilities, (Q, H, W) mask logits -> (Q,) bool: above the threshold and not
    suppressed by a higher-scoring detection whose mask overlaps more than ``iou_threshold``
    (greedy, highest score first; masks are binarised at logit 0)."""
    valid = probs > prob_threshold
    index = torch.nonzero(valid).flatten()
    if index.numel() == 0:
        return valid
    binary = masks[index] > 0
    ious = mask_iou(binary, binary).cpu().numpy()
    order = probs[index].float().cpu().numpy().argsort()[::-1]
    kept = []
    while order.size > 0:
        i = order.item(0)
        kept.append(i)
        order = order[1:][ious[i, order[1:]] <= iou_threshold]
    keep = torch.zeros_like(valid)
    keep[index[kept]] = True
    return keep


def keep_detections(probs: torch.Tensor, masks: torch.Tensor, prob_threshold: float,
                    nms_iou: float | None) -> torch.Tensor:
    """(Q,) bool: the detections above the threshold, minus mask-NMS duplicates when ``nms_iou``
    is set below 1 (a config's or predictor's setting; None or 1 keeps them all)."""
    if nms_iou is None or nms_iou >= 1.0:
        return probs > prob_threshold
    return nms_keep(probs, masks, prob_threshold, nms_iou)
