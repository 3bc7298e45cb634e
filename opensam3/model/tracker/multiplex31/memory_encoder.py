"""SAM 3.1 multiplex memory encoder: all slots of a bucket fused into one memory map.

Input of bucket b is 2M channels: channel s = slot s's mask as 2 sigmoid(logit) - 1 (0 for a slot
without an object), channel M + s = slot s's conditioning flag (1 for an object prompted /
mask-initialised on this frame, else 0). The channels are resized to 16x the feature grid, brought
down to the grid by strided convs (2M -> 16 -> 64 -> 256 -> 1024 -> 1x1 -> C at full size), added
to a 1x1 projection of the frame's top-level propagation features (batch 1, broadcast), mixed by
two ConvNeXt blocks; the width stays C (no out_proj). Positions: the C-channel sine encoding.
The encoder is SAM 3's ``MemoryEncoder`` at these sizes (built in step.py); this module builds
its input and adds the absent-slot vectors.

Then (tracker level, :func:`add_absent_slots`): every slot whose object is judged absent adds its
own learned vector ``no_obj_embed_spatial[s]`` everywhere; slots without an object have score 0
and so count as absent too. That parameter is a tracker-level attribute, not part of this module.

State dict (official ``maskmem_backbone.*``): ``mask_downsampler.encoder.{0,1,3,4,6,7,9,10,12}``,
``pix_feat_proj``, ``fuser.layers.{0,1}.{dwconv, norm, pwconv1, pwconv2, gamma}``.
"""

from __future__ import annotations

import torch

from .config import MultiplexTrackerConfig
from .slots import SlotAssignment


def memory_encoder_input(mask_logits: torch.Tensor, conditioning: torch.Tensor, slots: SlotAssignment,
                         config: MultiplexTrackerConfig) -> torch.Tensor:
    """Per-object mask logits (N, 1, H, W) and conditioning flags (N,) bool -> (nb, 2M, H, W).

    The sigmoid is taken per object before muxing, so empty slots hold exactly 0 in both halves.
    """
    # written in place into one zeroed buffer: at full size each (16, 1, 1008, 1008) temporary is
    # 64 MB, and a fresh one costs more in page faults than the arithmetic on it
    masks = torch.sigmoid(mask_logits.float()).mul_(config.sigmoid_scale_for_mem_enc)
    masks = masks.add_(config.sigmoid_bias_for_mem_enc)
    height, width = masks.shape[-2:]
    slot_count = slots.multiplex_count
    out = masks.new_zeros((slots.num_buckets, 2 * slot_count, height, width))
    flat_slots = slots.flat_slots(masks.device)  # bucket * M + slot, per object
    mask_rows = flat_slots + flat_slots // slot_count * slot_count  # bucket * 2M + slot
    rows = out.view(-1, height, width)
    rows.index_copy_(0, mask_rows, masks[:, 0])
    for row, conditioned in zip((mask_rows + slot_count).tolist(), conditioning.tolist()):
        rows[row].fill_(config.condition_fg if conditioned else config.condition_bg)
    return out


def add_absent_slots(features: torch.Tensor, object_score_logits: torch.Tensor, no_obj_embed: torch.Tensor,
                     slots: SlotAssignment, threshold: float = 0.0) -> torch.Tensor:
    """Bucket memory (nb, C, e, e) + sum over the slots judged absent of their (M, C) vectors.

    object_score_logits: (N, 1) per object. Muxing puts 0 in slots without an object, which is
    not above the threshold: those slots add their vector as well (official behaviour).
    """
    present = (slots.mux(object_score_logits) > threshold).to(no_obj_embed.dtype)  # (nb, M, 1)
    offset = ((1 - present) * no_obj_embed).sum(dim=1)  # (nb, C)
    return features + offset[..., None, None].to(features.dtype)
