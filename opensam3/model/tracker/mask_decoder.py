"""SAM 2 mask decoder: output tokens + prompt tokens attend to the image; hypernetwork masks."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..common import MLP, LayerNorm2d
from .config import TrackerHeadsConfig
from .two_way_transformer import TwoWayTransformer


@dataclass
class DecodedMasks:
    """masks: (B, K, 4e, 4e) low-res logits; iou_scores: (B, K) predicted IoU (sigmoid);
    mask_tokens: (B, 1 + M, C) all mask-token outputs; object_score_logits: (B, 1)."""

    masks: torch.Tensor
    iou_scores: torch.Tensor
    mask_tokens: torch.Tensor
    object_score_logits: torch.Tensor


class MaskDecoder(nn.Module):
    """State dict (official ``sam_mask_decoder.*``): ``transformer``, ``iou_token``,
    ``mask_tokens`` (single-mask token then M multimask tokens), ``obj_score_token``,
    ``output_upscaling.{0,1,3}``, ``conv_s0``, ``conv_s1``, ``output_hypernetworks_mlps``,
    ``iou_prediction_head``, ``pred_obj_score_head``.
    """

    def __init__(self, config: TrackerHeadsConfig):
        super().__init__()
        dim = config.dim
        self.config = config
        self.transformer = TwoWayTransformer(dim, config.transformer_depth, config.transformer_heads,
                                             config.transformer_mlp_dim, config.attention_downsample)
        self.num_mask_tokens = config.num_multimask_outputs + 1
        self.iou_token = nn.Embedding(1, dim)
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, dim)
        self.obj_score_token = nn.Embedding(1, dim)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(dim, dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(dim // 4),
            nn.GELU(),
            nn.ConvTranspose2d(dim // 4, dim // 8, kernel_size=2, stride=2),
            nn.GELU(),
        )
        # projections of the two high-resolution backbone levels (applied once per image)
        self.conv_s0 = nn.Conv2d(dim, dim // 8, kernel_size=1)
        self.conv_s1 = nn.Conv2d(dim, dim // 4, kernel_size=1)
        self.output_hypernetworks_mlps = nn.ModuleList(MLP(dim, dim, dim // 8, 3) for _ in range(self.num_mask_tokens))
        self.iou_prediction_head = MLP(dim, config.iou_head_hidden, self.num_mask_tokens, config.iou_head_depth)
        self.pred_obj_score_head = MLP(dim, dim, 1, 3)

    def project_high_res(self, level0: torch.Tensor, level1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Backbone levels (B, C, 4e, 4e), (B, C, 2e, 2e) -> (B, C/8, 4e, 4e), (B, C/4, 2e, 2e)."""
        return self.conv_s0(level0), self.conv_s1(level1)

    def predict_all(self, image: torch.Tensor, image_pe: torch.Tensor, sparse: torch.Tensor, dense: torch.Tensor,
                    high_res: tuple[torch.Tensor, torch.Tensor]) -> DecodedMasks:
        """Every mask token's output (single-mask token first).

        image: (1 or B, C, e, e) image embedding (no-memory embedding already added);
        image_pe: (1, C, e, e); sparse: (B, N, C) prompt tokens; dense: (B, C, e, e);
        high_res: projected levels (1 or B, C/8, 4e, 4e), (1 or B, C/4, 2e, 2e).
        """
        batch = sparse.shape[0]
        output_tokens = torch.cat((self.obj_score_token.weight, self.iou_token.weight, self.mask_tokens.weight), dim=0)
        tokens = torch.cat((output_tokens[None].expand(batch, -1, -1), sparse), dim=1)
        if image.shape[0] != batch:
            image = image.expand(batch, -1, -1, -1)
        src = image + dense
        pos = image_pe.expand(batch, -1, -1, -1)
        _, channels, height, width = src.shape
        hidden, src = self.transformer(src, pos, tokens)
        obj_token_out, iou_token_out = hidden[:, 0], hidden[:, 1]
        mask_tokens_out = hidden[:, 2:2 + self.num_mask_tokens]

        feat_s0, feat_s1 = high_res
        if feat_s0.shape[0] != batch:
            feat_s0, feat_s1 = feat_s0.expand(batch, -1, -1, -1), feat_s1.expand(batch, -1, -1, -1)
        src = src.transpose(1, 2).reshape(batch, channels, height, width)
        up1, norm1, act1, up2, act2 = self.output_upscaling
        upscaled = act1(norm1(up1(src) + feat_s1))
        upscaled = act2(up2(upscaled) + feat_s0)

        hyper = torch.stack([mlp(mask_tokens_out[:, i]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], dim=1)
        _, up_channels, up_h, up_w = upscaled.shape
        masks = (hyper @ upscaled.reshape(batch, up_channels, up_h * up_w)).reshape(batch, -1, up_h, up_w)
        iou = torch.sigmoid(self.iou_prediction_head(iou_token_out))
        object_score = self.pred_obj_score_head(obj_token_out)
        return DecodedMasks(masks, iou, mask_tokens_out, object_score)

    def stability(self, logits: torch.Tensor) -> torch.Tensor:
        """(..., h, w) logits -> (...,) IoU of the masks thresholded at +delta and -delta."""
        flat = logits.flatten(-2)
        delta = self.config.stability_delta
        inner = (flat > delta).sum(-1).float()
        outer = (flat > -delta).sum(-1).float()
        return torch.where(outer > 0, inner / outer, torch.ones_like(inner))

    def forward(self, image: torch.Tensor, image_pe: torch.Tensor, sparse: torch.Tensor, dense: torch.Tensor,
                high_res: tuple[torch.Tensor, torch.Tensor], multimask_output: bool) -> DecodedMasks:
        """As :meth:`predict_all`, then the requested outputs: the M multimask outputs, or one
        mask (the single-mask token, or the best-scored multimask output when unstable)."""
        out = self.predict_all(image, image_pe, sparse, dense, high_res)
        if multimask_output:
            return DecodedMasks(out.masks[:, 1:], out.iou_scores[:, 1:], out.mask_tokens, out.object_score_logits)
        single, single_iou = out.masks[:, :1], out.iou_scores[:, :1]
        if self.training:
            return DecodedMasks(single, single_iou, out.mask_tokens, out.object_score_logits)
        rows = torch.arange(out.masks.shape[0], device=out.masks.device)
        best = out.iou_scores[:, 1:].argmax(dim=-1)
        best_mask = out.masks[:, 1:][rows, best][:, None]
        best_iou = out.iou_scores[:, 1:][rows, best][:, None]
        stable = self.stability(single) >= self.config.stability_thresh  # (B, 1)
        masks = torch.where(stable[..., None, None], single, best_mask)
        iou = torch.where(stable, single_iou, best_iou)
        return DecodedMasks(masks, iou, out.mask_tokens, out.object_score_logits)
