"""SAM 3's detection losses, applied to every decoder layer (deep supervision).

Per decoder layer, queries are matched to instances (``HungarianMatcher``) and get:
- classification: IoU-aware BCE. A matched query's target is prob^alpha * IoU^(1-alpha)
  (clamped to >= 0.01), weighted by ``pos_weight``; unmatched queries get BCE towards 0
  scaled by prob^gamma (the focal modulation, which stops the many easy negatives from
  dominating). As in SAM 3, pairs without any instance get no query classification loss: the
  presence head alone says "absent", and the final score is query prob x presence prob. For
  pairs that are not instance-exhaustive, unmatched queries get no loss either (an
  unannotated instance may be what they found).
- boxes: L1 and 1 - GIoU on matched queries, summed and divided by the batch's instance count.
- presence: 0.5 * BCE of the presence logit against "the pair has an instance" (SAM 3's focal
  loss with alpha 0.5, gamma 0).
The last layer also gets (the mask head only runs there):
- masks: sigmoid focal loss (pixel mean) and dice on matched queries, at the mask-head resolution.
- semantic: BCE (pixel mean) and dice of the semantic head against the union of the instances.
Default weights follow SAM 3's training setup; the semantic weights are our choice.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F

from opensam3.ops.boxes import box_area, cxcywh_to_xyxy
from opensam3.train.matcher import Assignment, HungarianMatcher, OneToManyMatcher


@dataclass(frozen=True)
class LossWeights:
    ce: float = 20.0
    presence: float = 20.0
    bbox: float = 5.0
    giou: float = 2.0
    mask: float = 200.0
    dice: float = 10.0
    semantic: float = 10.0
    semantic_dice: float = 10.0


LOSS_NAMES: tuple[str, ...] = tuple(f.name for f in fields(LossWeights))


def sigmoid_focal_loss(logits: torch.Tensor, targets: torch.Tensor, alpha: float = 0.25,
                       gamma: float = 2.0) -> torch.Tensor:
    """Element-wise focal loss (RetinaNet); alpha < 0 disables the class balancing."""
    prob = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = prob * targets + (1 - prob) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return loss


def dice_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(N, ...) logits and binary targets -> (N,) 1 - soft dice, +1 smoothed."""
    prob = logits.sigmoid().flatten(1)
    targets = targets.flatten(1)
    return 1 - (2 * (prob * targets).sum(1) + 1) / (prob.sum(1) + targets.sum(1) + 1)


def instance_union(masks: list[torch.Tensor], size: tuple[int, int] | None = None) -> torch.Tensor:
    """B tensors (T_b, h, w) of instance masks -> (B, h, w): the pixels of any instance (zeros
    for a pair without instances; ``size`` is needed only when every pair is empty)."""
    size = tuple(size or next(m.shape[1:] for m in masks))
    return torch.stack([m.amax(0) if m.shape[0] else m.new_zeros(size) for m in masks])


