"""Memory attention: the current frame's tokens self-attend, then cross-attend to the memory bank.

Both attentions rotate queries and keys with 2-D axial RoPE over the feature grid. Memory keys are
spatial tokens of several past frames followed by object-pointer tokens: every frame's tokens get
the same rotations as the query grid (the table is repeated once per frame), and the pointer
tokens, which have no grid position, are left unrotated.

State dict (official ``transformer.encoder.*``): ``layers.{i}.{self_attn, cross_attn_image}.
{q,k,v,out}_proj``, ``layers.{i}.{linear1, linear2, norm1, norm2, norm3}``, ``norm``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..vision.rope import AxialRope, apply_rope
from .config import TrackerMemoryConfig


class RopeAttention(nn.Module):
    """Attention with separate q/k/v projections (keys/values may be narrower: ``kv_dim``) and RoPE."""

    def __init__(self, dim: int, num_heads: int, kv_dim: int | None = None, theta: float = 10000.0,
                 project: bool = True):
        super().__init__()
        kv_dim = kv_dim or dim
        self.num_heads = num_heads
        # project=False: the caller owns the projections (SAM 3.1's layers name them themselves)
        linear = nn.Linear if project else (lambda *_: nn.Identity())
        self.q_proj = linear(dim, dim)
        self.k_proj = linear(kv_dim, dim)
        self.v_proj = linear(kv_dim, dim)
        self.out_proj = linear(dim, dim)
        self.rope = AxialRope(dim // num_heads, theta)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, width = x.shape
        return x.reshape(batch, length, self.num_heads, width // self.num_heads).transpose(1, 2)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_k_exclude_rope: int = 0) -> torch.Tensor:
        """q: (B, Lq, dim) with Lq a square grid; k, v: (B, Lk, kv_dim), whose first
        Lk - num_k_exclude_rope tokens are whole grids of Lq tokens each."""
        q, k, v = self._heads(self.q_proj(q)), self._heads(self.k_proj(k)), self._heads(self.v_proj(v))
        side = math.isqrt(q.shape[-2])
        if side * side != q.shape[-2]:
            raise ValueError(f"memory attention expects a square grid of queries, got {q.shape[-2]} tokens")
        table = self.rope.table(side, side, device=q.device)
        q = apply_rope(q, table)
        # queries or keys may be one row shared by all objects (the frame before it meets each
        # object's memories): broadcast them only now, after their projection ran once
        batch = max(q.shape[0], k.shape[0])
        q, k, v = (t.expand(batch, -1, -1, -1) for t in (q, k, v))
        rotated = k.shape[-2] - num_k_exclude_rope
        if rotated % q.shape[-2]:
            raise ValueError(f"{rotated} rotated keys are not whole frames of {q.shape[-2]} tokens")
        if rotated:
            spatial = apply_rope(k[:, :, :rotated], table.repeat(rotated // q.shape[-2], 1))
            k = torch.cat((spatial, k[:, :, rotated:]), dim=2)
        out = F.scaled_dot_product_attention(q, k, v)
        batch, heads, length, head_dim = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(batch, length, heads * head_dim))


class MemoryAttentionLayer(nn.Module):
    """Pre-norm: x += SA(norm1 x); x += CA(norm2 x, memory + memory_pos); x += FFN(norm3 x).

    No position encoding is added to the self-attention inputs or the cross-attention queries
    (RoPE carries the grid position); the memory keys get their spatial + temporal encoding.
    """

    def __init__(self, config: TrackerMemoryConfig):
        super().__init__()
        dim = config.dim
        self.self_attn = RopeAttention(dim, config.attention_heads, theta=config.rope_theta)
        self.cross_attn_image = RopeAttention(dim, config.attention_heads, kv_dim=config.mem_dim,
                                              theta=config.rope_theta)
        self.linear1 = nn.Linear(dim, config.attention_ffn)
        self.linear2 = nn.Linear(config.attention_ffn, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, memory: torch.Tensor, memory_pos: torch.Tensor,
                num_obj_ptr_tokens: int) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.self_attn(h, h, h)
        h = self.norm2(x)
        x = x + self.cross_attn_image(h, memory + memory_pos, memory, num_k_exclude_rope=num_obj_ptr_tokens)
        return x + self.linear2(F.relu(self.linear1(self.norm3(x))))


class MemoryAttention(nn.Module):
    """The layers plus a final LayerNorm (the official ``TransformerEncoderCrossAttention``)."""

    def __init__(self, config: TrackerMemoryConfig):
        super().__init__()
        self.layers = nn.ModuleList(MemoryAttentionLayer(config) for _ in range(config.attention_layers))
        self.norm = nn.LayerNorm(config.dim)

    def forward(self, tokens: torch.Tensor, tokens_pos: torch.Tensor, memory: torch.Tensor, memory_pos: torch.Tensor,
                num_obj_ptr_tokens: int = 0) -> torch.Tensor:
        """tokens, tokens_pos: (B or 1, e*e, dim) current frame and its sine encoding (batch 1:
        shared by the B objects, so the first self-attention runs once); memory, memory_pos:
        (B, M, mem_dim), object-pointer tokens last. Returns (B, e*e, dim)."""
        # the frame's position enters once, scaled down, at the input (official pos_enc_at_input)
        x = tokens + 0.1 * tokens_pos
        for layer in self.layers:
            x = layer(x, memory, memory_pos, num_obj_ptr_tokens)
        return self.norm(x)


class MemoryTransformer(nn.Module):
    """Holds the attention as ``encoder`` so keys read ``transformer.encoder.*`` as in the
    checkpoint (the official wrapper is an encoder-decoder class whose decoder is unused)."""

    def __init__(self, config: TrackerMemoryConfig):
        super().__init__()
        self.encoder = MemoryAttention(config)
