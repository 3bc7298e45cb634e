"""SAM's two-way transformer: prompt tokens and image tokens attend to each other."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ProjectedAttention(nn.Module):
    """Multi-head attention with separate q/k/v projections to ``dim // downsample`` channels.

    State dict: ``q_proj``, ``k_proj``, ``v_proj``, ``out_proj`` (official SAM layout).
    forward(q (B, Lq, dim), k (B, Lk, dim), v (B, Lk, dim)) -> (B, Lq, dim).
    """

    def __init__(self, dim: int, num_heads: int, downsample: int = 1):
        super().__init__()
        inner = dim // downsample
        if inner % num_heads:
            raise ValueError(f"{num_heads} heads do not divide the attention width {inner}")
        self.num_heads = num_heads
        self.q_proj = nn.Linear(dim, inner)
        self.k_proj = nn.Linear(dim, inner)
        self.v_proj = nn.Linear(dim, inner)
        self.out_proj = nn.Linear(inner, dim)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, width = x.shape
        return x.reshape(batch, length, self.num_heads, width // self.num_heads).transpose(1, 2)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        q, k, v = self._heads(self.q_proj(q)), self._heads(self.k_proj(k)), self._heads(self.v_proj(v))
        out = F.scaled_dot_product_attention(q, k, v)
        batch, heads, length, width = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(batch, length, heads * width))


class FeedForward(nn.Module):
    """State dict ``lin1``, ``lin2``; ReLU between them."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.lin1 = nn.Linear(dim, hidden)
        self.lin2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin2(F.relu(self.lin1(x)))


class TwoWayBlock(nn.Module):
    """Token self-attention, tokens -> image, token MLP, image -> tokens; post-norm each."""

    def __init__(self, dim: int, num_heads: int, mlp_dim: int, downsample: int, first: bool):
        super().__init__()
        self.self_attn = ProjectedAttention(dim, num_heads)
        self.norm1 = nn.LayerNorm(dim)
        self.cross_attn_token_to_image = ProjectedAttention(dim, num_heads, downsample)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = FeedForward(dim, mlp_dim)
        self.norm3 = nn.LayerNorm(dim)
        self.norm4 = nn.LayerNorm(dim)
        self.cross_attn_image_to_token = ProjectedAttention(dim, num_heads, downsample)
        # the first block sees the raw prompt tokens, which already carry their positions
        self.first = first

    def forward(self, tokens: torch.Tensor, image: torch.Tensor, token_pe: torch.Tensor,
                image_pe: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.first:
            tokens = self.self_attn(tokens, tokens, tokens)
        else:
            q = tokens + token_pe
            tokens = tokens + self.self_attn(q, q, tokens)
        tokens = self.norm1(tokens)
        image_keys = image + image_pe
        tokens = self.norm2(tokens + self.cross_attn_token_to_image(tokens + token_pe, image_keys, image))
        tokens = self.norm3(tokens + self.mlp(tokens))
        image = self.norm4(image + self.cross_attn_image_to_token(image_keys, tokens + token_pe, tokens))
        return tokens, image


class TwoWayTransformer(nn.Module):
    """State dict (official ``sam_mask_decoder.transformer.*``): ``layers.{i}``,
    ``final_attn_token_to_image``, ``norm_final_attn``.

    forward(image (B, C, h, w), image_pe (B, C, h, w), tokens (B, N, C))
        -> (tokens (B, N, C), image tokens (B, h*w, C))
    ``tokens`` doubles as the tokens' positional encoding, added before every attention.
    """

    def __init__(self, dim: int, depth: int, num_heads: int, mlp_dim: int, downsample: int = 2):
        super().__init__()
        self.layers = nn.ModuleList(TwoWayBlock(dim, num_heads, mlp_dim, downsample, first=(i == 0)) for i in range(depth))
        self.final_attn_token_to_image = ProjectedAttention(dim, num_heads, downsample)
        self.norm_final_attn = nn.LayerNorm(dim)

    def forward(self, image: torch.Tensor, image_pe: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        image = image.flatten(2).permute(0, 2, 1)
        image_pe = image_pe.flatten(2).permute(0, 2, 1)
        token_pe = tokens
        queries = tokens
        for layer in self.layers:
            queries, image = layer(queries, image, token_pe, image_pe)
        out = self.final_attn_token_to_image(queries + token_pe, image + image_pe, image)
        queries = self.norm_final_attn(queries + out)
        return queries, image
