"""Pre-norm transformer layer: self-attention, cross-attention to a memory, feed-forward.

The detector uses this layer type twice with different position-encoding placements: the
geometry (exemplar) encoder adds the image position encoding to the cross-attention keys only,
the fusion encoder adds the image position encoding to the self-attention queries/keys only.
Parameter names follow the official checkpoint (``self_attn``, ``cross_attn_image``,
``linear1``/``linear2``, ``norm1..3``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from opensam3.model.common import Attention


class PreNormEncoderLayer(nn.Module):
    """``x += SelfAttn(norm1(x)); x += CrossAttn(norm2(x), memory); x += FFN(norm3(x))``.

    pos_in_self_attn: add ``query_pos`` to the self-attention queries and keys (not values).
    pos_in_cross_queries: add ``query_pos`` to the cross-attention queries.
    pos_in_cross_keys: add ``memory_pos`` to the cross-attention keys (not values).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        ffn_dim: int,
        pos_in_self_attn: bool = False,
        pos_in_cross_queries: bool = False,
        pos_in_cross_keys: bool = False,
    ):
        super().__init__()
        self.self_attn = Attention(dim, num_heads)
        self.cross_attn_image = Attention(dim, num_heads)
        self.linear1 = nn.Linear(dim, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)
        self.pos_in_self_attn = pos_in_self_attn
        self.pos_in_cross_queries = pos_in_cross_queries
        self.pos_in_cross_keys = pos_in_cross_keys

    def forward(
        self,
        x: torch.Tensor,
        memory: torch.Tensor,
        padding_mask: torch.Tensor | None = None,
        memory_padding_mask: torch.Tensor | None = None,
        query_pos: torch.Tensor | None = None,
        memory_pos: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x: (B, L, C) tokens; memory: (B, S, C); padding masks (B, L) / (B, S), True = pad
        (a padded token is ignored as a key but still updated as a query);
        query_pos: (B, L, C); memory_pos: (B, S, C). Returns (B, L, C)."""
        x = self.self_attention_block(x, padding_mask, query_pos)
        return self.cross_attention_blocks(x, memory, memory_padding_mask, query_pos, memory_pos)

    def self_attention_block(self, x: torch.Tensor, padding_mask: torch.Tensor | None = None,
                             query_pos: torch.Tensor | None = None) -> torch.Tensor:
        """``x + SelfAttn(norm1(x))``: the part that never sees the memory."""
        h = self.norm1(x)
        qk = h + query_pos if self.pos_in_self_attn else h
        return x + self.self_attn(qk, qk, h, key_padding_mask=padding_mask)

    def cross_attention_blocks(self, x: torch.Tensor, memory: torch.Tensor,
                               memory_padding_mask: torch.Tensor | None = None,
                               query_pos: torch.Tensor | None = None,
                               memory_pos: torch.Tensor | None = None) -> torch.Tensor:
        """The rest of the layer after :meth:`self_attention_block`: cross-attention, then FFN."""
        h = self.norm2(x)
        query = h + query_pos if self.pos_in_cross_queries else h
        keys = memory + memory_pos if self.pos_in_cross_keys else memory
        x = x + self.cross_attn_image(query, keys, memory, key_padding_mask=memory_padding_mask)
        h = self.norm3(x)
        return x + self.linear2(F.relu(self.linear1(h)))
