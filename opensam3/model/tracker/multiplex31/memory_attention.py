"""SAM 3.1 decoupled memory attention: bucket features cross-attend to bucket memories.

Each bucket's target starts as the frame's top-level features (shared, batch 1) plus 0.1 x their
sine encoding. Per layer (pre-norm):

* self-attention over the grid with the layer's own q/k/v/out projections and 2-D axial RoPE;
* cross-attention whose queries are proj(raw frame image) + proj(normed target) and whose keys
  are proj(stored frame images) + proj(bucket memory) + key positions, values proj(bucket
  memory). The memory is the spatial memories of the selected frames followed by the object
  pointer tokens; pointer tokens have no stored image (zeros, so only the image projection's
  bias remains) and no grid position: RoPE rotates queries and all keys but the trailing
  pointer tokens, the query table repeated once per memory frame;
* GELU FFN. A final LayerNorm closes the stack (the raw image is not added back).

Training-time dropout (0.1 in the release config) is not modelled: this is the inference path.
Structure reconstructed from ports of the official ``decoder.py`` (not itself available), see
docs/sam31_multiplex_notes.md section 2.3.

State dict (official ``transformer.encoder.*``, 122 tensors at full size): ``layers.{i}.{
self_attn_q_proj, self_attn_k_proj, self_attn_v_proj, self_attn_out_proj, cross_attn_q_proj,
cross_attn_k_proj, cross_attn_v_proj, cross_attn_out_proj, image_cross_attn_q_proj,
image_cross_attn_k_proj, linear1, linear2, norm1, norm2, norm3}``, ``norm``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..memory_attention import RopeAttention
from .config import MultiplexTrackerConfig


def _linear(dim: int) -> nn.Linear:
    return nn.Linear(dim, dim)


class DecoupledMemoryLayer(nn.Module):
    """One layer; see the module docstring. Tokens are batch-first (B, L, C)."""

    def __init__(self, config: MultiplexTrackerConfig):
        super().__init__()
        dim, heads = config.dim, config.attention_heads
        self.self_attn_q_proj, self.self_attn_k_proj = _linear(dim), _linear(dim)
        self.self_attn_v_proj, self.self_attn_out_proj = _linear(dim), _linear(dim)
        self.cross_attn_q_proj, self.cross_attn_k_proj = _linear(dim), _linear(dim)
        self.cross_attn_v_proj, self.cross_attn_out_proj = _linear(dim), _linear(dim)
        self.image_cross_attn_q_proj, self.image_cross_attn_k_proj = _linear(dim), _linear(dim)
        self.linear1 = nn.Linear(dim, config.attention_ffn)
        self.linear2 = nn.Linear(config.attention_ffn, dim)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.self_rope = RopeAttention(dim, heads, theta=config.rope_theta, project=False)
        self.cross_rope = RopeAttention(dim, heads, theta=config.rope_theta, project=False)

    def forward(self, x: torch.Tensor, image: torch.Tensor, memory_image: torch.Tensor, memory: torch.Tensor,
                key_pos: torch.Tensor, num_pointer_tokens: int) -> torch.Tensor:
        """x: (nb, HW, C) target; image: (1, HW, C) raw frame; memory_image: (1, L, C) stored frame
        images, zero-padded over the pointer tokens; memory: (nb, L, C); key_pos: (1 or nb, L, C)."""
        h = self.norm1(x)
        attended = self.self_rope(self.self_attn_q_proj(h), self.self_attn_k_proj(h), self.self_attn_v_proj(h))
        x = x + self.self_attn_out_proj(attended)
        h = self.norm2(x)
        q = self.image_cross_attn_q_proj(image) + self.cross_attn_q_proj(h)
        k = self.image_cross_attn_k_proj(memory_image) + self.cross_attn_k_proj(memory) + key_pos
        attended = self.cross_rope(q, k, self.cross_attn_v_proj(memory), num_k_exclude_rope=num_pointer_tokens)
        x = x + self.cross_attn_out_proj(attended)
        return x + self.linear2(F.gelu(self.linear1(self.norm3(x))))


class DecoupledMemoryAttention(nn.Module):
    """The layers and a final LayerNorm (official ``TransformerEncoderDecoupledCrossAttention``)."""

    def __init__(self, config: MultiplexTrackerConfig):
        super().__init__()
        self.input_pos_scale = config.input_pos_scale
        self.layers = nn.ModuleList(DecoupledMemoryLayer(config) for _ in range(config.attention_layers))
        self.norm = nn.LayerNorm(config.dim)

    def forward(self, image: torch.Tensor, image_pos: torch.Tensor, memory_image: torch.Tensor,
                memory_image_pos: torch.Tensor, memory: torch.Tensor, pointer_pos: torch.Tensor | None,
                num_buckets: int) -> torch.Tensor:
        """image, image_pos: (1, HW, C) current frame and its sine encoding; memory_image,
        memory_image_pos: (1, Ls, C) stored frame images and their positions (temporal encoding
        included); memory: (nb, Ls + P, C) spatial memories then P pointer tokens; pointer_pos:
        (P, C) or None when P = 0. Returns (nb, HW, C)."""
        num_pointers = memory.shape[1] - memory_image.shape[1]
        if num_pointers:
            if pointer_pos is None or pointer_pos.shape[0] != num_pointers:
                raise ValueError(f"{num_pointers} pointer tokens need as many pointer positions")
            pad = memory_image.new_zeros(1, num_pointers, memory_image.shape[-1])
            memory_image = torch.cat((memory_image, pad), dim=1)
            memory_image_pos = torch.cat((memory_image_pos, pointer_pos[None].to(memory_image_pos.dtype)), dim=1)
        x = (image + self.input_pos_scale * image_pos).expand(num_buckets, -1, -1)
        for layer in self.layers:
            x = layer(x, image, memory_image, memory, memory_image_pos, num_pointers)
        return self.norm(x)


class DecoupledMemoryTransformer(nn.Module):
    """Holds the attention as ``encoder`` so keys read ``transformer.encoder.*`` as in the checkpoint."""

    def __init__(self, config: MultiplexTrackerConfig):
        super().__init__()
        self.encoder = DecoupledMemoryAttention(config)