def paired_giou(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """IoU and GIoU of row-aligned xyxy boxes (N, 4), (N, 4) -> (N,), (N,)."""
    top_left = torch.maximum(a[:, :2], b[:, :2])
    bottom_right = torch.minimum(a[:, 2:], b[:, 2:])
    inter = (bottom_right - top_left).clamp(min=0).prod(-1)
    union = box_area(a) + box_area(b) - inter
    iou = inter / union.clamp(min=1e-7)
    hull = (torch.maximum(a[:, 2:], b[:, 2:]) - torch.minimum(a[:, :2], b[:, :2])).clamp(min=0).prod(-1)
    return iou, iou - (hull - union) / hull.clamp(min=1e-7)


def flat_indices(indices: list[Assignment], target_counts: list[int],
                  device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(pair index, query index, index into the concatenated targets) of every matched query."""
    offsets = [0]
    for count in target_counts[:-1]:
        offsets.append(offsets[-1] + count)
    empty = torch.zeros(0, dtype=torch.long)
    pairs = [torch.full_like(q, b) for b, (q, _) in enumerate(indices)]
    queries = [q for q, _ in indices]
    targets = [t + offsets[b] for b, (_, t) in enumerate(indices)]
    return tuple(torch.cat(parts or [empty]).to(device) for parts in (pairs, queries, targets))


def classification_loss(logits: torch.Tensor, matched_iou: torch.Tensor, pair_idx: torch.Tensor,
                        query_idx: torch.Tensor, has_instance: torch.Tensor, exhaustive: torch.Tensor,
                        alpha: float = 0.25, gamma: float = 2.0, pos_weight: float = 10.0) -> torch.Tensor:
    """IoU-aware BCE over (B, Q) query logits; ``matched_iou`` (N,) box IoU of each matched query."""
    prob = logits.sigmoid()
    is_pos = torch.zeros_like(logits, dtype=torch.bool)
    is_pos[pair_idx, query_idx] = True
    with torch.no_grad():
        soft = (prob[pair_idx, query_idx] ** alpha * matched_iou ** (1 - alpha)).clamp(min=0.01)
        pos_target = torch.zeros_like(logits)
        pos_target[pair_idx, query_idx] = soft
    positive = F.binary_cross_entropy_with_logits(logits, pos_target, reduction="none") * pos_weight
    negative = F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits), reduction="none") * prob ** gamma
    loss = torch.where(is_pos, positive, negative)
    keep = has_instance[:, None] & (is_pos | exhaustive[:, None])
    return (loss * keep).sum() / logits.numel()


class SetCriterion:
    """Matches and sums the weighted losses of every decoder layer.

    ``__call__(output, decoded, layer_logits, target_boxes, target_masks, exhaustive, dac=False)``:
    ``output``/``decoded``/``layer_logits`` as returned by ``Sam3ImageModel.ground(...,
    all_layers=True)``; target_boxes: B tensors (T_b, 4) cxcywh; target_masks: B tensors
    (T_b, h, w) in {0, 1} at the mask-head resolution; exhaustive: (B,) bool.
    With ``dac=True`` the outputs carry 2Q queries (``ground(..., dac=True)``): the first Q get
    the one-to-one losses above, the second Q (the DAC copy) the same query losses (no
    presence, no semantic) against a one-to-many assignment (``OneToManyMatcher`` on the last
    layer, Hungarian on the others, as SAM 3's ``use_o2m_matcher_on_o2m_aux=False``), weighted
    by ``o2m_weight`` (2.0, as reported for SAM 3's training config). The one-to-many matcher
    only assigns queries with IoU above ~0.5, so from scratch it stays idle until boxes are close.
    Returns (total loss, {name: float} for logging).
    """

    def __init__(self, weights: LossWeights = LossWeights(), matcher: HungarianMatcher | None = None,
                 alpha: float = 0.25, gamma: float = 2.0, pos_weight: float = 10.0,
                 o2m_matcher: OneToManyMatcher | None = None, o2m_weight: float = 2.0):
        self.weights = weights
        self.matcher = matcher or HungarianMatcher()
        self.o2m_matcher = o2m_matcher or OneToManyMatcher()
        self.o2m_weight = o2m_weight
        self.alpha, self.gamma, self.pos_weight = alpha, gamma, pos_weight
        self.last_matches: list[Assignment] = []  # the last call's one-to-one matches on the last layer

    def match(self, logits: torch.Tensor, boxes: torch.Tensor, target_boxes: list[torch.Tensor]) -> list[Assignment]:
        return self.matcher(logits.detach(), boxes.detach(), target_boxes)

    def layer_losses(self, logits: torch.Tensor, boxes: torch.Tensor, presence: torch.Tensor | None,
                     target_boxes: list[torch.Tensor], exhaustive: torch.Tensor, num_instances: float,
                     matches: list[Assignment] | None = None) -> tuple[dict[str, torch.Tensor], list[Assignment]]:
        device = logits.device
        if matches is None:
            matches = self.match(logits, boxes, target_boxes)
        pair_idx, query_idx, target_idx = flat_indices(matches, [t.shape[0] for t in target_boxes], device)
        all_targets = torch.cat(target_boxes).to(device=device, dtype=boxes.dtype) if target_boxes else boxes.new_zeros(0, 4)
        src = boxes[pair_idx, query_idx]
        tgt = all_targets[target_idx]
        iou, giou = paired_giou(cxcywh_to_xyxy(src), cxcywh_to_xyxy(tgt))
        has_instance = torch.tensor([t.shape[0] > 0 for t in target_boxes], device=device)
        losses = {
            "ce": classification_loss(logits, iou.detach(), pair_idx, query_idx, has_instance, exhaustive.to(device),
                                      self.alpha, self.gamma, self.pos_weight),
            "bbox": F.l1_loss(src, tgt, reduction="sum") / num_instances,
            "giou": (1 - giou).sum() / num_instances,
        }
        if presence is not None:
            losses["presence"] = 0.5 * F.binary_cross_entropy_with_logits(presence, has_instance.to(presence.dtype))
        return losses, matches

    def mask_losses(self, masks: torch.Tensor, semantic: torch.Tensor | None, matches: list[Assignment],
                    target_masks: list[torch.Tensor], num_instances: float) -> dict[str, torch.Tensor]:
        device = masks.device
        pair_idx, query_idx, target_idx = flat_indices(matches, [t.shape[0] for t in target_masks], device)
        size = masks.shape[-2:]
        resized = [resize_masks(t.to(device=device, dtype=masks.dtype), size) for t in target_masks]
        all_targets = torch.cat(resized) if resized else masks.new_zeros(0, *size)
        src, tgt = masks[pair_idx, query_idx], all_targets[target_idx]
        losses = {
            "mask": sigmoid_focal_loss(src, tgt).flatten(1).mean(1).sum() / num_instances,
            "dice": dice_loss(src, tgt).sum() / num_instances,
        }
        if semantic is not None:
            union = instance_union(resized, size)
            sem = semantic[:, 0]
            losses["semantic"] = F.binary_cross_entropy_with_logits(sem, union)
            losses["semantic_dice"] = dice_loss(sem, union).mean()
        return losses

    def __call__(self, output, decoded, layer_logits: torch.Tensor, target_boxes: list[torch.Tensor],
                 target_masks: list[torch.Tensor], exhaustive: torch.Tensor,
                 dac: bool = False) -> tuple[torch.Tensor, dict[str, float]]:
        num_instances = float(max(sum(t.shape[0] for t in target_boxes), 1))
        weights = asdict(self.weights)
        total = layer_logits.new_zeros(())
        log: dict[str, float] = {}
        num_layers = layer_logits.shape[0]
        num_queries = layer_logits.shape[2] // 2 if dac else layer_logits.shape[2]
        o2o, o2m = slice(0, num_queries), slice(num_queries, None)
        for layer in range(num_layers):
            last = layer == num_layers - 1
            logits, boxes = layer_logits[layer, :, o2o, 0], decoded.pred_boxes[layer][:, o2o]
            losses, matches = self.layer_losses(logits, boxes, decoded.presence_logits[layer, :, 0], target_boxes,
                                                exhaustive, num_instances)
            if last:
                self.last_matches = matches
                losses.update(self.mask_losses(output.masks[:, o2o], output.semantic_logits, matches, target_masks,
                                               num_instances))
            for name, value in losses.items():
                total = total + weights[name] * value
                if last:
                    log[name] = float(value.detach())
            if not dac:
                continue
            logits, boxes = layer_logits[layer, :, o2m, 0], decoded.pred_boxes[layer][:, o2m]
            matcher = self.o2m_matcher if last else self.matcher
            many = matcher(logits.detach(), boxes.detach(), target_boxes)
            losses, _ = self.layer_losses(logits, boxes, None, target_boxes, exhaustive, num_instances, matches=many)
            if last:
                losses.update(self.mask_losses(output.masks[:, o2m], None, many, target_masks, num_instances))
            for name, value in losses.items():
                total = total + self.o2m_weight * weights[name] * value
                if last:
                    log[f"{name}_o2m"] = float(value.detach())
        log["loss"] = float(total.detach())
        return total, log


def resize_masks(masks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(T, H, W) binary masks -> (T, h, w) binary masks (area-average, then >= 0.5)."""
    if masks.shape[0] == 0:
        return masks.new_zeros(0, *size)
    if masks.shape[-2:] == tuple(size):
        return masks
    resized = F.interpolate(masks[:, None].float(), size=tuple(size), mode="area")[:, 0]
    return (resized >= 0.5).to(masks.dtype)
