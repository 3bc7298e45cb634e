"""Segmentation head: per-query instance mask logits and a semantic (prompt-level) mask.

The fusion-encoder output first cross-attends to the prompt tokens (pre-norm, residual). It then
replaces the coarsest backbone FPN level and a pixel decoder walks up the remaining levels
(nearest 2x upsampling + skip, 3x3 conv, GroupNorm, ReLU) to the finest one (4x the grid).
Instance masks are dot products of the decoder queries (through a 3-layer MLP) with a 1x1
projection of the pixel embedding; the semantic mask is another 1x1 projection of it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from opensam3.config import DetectorConfig
from opensam3.model.common import MLP, Attention


class PixelDecoder(nn.Module):
    """FPN-style top-down decoder. Holds ``num_stages`` conv/norm pairs; a call with L levels
    uses the first L - 1 of them (the official detector passes 3 levels, so stage 2 is unused)."""

    def __init__(self, dim: int, num_stages: int, groups: int = 8):
        super().__init__()
        self.conv_layers = nn.ModuleList(nn.Conv2d(dim, dim, 3, padding=1) for _ in range(num_stages))
        self.norms = nn.ModuleList(nn.GroupNorm(groups, dim) for _ in range(num_stages))

    def forward(self, levels: list[torch.Tensor]) -> torch.Tensor:
        """levels: (B_i, C, h_i, w_i) maps, finest first; the last is the starting (coarsest) map.
        A level with batch 1 broadcasts over the batch of the coarse map. Returns the finest-size
        (B, C, h_0, w_0) embedding."""
        x = levels[-1]
        for stage, skip in enumerate(reversed(levels[:-1])):
            # the skip is added into the fresh upsampled map: one full-size buffer fewer per
            # stage (nearest upsampling does not need its output for the backward pass)
            x = F.interpolate(x, size=skip.shape[-2:], mode="nearest").add_(skip)
            x = F.relu(self.norms[stage](self.conv_layers[stage](x)), inplace=True)
        return x


class MaskPredictor(nn.Module):
    """Holds the query MLP (``mask_embed``) that turns decoder states into mask kernels."""

    def __init__(self, dim: int):
        super().__init__()
        self.mask_embed = MLP(dim, dim, dim, 3)

    def forward(self, queries: torch.Tensor) -> torch.Tensor:
        return self.mask_embed(queries)


class SegmentationHead(nn.Module):
    """State dict keys equal the official ``segmentation_head.*`` keys."""

    def __init__(self, cfg: DetectorConfig):
        super().__init__()
        dim = cfg.d_model
        self.pixel_decoder = PixelDecoder(dim, cfg.mask_upsampling_stages)
        self.mask_predictor = MaskPredictor(dim)
        self.cross_attend_prompt = Attention(dim, cfg.num_heads)
        self.cross_attn_norm = nn.LayerNorm(dim)
        self.semantic_seg_head = nn.Conv2d(dim, 1, kernel_size=1)
        self.instance_seg_head = nn.Conv2d(dim, dim, kernel_size=1)

    def pixel_embedding(
        self,
        fpn_levels: list[torch.Tensor],
        encoded_image: torch.Tensor,
        prompt: torch.Tensor,
        prompt_padding_mask: torch.Tensor | None,
    ) -> torch.Tensor:
        """(B, C, 4h, 4w) pixel decoder output; arguments as in :meth:`forward`."""
        batch, _, channels = encoded_image.shape
        height, width = fpn_levels[-1].shape[-2:]
        attended = self.cross_attend_prompt(
            self.cross_attn_norm(encoded_image), prompt, prompt, key_padding_mask=prompt_padding_mask
        )
        # a channels-last view of the token grid (no copy), like the backbone's levels, so the
        # upsampling and the skip sums below all run in one memory format
        coarse = (encoded_image + attended).view(batch, height, width, channels).permute(0, 3, 1, 2)
        return self.pixel_decoder([*fpn_levels[:-1], coarse])

    def forward(
        self,
        fpn_levels: list[torch.Tensor],
        queries: torch.Tensor,
        encoded_image: torch.Tensor,
        prompt: torch.Tensor,
        prompt_padding_mask: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Predict mask logits.

        fpn_levels: backbone FPN maps (B or 1, C, h_i, w_i), finest first, after dropping the
            coarsest level (official scalp): at full size 288, 144 and 72 for a 72x72 grid. Only
            the shape of the last one is read (the encoder output takes its place); maps with
            batch 1 are shared by all B prompts without copying.
        queries: (B, Q, C) decoder states of the last decoder layer (after its output norm, as
            the official head takes ``hs[-1]``).
        encoded_image: (B, h*w, C) fusion-encoder output over the image grid (row-major).
        prompt: (B, P, C) prompt tokens (text + geometry) as fed to the encoder/decoder.
        prompt_padding_mask: (B, P) bool, True = pad.
        Returns mask logits (B, Q, 4h, 4w) and semantic logits (B, 1, 4h, 4w) at the finest level.
        """
        pixels = self.pixel_embedding(fpn_levels, encoded_image, prompt, prompt_padding_mask)
        batch, channels, out_h, out_w = pixels.shape
        semantic = self.semantic_seg_head(pixels)
        # Fold the 1x1 instance projection into the query kernels: (k W) p + k b equals
        # k (W p + b) and skips a C x C projection of every pixel.
        kernels = self.mask_predictor(queries)  # (B, Q, C)
        inst = self.instance_seg_head
        fused = kernels @ inst.weight.view(channels, channels)  # (B, Q, C)
        offset = kernels @ inst.bias  # (B, Q)
        if pixels.is_contiguous(memory_format=torch.channels_last) and not pixels.is_contiguous():
            # a (B, C, HW) view of the channels-last map: the product reads it transposed
            # instead of copying the largest activation of the prompt into NCHW first
            flat = pixels.permute(0, 2, 3, 1).reshape(batch, out_h * out_w, channels).transpose(1, 2)
        else:
            flat = pixels.flatten(2)
        masks = torch.baddbmm(offset[..., None], fused, flat)
        return masks.view(batch, -1, out_h, out_w), semantic
