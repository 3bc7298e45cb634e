"""RoI Align in plain torch, with torchvision's ``ops.roi_align`` semantics.

Every sample point of a bin is bilinearly interpolated and the samples of a bin are averaged.
Bilinear weights factor into a row weight times a column weight, and a sample counts only when
its row *and* its column are inside the map, so the whole operation is separable: for each box
we build a (bins x H) row-weight matrix and a (bins x W) column-weight matrix holding the summed
interpolation weights of all samples of each bin, and the pooled features are
``rows @ feature @ cols^T / count``. That is two small matmuls per box instead of a gather per
sample point, and it supports torchvision's adaptive (per-box) sampling grid without loops.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def _as_rois(boxes: torch.Tensor | Sequence[torch.Tensor], device: torch.device) -> torch.Tensor:
    """Boxes as one (K, 5) float32 tensor [batch_index, x1, y1, x2, y2]."""
    if isinstance(boxes, torch.Tensor):
        if boxes.ndim != 2 or boxes.shape[1] != 5:
            raise ValueError(f"roi tensor must be (K, 5) [batch_index, x1, y1, x2, y2], got {tuple(boxes.shape)}")
        return boxes.to(device=device, dtype=torch.float32)
    parts = []
    for index, per_image in enumerate(boxes):
        per_image = per_image.to(device=device, dtype=torch.float32).reshape(-1, 4)
        batch_index = torch.full((per_image.shape[0], 1), float(index), device=device)
        parts.append(torch.cat((batch_index, per_image), dim=1))
    if not parts:
        return torch.zeros((0, 5), device=device)
    return torch.cat(parts, dim=0)


def _axis_weights(
    start: torch.Tensor, extent: torch.Tensor, bins: int, length: int, sampling_ratio: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed interpolation weights of every bin's samples along one axis.

    start, extent: (K,) box start and size along the axis in feature-map pixels, in the box
    geometry precision (float64 where the device has it).
    Returns (K, bins, length) float32 weights and the (K,) number of samples per bin.
    """
    bin_size = extent / bins
    if sampling_ratio > 0:
        grid = torch.full_like(extent, float(sampling_ratio))
    else:
        grid = torch.ceil(extent / bins)
    num_boxes = start.shape[0]
    max_grid = int(grid.max().item()) if num_boxes else 0
    weights = torch.zeros((num_boxes, bins, length), device=start.device)
    if max_grid == 0:
        return weights, grid
    # The reference run (its torchvision stand-in) computes the bin origin in double precision
    # and the in-bin sample offset in float32, then adds them in float32. A sample landing
    # exactly on the far map border is kept or dropped by that rounding, so it is reproduced.
    bin_index = torch.arange(bins, device=start.device, dtype=start.dtype)
    origin = (start[:, None] + bin_index[None, :] * bin_size[:, None]).float()[:, :, None]
    sample_index = torch.arange(max_grid, device=start.device, dtype=torch.float32)[None, None, :]
    step = (sample_index + 0.5) * bin_size.float()[:, None, None] / grid.float()[:, None, None]
    coords = origin + step  # (K, bins, max_grid)
    used = (sample_index < grid.float()[:, None, None]) & (coords >= -1.0) & (coords <= length)
    # unused slots (past a box's own grid, or NaN from an empty box) must still index safely
    coords = torch.where(used, coords, torch.zeros_like(coords)).clamp(min=0)
    low = coords.floor().long()
    at_edge = low >= length - 1
    low = low.clamp(max=length - 1)
    high = torch.where(at_edge, low, low + 1)
    coords = torch.where(at_edge, low.to(coords.dtype), coords)
    frac = coords - low
    used = used.to(coords.dtype)
    weights.scatter_add_(2, low, (1 - frac) * used)
    weights.scatter_add_(2, high, frac * used)
    return weights, grid


def roi_align(
    features: torch.Tensor,
    boxes: torch.Tensor | Sequence[torch.Tensor],
    output_size: int | tuple[int, int],
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    aligned: bool = False,
) -> torch.Tensor:
    """Pool a fixed-size grid of features inside each box (torchvision ``roi_align`` semantics).

    features: (B, C, H, W).
    boxes: either a list with one (N_i, 4) xyxy tensor per image of the batch, or a (K, 5)
        tensor of [batch_index, x1, y1, x2, y2]; coordinates are in input-image units and are
        multiplied by ``spatial_scale`` to land on the feature map.
    output_size: bins per box, int or (height, width).
    sampling_ratio: samples per bin along each axis; <= 0 means ceil(box size / bins), per box.
    aligned: shift boxes by -0.5 pixel (pixel-centre convention); when False, boxes are at least
        one pixel wide and tall.
    Returns (K, C, out_h, out_w) in the features' dtype, boxes ordered as given.
    """
    out_h, out_w = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)
    _, channels, height, width = features.shape
    rois = _as_rois(boxes, features.device)
    if rois.shape[0] == 0:
        return features.new_zeros((0, channels, out_h, out_w))
    offset = 0.5 if aligned else 0.0
    # box geometry in double precision like the reference (MPS has no float64)
    geometry_dtype = torch.float32 if features.device.type == "mps" else torch.float64
    x1, y1, x2, y2 = (rois[:, 1:].to(geometry_dtype) * spatial_scale - offset).unbind(1)
    box_w, box_h = x2 - x1, y2 - y1
    if not aligned:
        box_w, box_h = box_w.clamp(min=1.0), box_h.clamp(min=1.0)
    row_weights, grid_h = _axis_weights(y1, box_h, out_h, height, sampling_ratio)
    col_weights, grid_w = _axis_weights(x1, box_w, out_w, width, sampling_ratio)
    # averaging over the samples folds into the row weights
    row_weights = row_weights / (grid_h * grid_w).clamp(min=1).float()[:, None, None]
    per_box = features.index_select(0, rois[:, 0].long())
    dtype = features.dtype
    pooled = torch.matmul(row_weights.to(dtype)[:, None], per_box)  # (K, C, out_h, W)
    return torch.matmul(pooled, col_weights.to(dtype).transpose(1, 2)[:, None])  # (K, C, out_h, out_w)
