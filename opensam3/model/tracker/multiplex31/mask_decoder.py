"""SAM 3.1 multiplex mask decoder: one image stream per bucket, per-slot output tokens.

Per bucket the token sequence is [score tokens (M) ; IoU tokens (M) ; mask tokens (M x K)],
slot-major for the mask tokens (row 3 s + k of ``mask_tokens`` is slot s, candidate k). Each
slot's K mask tokens get the slot's occupancy embedding added (valid or invalid, supplied by the
tracker, whose parameters ``output_valid_embed`` / ``output_invalid_embed`` live at tracker level).
All M (2 + K) tokens and the bucket's image stream go through SAM's two-way transformer together,
so slots interact; buckets are batch elements and do not. The K hypernetwork MLPs are shared by
all slots (indexed by k), as are the IoU head (-> K) and the object-score head (-> 1).

There is no prompt encoder on this path; the image positional encoding comes from the tracker's
own ``image_pe_layer`` (a tracker-level buffer, not part of this module).

State dict (official ``sam_mask_decoder.*``, 125 tensors at full size): ``transformer.*``,
``obj_score_token.weight`` (M, C), ``iou_token.weight`` (M, C), ``mask_tokens.weight`` (M K, C),
``output_upscaling.{0,1,3}``, ``conv_s0``, ``conv_s1``, ``output_hypernetworks_mlps.{0..K-1}``,
``iou_prediction_head`` (-> K), ``pred_obj_score_head`` (-> 1). All but the three token tables are
laid out exactly as SAM 3's decoder, whose constructor builds them here.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..mask_decoder import MaskDecoder
from .config import MultiplexTrackerConfig


@dataclass
class MultiplexDecoded:
    """Per-slot outputs of one decoder pass over nb buckets of M slots.

    masks: (nb, M, K, 4e, 4e) logits; ious: (nb, M, K) predicted IoU (raw, no sigmoid: the
    release model sets iou_prediction_use_sigmoid=False); object_score_logits: (nb, M, 1);
    tokens: (nb, M, K, C) mask-token outputs (the pointer is made from the chosen one).
    """

    masks: torch.Tensor
    ious: torch.Tensor
    object_score_logits: torch.Tensor
    tokens: torch.Tensor


def slot_embeddings(valid: torch.Tensor, valid_embed: torch.Tensor, invalid_embed: torch.Tensor) -> torch.Tensor:
    """(nb, M) bool occupancy + two (M, C) tables -> (nb, M, C) per-slot mask-token offsets."""
    occupied = valid.to(valid_embed.dtype)[..., None]
    return occupied * valid_embed + (1 - occupied) * invalid_embed


class MultiplexMaskDecoder(MaskDecoder):
    """SAM's decoder with M slots of K mask candidates each (official ``MultiplexMaskDecoder``
    with multimask_outputs_only=True, pred_obj_scores(_mlp)=True, use_high_res_features=True).

    The parent's single-object ``predict_all`` is not available: use :meth:`forward`.
    """

    def __init__(self, config: MultiplexTrackerConfig):
        super().__init__(config.heads_config())
        slots, dim = config.multiplex_count, config.dim
        self.multiplex_count = slots
        self.masks_per_slot = config.masks_per_slot
        # per-slot token tables replace the parent's single-object ones (same names)
        self.iou_token = nn.Embedding(slots, dim)
        self.mask_tokens = nn.Embedding(slots * config.masks_per_slot, dim)
        self.obj_score_token = nn.Embedding(slots, dim)

    def predict_all(self, *args, **kwargs):
        raise NotImplementedError("the multiplex decoder has no single-object path; call forward()")

    def forward(self, image: torch.Tensor, image_pe: torch.Tensor, high_res: tuple[torch.Tensor, torch.Tensor],
                slot_embed: torch.Tensor) -> MultiplexDecoded:
        """image: (nb, C, e, e) memory-conditioned bucket features; image_pe: (1, C, e, e);
        high_res: projected levels (1 or nb, C/8, 4e, 4e), (1 or nb, C/4, 2e, 2e);
        slot_embed: (nb, M, C) occupancy offsets (see :func:`slot_embeddings`)."""
        batch, channels, height, width = image.shape
        slots, per_slot = self.multiplex_count, self.masks_per_slot
        head = torch.cat((self.obj_score_token.weight, self.iou_token.weight), dim=0)
        mask_tokens = self.mask_tokens.weight.reshape(1, slots, per_slot, channels) + slot_embed[:, :, None]
        tokens = torch.cat((head[None].expand(batch, -1, -1), mask_tokens.flatten(1, 2)), dim=1)
        hidden, src = self.transformer(image, image_pe.expand(batch, -1, -1, -1), tokens)
        score_out, iou_out = hidden[:, :slots], hidden[:, slots:2 * slots]
        mask_out = hidden[:, 2 * slots:].reshape(batch, slots, per_slot, channels)

        # upscaling as in SAM's decoder; the high-res levels are batch 1 and broadcast
        feat_s0, feat_s1 = high_res
        src = src.transpose(1, 2).reshape(batch, channels, height, width)
        up1, norm1, act1, up2, act2 = self.output_upscaling
        upscaled = act2(up2(act1(norm1(up1(src) + feat_s1))) + feat_s0)

        hyper = torch.stack([mlp(mask_out[:, :, k]) for k, mlp in enumerate(self.output_hypernetworks_mlps)], dim=2)
        _, up_channels, up_h, up_w = upscaled.shape
        masks = hyper.flatten(1, 2) @ upscaled.reshape(batch, up_channels, up_h * up_w)
        masks = masks.reshape(batch, slots, per_slot, up_h, up_w)
        ious = self.iou_prediction_head(iou_out)
        scores = self.pred_obj_score_head(score_out)
        return MultiplexDecoded(masks, ious, scores, mask_out)
