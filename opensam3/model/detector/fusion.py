"""Fusion encoder: image tokens attend to themselves and to the prompt (text + geometry) tokens.

Parameter names follow the official ``transformer.encoder`` so a checkpoint loads after a
prefix strip. Only the configuration the released model uses is implemented: one feature
level, pre-norm layers, position encoding added to the self-attention queries and keys only,
no pooled-text addition to the image features and no final norm.
"""

from __future__ import annotations

import torch
from torch import nn

from opensam3.config import DetectorConfig
from opensam3.model.detector.encoder_layer import PreNormEncoderLayer

MEMO_FIRST_SELF_ATTENTION = "fusion.layers.0.self_attention"


class FusionEncoder(nn.Module):
    """Stack of pre-norm layers (position encoding on self-attention q/k only; the prompt side
    carries none, the official one being all zeros); state dict keys ``layers.{i}.*``.

    forward(image_tokens, image_pos, prompt, prompt_padding_mask, feat_size) -> memory
      image_tokens: (B, HW, C) image features, row-major over the (H, W) grid.
      image_pos:    (B, HW, C) their position encoding (added to self-attention q/k only).
      prompt:       (B, P, C) prompt tokens (text features, then geometry tokens).
      prompt_padding_mask: (B, P) bool, True marks padding (may sit anywhere, e.g. between
                    padded text and the geometry tokens); None means no padding.
      feat_size:    (H, W), only checked against HW (single level).
      memory:       (B, HW, C) encoded image tokens (no final norm, as in the official).

    The decoder's memory position encoding is ``image_pos`` unchanged, and the prompt the
    decoder and the scorer read is the un-encoded ``prompt`` (this encoder does not update it).
    """

    def __init__(self, cfg: DetectorConfig):
        super().__init__()
        self.layers = nn.ModuleList(
            PreNormEncoderLayer(cfg.d_model, cfg.num_heads, cfg.fusion_ffn, pos_in_self_attn=True)
            for _ in range(cfg.fusion_layers)
        )

    def forward(
        self,
        image_tokens: torch.Tensor,
        image_pos: torch.Tensor,
        prompt: torch.Tensor,
        prompt_padding_mask: torch.Tensor | None,
        feat_size: tuple[int, int],
        image_memo: dict[str, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """``image_memo``: when every row is the same image, a dict kept with that image. The
        first layer's self-attention sees no prompt, so it is computed once per image and kept
        there (outside autograd only); later prompts start from the cross-attention."""
        height, width = feat_size
        if image_tokens.shape[1] != height * width:
            raise ValueError(f"{image_tokens.shape[1]} image tokens do not fill a {height}x{width} grid")
        image_pos = image_pos.to(image_tokens.dtype)
        tokens = image_tokens
        layers = list(self.layers)
        if image_memo is not None and layers and not torch.is_grad_enabled():
            first = image_memo.get(MEMO_FIRST_SELF_ATTENTION)
            if first is None or first.dtype != tokens.dtype:
                first = layers[0].self_attention_block(tokens[:1], query_pos=image_pos[:1])
                image_memo[MEMO_FIRST_SELF_ATTENTION] = first
            tokens = layers[0].cross_attention_blocks(first.expand_as(tokens), prompt, prompt_padding_mask,
                                                      query_pos=image_pos)
            layers = layers[1:]
        for layer in layers:
            tokens = layer(tokens, prompt, memory_padding_mask=prompt_padding_mask, query_pos=image_pos)
        return tokens
