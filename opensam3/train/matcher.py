"""One-to-one assignment of predicted queries to ground-truth instances (DETR-style).

The cost of giving query q to instance t is, as in SAM 3's binary matcher:

    cost_class * focal(q)  +  cost_bbox * L1(box_q, box_t)  +  cost_giou * -GIoU(box_q, box_t)

where focal(q) is the focal loss of calling q positive minus that of calling it negative (it
does not depend on t: with one class, the class term only ranks queries). Pairs without any
instance get no assignment. The assignment itself is the exact minimum-cost solution
(opensam3.eval.matching, a scipy-compatible solver), computed on the CPU without gradients.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from opensam3.eval.matching import linear_sum_assignment
from opensam3.ops.boxes import cxcywh_to_xyxy, generalized_box_iou

Assignment = tuple[torch.Tensor, torch.Tensor]  # (query indices, target indices), int64


def focal_class_cost(logits: torch.Tensor, alpha: float, gamma: float) -> torch.Tensor:
    """Per-query cost of a positive label: focal(positive) - focal(negative), from logits."""
    prob = logits.sigmoid()
    positive = alpha * (1 - prob) ** gamma * -F.logsigmoid(logits)
    negative = (1 - alpha) * prob ** gamma * -F.logsigmoid(-logits)
    return positive - negative


class HungarianMatcher:
    """Defaults are the SAM 3 builder's: focal class cost 2, L1 5, GIoU 2, alpha 0.25, gamma 2."""

    def __init__(self, cost_class: float = 2.0, cost_bbox: float = 5.0, cost_giou: float = 2.0,
                 alpha: float = 0.25, gamma: float = 2.0):
        if cost_class == 0 and cost_bbox == 0 and cost_giou == 0:
            raise ValueError("at least one matching cost weight must be non-zero")
        self.cost_class, self.cost_bbox, self.cost_giou = cost_class, cost_bbox, cost_giou
        self.alpha, self.gamma = alpha, gamma

    @torch.no_grad()
    def cost_matrix(self, logits: torch.Tensor, boxes: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """(Q,) logits, (Q, 4) predicted and (T, 4) target cxcywh boxes -> (Q, T) costs."""
        logits, boxes, targets = logits.float(), boxes.float(), targets.float().to(boxes.device)
        l1 = torch.cdist(boxes, targets, p=1)
        giou = generalized_box_iou(cxcywh_to_xyxy(boxes), cxcywh_to_xyxy(targets))
        cls = focal_class_cost(logits, self.alpha, self.gamma)[:, None]
        return self.cost_bbox * l1 + self.cost_class * cls - self.cost_giou * giou

    @torch.no_grad()
    def __call__(self, logits: torch.Tensor, boxes: torch.Tensor, target_boxes: list[torch.Tensor]) -> list[Assignment]:
        """logits (B, Q), boxes (B, Q, 4) cxcywh; target_boxes: B tensors (T_b, 4) cxcywh.

        Returns per pair (query_idx, target_idx), sorted by query, of length min(Q, T_b).
        """
        result = []
        for b, targets in enumerate(target_boxes):
            if targets.shape[0] == 0:
                empty = torch.zeros(0, dtype=torch.long)
                result.append((empty, empty))
                continue
            cost = self.cost_matrix(logits[b], boxes[b], targets).cpu().numpy().astype(np.float64)
            rows, cols = linear_sum_assignment(cost)
            result.append((torch.as_tensor(rows, dtype=torch.long), torch.as_tensor(cols, dtype=torch.long)))
        return result


class OneToManyMatcher:
    """SAM 3's one-to-many assignment for the DAC query copy (``BinaryOneToManyMatcher``).

    Quality = alpha * prob + (1 - alpha) * IoU(box_q, box_t); every instance gets the queries
    whose quality is above the (1 - topk / Q) quantile over the queries and above
    ``threshold``. A query may serve several instances; there is no one-to-one constraint.
    Defaults are the official training setup's: alpha 0.3, threshold 0.4, topk 4.
    """

    def __init__(self, alpha: float = 0.3, threshold: float = 0.4, topk: int = 4):
        self.alpha, self.threshold, self.topk = alpha, threshold, topk

    @torch.no_grad()
    def __call__(self, logits: torch.Tensor, boxes: torch.Tensor, target_boxes: list[torch.Tensor]) -> list[Assignment]:
        """logits (B, Q), boxes (B, Q, 4) cxcywh; target_boxes: B tensors (T_b, 4) cxcywh.
        Returns per pair (query_idx, target_idx) of every selected (query, instance) pair."""
        from opensam3.ops.boxes import box_iou

        result = []
        num_queries = logits.shape[1]
        for b, targets in enumerate(target_boxes):
            if targets.shape[0] == 0:
                empty = torch.zeros(0, dtype=torch.long)
                result.append((empty, empty))
                continue
            iou = box_iou(cxcywh_to_xyxy(boxes[b].float()), cxcywh_to_xyxy(targets.float().to(boxes.device)))
            quality = self.alpha * logits[b].float().sigmoid()[:, None] + (1 - self.alpha) * iou  # (Q, T)
            cut = torch.quantile(quality, 1 - self.topk / num_queries, dim=0, keepdim=True)
            rows, cols = torch.nonzero((quality > cut) & (quality > self.threshold), as_tuple=True)
            result.append((rows.cpu(), cols.cpu()))
        return result
