"""Memory encoder: (frame features, predicted mask) -> 64-d memory features + their positions.

The mask is resized to 16x the feature grid, brought back down to the grid by strided convs
(channels growing 4x per step, as pixels shrink 4x), added to a projection of the frame's
lowest-resolution tracker features, mixed by two ConvNeXt blocks and projected to the memory width.

State dict (official ``maskmem_backbone.*``): ``mask_downsampler.encoder.{0..12}``,
``pix_feat_proj``, ``fuser.layers.{i}.{dwconv, norm, pwconv1, pwconv2, gamma}``, ``out_proj``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..common import LayerNorm2d
from ..position import SinePositionEncoding
from .config import TrackerMemoryConfig


class MaskDownSampler(nn.Module):
    """(B, in_channels, S, S) masks -> (B, dim, S / total_stride, S / total_stride).

    ``encoder`` is [conv, LayerNorm2d, GELU] per stride step, then a 1x1 conv to ``dim``;
    its indices (0, 1, 3, 4, ..., 12) are the checkpoint's.
    """

    def __init__(self, config: TrackerMemoryConfig):
        super().__init__()
        steps = round(math.log(config.mask_total_stride) / math.log(config.mask_stride))
        if config.mask_stride**steps != config.mask_total_stride:
            raise ValueError("mask_total_stride must be a power of mask_stride")
        self.input_size = config.mask_input_size
        layers: list[nn.Module] = []
        channels, out = config.mask_in_channels, config.mask_first_channels
        for _ in range(steps):
            out = out * config.mask_stride**2
            layers += [nn.Conv2d(channels, out, config.mask_kernel, config.mask_stride, config.mask_padding),
                       LayerNorm2d(out), nn.GELU()]
            channels = out
        layers.append(nn.Conv2d(channels, config.dim, kernel_size=1))
        self.encoder = nn.Sequential(*layers)

    def forward(self, masks: torch.Tensor) -> torch.Tensor:
        if tuple(masks.shape[-2:]) != (self.input_size, self.input_size):
            # predicted masks arrive at the model input size (1008) and are upsampled to 1152. The
            # official code passes antialias=True, which changes nothing when upsampling (same
            # filter, ~1e-7 rounding) but takes a kernel ~4x slower: it is kept for downsampling only.
            upsampling = all(side <= self.input_size for side in masks.shape[-2:])
            masks = F.interpolate(masks.float(), size=(self.input_size, self.input_size), mode="bilinear",
                                  align_corners=False, antialias=not upsampling)
        masks = masks.to(self.encoder[0].weight.dtype)
        if masks.shape[1] > 1:
            # a stack of slots (SAM 3.1: 32 channels at 1152 px): the first conv runs ~5x faster
            # channels-last on our CPU (the whole downsampler ~15%); one mask channel gains nothing
            masks = masks.contiguous(memory_format=torch.channels_last)
        return self.encoder(masks).contiguous()


class ConvNeXtBlock(nn.Module):
    """Depthwise 7x7 conv, channel LayerNorm, 4x MLP (as linears on channels-last), layer scale,
    residual. Official ``CXBlock`` layout: ``dwconv``, ``norm``, ``pwconv1``, ``pwconv2``, ``gamma``."""

    def __init__(self, dim: int, kernel_size: int):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)
        self.norm = LayerNorm2d(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), 1e-6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(self.dwconv(x)).permute(0, 2, 3, 1)
        y = self.gamma * self.pwconv2(F.gelu(self.pwconv1(y)))
        return x + y.permute(0, 3, 1, 2)


class Fuser(nn.Module):
    """A stack of ConvNeXt blocks (official ``SimpleFuser``: ``layers.{i}``, no input projection)."""

    def __init__(self, dim: int, num_layers: int, kernel_size: int):
        super().__init__()
        self.layers = nn.ModuleList(ConvNeXtBlock(dim, kernel_size) for _ in range(num_layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


class MemoryEncoder(nn.Module):
    """Official ``SimpleMaskEncoder``: returns (features (B, mem_dim, e, e), positions (B, mem_dim, e, e))."""

    def __init__(self, config: TrackerMemoryConfig):
        super().__init__()
        self.mask_downsampler = MaskDownSampler(config)
        self.pix_feat_proj = nn.Conv2d(config.dim, config.dim, kernel_size=1)
        self.fuser = Fuser(config.dim, config.fuser_layers, config.fuser_kernel)
        # as the official encoder: a projection only when the memory is narrower than the features
        self.out_proj = (nn.Conv2d(config.dim, config.mem_dim, kernel_size=1) if config.mem_dim != config.dim
                         else nn.Identity())
        self.position_encoding = SinePositionEncoding(config.mem_dim)

    def forward(self, pix_feat: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """pix_feat: (B, C, e, e) raw lowest tracker-neck level (no memory, no no-mem embedding);
        masks: (B, 1, S, S) memory-encoder input, already scaled (see ``TrackerMemory.mask_for_memory``).
        """
        x = self.pix_feat_proj(pix_feat) + self.mask_downsampler(masks)
        x = self.out_proj(self.fuser(x))
        return x, self.position_encoding(x, x.dtype)
