"""The ViT image encoder of SAM 3 (ViTDet style: windowed blocks plus a few global ones).

Layout inside the trunk is channels-last, ``(B, H, W, C)`` on the patch grid, so window
partitioning is a view/permute and linear layers act on the last dimension directly.
Parameter names follow the official ``ViT`` so its checkpoint loads after a prefix strip.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from opensam3.config import VisionConfig
from opensam3.model.vision.rope import AxialRope, apply_rope
from opensam3.ops.attention import attention
from opensam3.ops.linear import linear

# (L, head_dim // 2) complex64 rotations, see AxialRope
RopeTable = torch.Tensor


def window_partition(x: torch.Tensor, window: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """(B, H, W, C) -> (B * nWindows, window * window, C) and the padded size (Hp, Wp).

    The grid is zero-padded at the bottom/right to a multiple of ``window``. Padded tokens are
    not masked out of the attention: the official model attends to them too.
    """
    batch, height, width, channels = x.shape
    pad_h = (window - height % window) % window
    pad_w = (window - width % window) % window
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    padded_h, padded_w = height + pad_h, width + pad_w
    x = x.view(batch, padded_h // window, window, padded_w // window, window, channels)
    windows = x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window * window, channels)
    return windows, (padded_h, padded_w)


def window_unpartition(
    windows: torch.Tensor, window: int, padded_hw: tuple[int, int], hw: tuple[int, int]
) -> torch.Tensor:
    """Inverse of :func:`window_partition`: (B * nWindows, window * window, C) -> (B, H, W, C)."""
    padded_h, padded_w = padded_hw
    height, width = hw
    rows, cols = padded_h // window, padded_w // window
    batch = windows.shape[0] // (rows * cols)
    x = windows.reshape(batch, rows, cols, window, window, -1).permute(0, 1, 3, 2, 4, 5)
    x = x.reshape(batch, padded_h, padded_w, -1)
    if padded_h != height or padded_w != width:
        x = x[:, :height, :width]
    return x


class PatchEmbed(nn.Module):
    """Non-overlapping patch projection (no bias): (B, 3, S, S) -> (B, S/p, S/p, C)."""

    def __init__(self, patch_size: int, embed_dim: int, in_channels: int = 3):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, embed_dim, kernel_size=patch_size, stride=patch_size, bias=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.proj(images).permute(0, 2, 3, 1)


class RopeAttention(nn.Module):
    """Multi-head self-attention with a fused qkv projection and 2-D RoPE on queries and keys.

    forward(x (N, L, C), rope (L, head_dim // 2) complex) -> (N, L, C).
    """

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, rope: RopeTable) -> torch.Tensor:
        batch, length, dim = x.shape
        # (N, L, 3, heads, hd) -> 3 x (N, heads, L, hd) as strided views; no copy yet
        q, k, v = linear(x, self.qkv).view(batch, length, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        q = apply_rope(q, rope)
        k = apply_rope(k, rope)
        out = attention(q, k, v)
        return linear(out.transpose(1, 2).reshape(batch, length, dim), self.proj)


class FeedForward(nn.Module):
    """fc1 -> exact GELU -> fc2 (the timm ``Mlp`` layout; the GELU runs inside ``ops.linear``)."""

    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(linear(x, self.fc1, gelu=True), self.fc2)


class VitBlock(nn.Module):
    """Pre-norm transformer block; attention is windowed when ``window_size > 0``, else global.

    forward(x (B, H, W, C), rope) -> (B, H, W, C). ``rope`` must be the table of the attention
    extent: (window, window) for windowed blocks, (H, W) for global ones.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, window_size: int):
        super().__init__()
        self.window_size = window_size
        self.norm1 = nn.LayerNorm(dim, eps=1e-5)
        self.attn = RopeAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-5)
        self.mlp = FeedForward(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, rope: RopeTable) -> torch.Tensor:
        batch, height, width, dim = x.shape
        tokens = self.norm1(x)
        if self.window_size > 0:
            windows, padded_hw = window_partition(tokens, self.window_size)
            attended = self.attn(windows, rope)
            attended = window_unpartition(attended, self.window_size, padded_hw, (height, width))
        else:
            attended = self.attn(tokens.reshape(batch, height * width, dim), rope).view(batch, height, width, dim)
        x = x + attended
        return x + self.mlp(self.norm2(x))


class VisionTransformer(nn.Module):
    """SAM 3's ViT trunk.

    forward(images (B, 3, S, S), normalised float) -> (B, embed_dim, S/p, S/p): the last block's
    output as a channels-first *view* of the channels-last token grid (not contiguous).

    Steps: patch embedding (no bias) + absolute position embedding (learned on the pretrain
    grid, its cls slot dropped, tiled to cover the input grid) -> ``ln_pre`` -> blocks.
    Global blocks use RoPE positions scaled by ``window_size / grid_size`` of the configured
    image size (kept fixed for other input sizes); windowed blocks use unscaled positions.
    """

    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.cfg = cfg
        dim = cfg.embed_dim
        self.patch_embed = PatchEmbed(cfg.patch_size, dim)
        pretrain_grid = cfg.pretrain_image_size // cfg.patch_size
        # one extra slot for the pretraining cls token, unused here
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + pretrain_grid * pretrain_grid, dim))
        self.blocks = nn.ModuleList(
            VitBlock(dim, cfg.num_heads, cfg.mlp_ratio, 0 if i in cfg.global_blocks else cfg.window_size)
            for i in range(cfg.depth)
        )
        self.ln_pre = nn.LayerNorm(dim, eps=1e-5)
        self.rope = AxialRope(dim // cfg.num_heads, cfg.rope_theta)
        self.global_rope_scale = cfg.window_size / cfg.grid_size

    def tiled_pos_embed(self, height: int, width: int) -> torch.Tensor:
        """(1, height, width, C): the pretrain-grid embedding repeated over the grid, cropped."""
        grid = math.isqrt(self.pos_embed.shape[1] - 1)
        pos = self.pos_embed[:, 1:].view(1, grid, grid, -1)
        if grid != height or grid != width:
            pos = pos.repeat(1, -(-height // grid), -(-width // grid), 1)[:, :height, :width]
        return pos

    def rope_tables(self, height: int, width: int, device: torch.device) -> tuple[RopeTable, RopeTable]:
        """(window table, global table) for a (height, width) patch grid; cached."""
        window = self.cfg.window_size
        return (
            self.rope.table(window, window, 1.0, device),
            self.rope.table(height, width, self.global_rope_scale, device),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(images)
        _, height, width, _ = x.shape
        x = self.ln_pre(x + self.tiled_pos_embed(height, width))
        window_rope, global_rope = self.rope_tables(height, width, x.device)
        for block in self.blocks:
            x = block(x, window_rope if block.window_size > 0 else global_rope)
        return x.permute(0, 3, 1, 2)
