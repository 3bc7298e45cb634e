"""Fixed sine/cosine position encodings (DETR style) for feature maps, boxes and points."""

from __future__ import annotations

import math

import torch
from torch import nn


class SinePositionEncoding(nn.Module):
    """Encodes normalised 2-D coordinates with interleaved sin/cos at geometric frequencies.

    ``dim`` is the total width: half of it encodes y, half x. A feature map's grid positions
    are the 1-based row/column indices divided by the grid size (so the last one is ~1).
    The module holds no weights; grids are cached per size because every image of a given
    resolution uses the same one.
    """

    def __init__(self, dim: int, temperature: float = 10000.0, scale: float = 2 * math.pi):
        super().__init__()
        if dim % 2:
            raise ValueError(f"position encoding width must be even, got {dim}")
        self.half_dim = dim // 2
        self.temperature = temperature
        self.scale = scale
        self._grid_cache: dict[tuple[int, int, str], torch.Tensor] = {}

    def _frequencies(self, device: torch.device) -> torch.Tensor:
        index = torch.arange(self.half_dim, dtype=torch.float32, device=device)
        return self.temperature ** (2 * torch.div(index, 2, rounding_mode="floor") / self.half_dim)

    def _sin_cos(self, coords: torch.Tensor) -> torch.Tensor:
        """(...,) normalised coordinates -> (..., half_dim) interleaved sin/cos features."""
        angles = (coords * self.scale)[..., None] / self._frequencies(coords.device)
        return torch.stack((angles[..., 0::2].sin(), angles[..., 1::2].cos()), dim=-1).flatten(-2)

    def encode_xy(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._sin_cos(x.float()), self._sin_cos(y.float())

    def encode_boxes(self, cx: torch.Tensor, cy: torch.Tensor, w: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """(N,) box centres and sizes -> (N, dim + 2): [enc(cy), enc(cx), h, w]."""
        pos_x, pos_y = self.encode_xy(cx, cy)
        return torch.cat((pos_y, pos_x, h[..., None], w[..., None]), dim=-1)

    def encode_points(self, x: torch.Tensor, y: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """(B, N) points and labels -> (B, N, dim + 1): [enc(y), enc(x), label]."""
        pos_x, pos_y = self.encode_xy(x, y)
        return torch.cat((pos_y, pos_x, labels[..., None].to(pos_x.dtype)), dim=-1)

    @torch.no_grad()
    def grid(self, height: int, width: int, device: torch.device | str = "cpu",
             dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """(dim, height, width) encoding of a feature grid, computed in float32 and cached per
        size, device and dtype (a bfloat16 model then keeps one copy, not one per image)."""
        key = (height, width, str(device), dtype)
        cached = self._grid_cache.get(key)
        if cached is None:
            # built as a normal tensor even under inference_mode, so a grid cached while
            # predicting can later be used while training
            with torch.inference_mode(False):
                cached = self._build_grid(height, width, device, dtype)
            self._grid_cache[key] = cached
        return cached

    def _build_grid(self, height: int, width: int, device: torch.device | str, dtype: torch.dtype) -> torch.Tensor:
        """The encoding is separable (y half, x half), so the two small tables are computed in
        float32 and broadcast straight into the output: no full-size float32 temporaries (at
        full size a 288x288 grid would otherwise pass through several 85 MB copies)."""
        eps = 1e-6
        ys = torch.arange(1, height + 1, dtype=torch.float32, device=device) / (height + eps)
        xs = torch.arange(1, width + 1, dtype=torch.float32, device=device) / (width + eps)
        grid = torch.empty(2 * self.half_dim, height, width, dtype=dtype, device=device)
        grid[:self.half_dim].copy_(self._sin_cos(ys).T[:, :, None].expand(-1, height, width))
        grid[self.half_dim:].copy_(self._sin_cos(xs).T[:, None, :].expand(-1, height, width))
        return grid

    def forward(self, features: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """(B, C, H, W) features -> (B, dim, H, W) encoding of their grid in ``dtype`` (a
        broadcast view of the cached grid: read it, never write to it)."""
        batch, _, height, width = features.shape
        return self.grid(height, width, features.device, dtype).unsqueeze(0).expand(batch, -1, -1, -1)
