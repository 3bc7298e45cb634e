"""Denoising queries: training-only decoder queries that start at jittered boxes of known objects.

A DETR decoder trained from scratch must find objects (its learnt reference boxes must move
onto them) before the scoring can learn which objects a phrase names: with random boxes the
matched queries sit on background, and the binding losses teach nothing. DN-DETR's remedy,
adapted to phrases: for every pair, each object the scene records (whether the phrase names it
or not) gets one extra query that starts at its box, jittered. Its targets are known without
matching: refine to the object's box, score 1 when the object is an instance of the phrase and
0 otherwise (a blue star asked "red star" is the hard negative the detector must learn), the
instance's mask, and the object's attributes. The extra queries skip self-attention, so the
ordinary queries never see them, and inference never makes them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from opensam3.ops.boxes import cxcywh_to_xyxy
from opensam3.train.auxiliary import AttributeMaps, QueryAttributeHeads
from opensam3.train.data import Batch
from opensam3.train.losses import LossWeights, dice_loss, paired_giou, resize_masks, sigmoid_focal_loss

BOX_NOISE = 0.4  # DN-DETR's box noise scale: centres move up to 0.2 box sides, sides scale 0.6-1.4


@dataclass
class DenoiseQueries:
    """D query slots per pair (padded); everything (B, D, ...)."""

    start_boxes: torch.Tensor   # (B, D, 4) cxcywh: where each query starts (jittered)
    target_boxes: torch.Tensor  # (B, D, 4) cxcywh: its object's box
    positive: torch.Tensor      # (B, D) bool: the object is an instance of the pair's phrase
    instance: torch.Tensor      # (B, D) long: index into the pair's target masks (-1 = none)
    labels: torch.Tensor        # (B, D, keys) the object's attribute classes
    valid: torch.Tensor         # (B, D) bool: a real slot (not padding)

    @property
    def count(self) -> int:
        return self.start_boxes.shape[1]


def jitter_boxes(boxes: torch.Tensor, generator: torch.Generator, noise: float = BOX_NOISE) -> torch.Tensor:
    """(N, 4) cxcywh boxes moved and rescaled at random, kept inside the image."""
    shift = (torch.rand(boxes.shape[0], 2, generator=generator) * 2 - 1) * noise / 2 * boxes[:, 2:]
    scale = 1 + (torch.rand(boxes.shape[0], 2, generator=generator) * 2 - 1) * noise
    centre = (boxes[:, :2] + shift).clamp(0.0, 1.0)
    size = (boxes[:, 2:] * scale).clamp(1e-3, 1.0)
    return torch.cat((centre, size), dim=1)


def make_denoise_queries(batch: Batch, maps: AttributeMaps, generator: torch.Generator) -> DenoiseQueries | None:
    """One query per recorded object of each pair's image; None when no pair's image has any."""
    rows = []
    target_ids = batch.target_ids or [[]] * len(batch)
    for pair, row in enumerate(batch.image_index):
        objects = maps.boxes_by_id(batch.file_names[row])
        labels = maps.labels_by_id(batch.file_names[row])
        ids = [oid for oid in objects if oid in labels]
        instances = {oid: index for index, oid in enumerate(target_ids[pair])}
        rows.append([(objects[oid], labels[oid], instances.get(oid, -1)) for oid in ids])
    slots = max((len(r) for r in rows), default=0)
    if slots == 0:
        return None
    keys = len(maps.vocabulary)
    count = len(rows)
    target = torch.zeros(count, slots, 4)
    target[..., :2], target[..., 2:] = 0.5, 1.0  # padding slots: a harmless whole-image box
    labels = torch.zeros(count, slots, keys, dtype=torch.long)
    instance = torch.full((count, slots), -1, dtype=torch.long)
    valid = torch.zeros(count, slots, dtype=torch.bool)
    for pair, objects in enumerate(rows):
        for slot, (box, classes, index) in enumerate(objects):
            target[pair, slot] = torch.tensor(box)
            labels[pair, slot] = torch.tensor(classes)
            instance[pair, slot] = index
            valid[pair, slot] = True
    start = jitter_boxes(target.reshape(-1, 4), generator).reshape(count, slots, 4)
    return DenoiseQueries(start, target, instance >= 0, instance, labels, valid)


def denoise_loss(queries: DenoiseQueries, layer_logits: torch.Tensor, layer_boxes: torch.Tensor,
                 masks: torch.Tensor, hidden: torch.Tensor, target_masks: list[torch.Tensor],
                 weights: LossWeights, attribute_heads: QueryAttributeHeads | None = None,
                 ) -> tuple[torch.Tensor, dict[str, float]]:
    """Losses of the denoising rows: layer_logits (L, B, D), layer_boxes (L, B, D, 4) on every
    layer; masks (B, D, h, w) and hidden (B, D, C) of the last layer."""
    device = layer_logits.device
    valid = queries.valid.to(device)
    positive = queries.positive.to(device)
    target = queries.target_boxes.to(device, layer_boxes.dtype)[valid]
    slots = max(int(valid.sum()), 1)
    total = layer_logits.new_zeros(())
    log: dict[str, float] = {}
    # positives are rarer than the objects a phrase does not name: weigh them up to match
    named = positive[valid]
    balance = max(float((~named).sum()) / max(float(named.sum()), 1.0), 1.0)
    weight = torch.where(named, balance, 1.0)
    for layer in range(layer_logits.shape[0]):
        logits = layer_logits[layer][valid]
        ce = (F.binary_cross_entropy_with_logits(logits, named.to(logits.dtype), reduction="none")
              * weight).sum() / weight.sum()
        boxes = layer_boxes[layer][valid]
        _, giou = paired_giou(cxcywh_to_xyxy(boxes), cxcywh_to_xyxy(target))
        parts = {"dn_ce": ce, "dn_bbox": F.l1_loss(boxes, target, reduction="sum") / slots,
                 "dn_giou": (1 - giou).sum() / slots}
        total = total + weights.ce * parts["dn_ce"] + weights.bbox * parts["dn_bbox"] + weights.giou * parts["dn_giou"]
    log.update({name: float(value.detach()) for name, value in parts.items()})
    pair_idx, slot_idx = torch.nonzero(positive & valid, as_tuple=True)
    if len(pair_idx):
        size = masks.shape[-2:]
        wanted = torch.stack([target_masks[p][int(queries.instance[p, s])]
                              for p, s in zip(pair_idx.tolist(), slot_idx.tolist())])
        wanted = resize_masks(wanted.to(device, masks.dtype), size)
        predicted = masks[pair_idx, slot_idx]
        mask = sigmoid_focal_loss(predicted, wanted).flatten(1).mean(1).mean()
        dice = dice_loss(predicted, wanted).mean()
        total = total + weights.mask * mask + weights.dice * dice
        log.update(dn_mask=float(mask.detach()), dn_dice=float(dice.detach()))
    if attribute_heads is not None:
        attributes = attribute_heads.loss(hidden[valid], queries.labels.to(device)[valid])
        total = total + attributes
        log["dn_attributes"] = float(attributes.detach())
    return total, log
