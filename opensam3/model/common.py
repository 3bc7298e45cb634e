"""Building blocks shared by several modules: attention, MLP, 2-D layer norm."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from opensam3.ops.attention import attention


class Attention(nn.Module):
    """Multi-head attention with the parameter layout of ``torch.nn.MultiheadAttention``.

    Parameters are ``in_proj_weight`` / ``in_proj_bias`` (q, k, v stacked) and ``out_proj``, so
    official checkpoints load unchanged, but the computation goes through
    ``scaled_dot_product_attention`` and the inputs are batch-first: (B, L, C).

    ``key_padding_mask``: (B, S) bool, True where a key is padding (ignored).
    ``attn_bias``: additive float bias broadcastable to (B, heads, L, S).

    ``unfused=True`` evaluates softmax(q * scale @ k^T + mask) @ v op by op (SDPA's math backend
    on a pre-scaled query), the order ``nn.MultiheadAttention`` follows when it returns its
    attention weights. Fused kernels sum in another order; where the official module takes that
    path and a later, very peaked attention amplifies last-bit differences (the DETR decoder),
    this keeps fp32 parity.
    """

    def __init__(self, dim: int, num_heads: int, kv_dim: int | None = None, unfused: bool = False):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"width {dim} is not divisible by {num_heads} heads")
        if kv_dim is not None and kv_dim != dim:
            raise ValueError("packed in-projection needs keys and values of the query width")
        self.dim = dim
        self.num_heads = num_heads
        self.unfused = unfused
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.in_proj_weight)

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        return x.view(batch, length, self.num_heads, -1).transpose(1, 2)

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        attn_bias: torch.Tensor | None = None,
    ) -> torch.Tensor:
        w_q, w_k, w_v = self.in_proj_weight.chunk(3)
        b_q, b_k, b_v = self.in_proj_bias.chunk(3)
        q = self._split_heads(F.linear(query, w_q, b_q))
        k = self._split_heads(F.linear(key, w_k, b_k))
        v = self._split_heads(F.linear(value, w_v, b_v))
        mask = attn_bias
        if key_padding_mask is not None:
            pad = torch.zeros(key_padding_mask.shape, dtype=q.dtype, device=q.device)
            pad = pad.masked_fill(key_padding_mask, float("-inf"))[:, None, None, :]
            mask = pad if mask is None else mask + pad
        if mask is not None and mask.dtype != q.dtype:
            mask = mask.to(q.dtype)
        if self.unfused:
            q = q * math.sqrt(1.0 / q.shape[-1])
            with sdpa_kernel(SDPBackend.MATH):
                out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=1.0)
        elif mask is None:
            out = attention(q, k, v)  # bf16 on the CPU: chunked, ~2x SDPA; else SDPA itself
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        batch, _, length, _ = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(batch, length, self.dim))


class MLP(nn.Module):
    """Linear layers with ReLU between them; optional residual and output norm.

    Parameters are ``layers.{i}`` (and ``out_norm`` when given), as in the official layout.
    """

    def __init__(
        self,
        in_dim: int,
        hidden_dim: int,
        out_dim: int,
        num_layers: int,
        residual: bool = False,
        out_norm: bool = False,
    ):
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        if residual and in_dim != out_dim:
            raise ValueError("a residual MLP needs equal input and output widths")
        self.residual = residual
        self.out_norm = nn.LayerNorm(out_dim) if out_norm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            out = layer(out)
            if i < last:
                out = F.relu(out)
        if self.residual:
            out = out + x
        if self.out_norm is not None:
            out = self.out_norm(out)
        return out


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel axis of (B, C, H, W) maps."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) / torch.sqrt(var + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


def inverse_sigmoid(x: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """logit(x) with x clamped to [0, 1] and both terms floored at eps (DETR convention)."""
    x = x.clamp(min=0, max=1)
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))
