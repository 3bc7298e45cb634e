"""RoI Align in plain torch, with torchvision's ``ops.roi_align`` semantics.

Every sample point of a bin is bilinearly interpolated and the samples of a bin are averaged.
The samples of one box are gathered at once (all bins, all sample points) and summed per bin
in the reference's order: corner weights multiplied first, the four corner terms added left to
right, the bin's samples summed in row-major order, then divided by their count. A separable
formulation (row weights @ features @ column weights) is cheaper but rounds differently, and
the detector's very peaked attention turns that last-bit difference in an exemplar box token
into visible score differences.
"""

from __future__ import annotations

import math
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


def _sample_coords(
    start: float, bin_size: float, grid: int, bins: int, device: torch.device
) -> torch.Tensor:
    """(bins, grid) float32 sample coordinates along one axis of one box.

    The bin origin is formed in double precision (Python floats) and the in-bin offset in
    float32, and the two are added in float32, as in the reference run (its torchvision
    stand-in); a sample landing exactly on the far map border is kept or dropped by that
    rounding, so it is reproduced.
    """
    origin = torch.tensor([start + i * bin_size for i in range(bins)], dtype=torch.float32, device=device)
    offset = (torch.arange(grid, dtype=torch.float32, device=device) + 0.5) * bin_size / grid
    return origin[:, None] + offset[None, :]


def _corner_indices(coords: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Lower/upper neighbour indices, the fraction towards the upper one, and validity."""
    valid = (coords >= -1.0) & (coords <= length)
    coords = coords.clamp(min=0)
    low = coords.floor().long()
    at_edge = low >= length - 1
    low = torch.where(at_edge, torch.full_like(low, length - 1), low)
    high = torch.where(at_edge, low, low + 1)
    coords = torch.where(at_edge, low.to(coords.dtype), coords)
    return low, high, coords - low, valid


def _pool_box(
    feature: torch.Tensor, x1: float, y1: float, box_w: float, box_h: float, out_h: int, out_w: int, sampling_ratio: int
) -> torch.Tensor:
    """(C, H, W) map, one box in map pixels -> (C, out_h, out_w)."""
    channels, height, width = feature.shape
    if not math.isfinite(x1 + y1 + box_w + box_h):
        return feature.new_zeros((channels, out_h, out_w))
    bin_h, bin_w = box_h / out_h, box_w / out_w
    grid_h = sampling_ratio if sampling_ratio > 0 else math.ceil(box_h / out_h)
    grid_w = sampling_ratio if sampling_ratio > 0 else math.ceil(box_w / out_w)
    if grid_h <= 0 or grid_w <= 0:
        return feature.new_zeros((channels, out_h, out_w))
    y0, y1i, ly, valid_y = _corner_indices(_sample_coords(y1, bin_h, grid_h, out_h, feature.device), height)
    x0, x1i, lx, valid_x = _corner_indices(_sample_coords(x1, bin_w, grid_w, out_w, feature.device), width)
    hy, hx = 1 - ly, 1 - lx
    # sample (i, j, a, b): bin row i, bin column j, a-th row and b-th column sample inside the bin
    rows = (slice(None), None, slice(None), None)
    cols = (None, slice(None), None, slice(None))
    dtype = feature.dtype
    flat = feature.reshape(channels, height * width)

    def corner(y_index: torch.Tensor, x_index: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        index = (y_index[rows] * width + x_index[cols]).reshape(-1)
        return weight.to(dtype).reshape(-1) * flat.index_select(1, index)

    samples = (
        corner(y0, x0, hy[rows] * hx[cols])
        + corner(y0, x1i, hy[rows] * lx[cols])
        + corner(y1i, x0, ly[rows] * hx[cols])
        + corner(y1i, x1i, ly[rows] * lx[cols])
    )
    samples = samples * (valid_y[rows] & valid_x[cols]).to(dtype).reshape(-1)
    # (C, out_h, out_w, grid_h * grid_w): each bin's samples contiguous, row-major
    samples = samples.reshape(channels, out_h, out_w, grid_h * grid_w)
    return samples.sum(-1) / max(grid_h * grid_w, 1)


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
    pooled = []
    # box geometry in double precision (Python floats), like the reference
    for index, *corners in rois.tolist():
        x1, y1, x2, y2 = (c * spatial_scale - offset for c in corners)
        box_w, box_h = x2 - x1, y2 - y1
        if not aligned:
            box_w, box_h = max(box_w, 1.0), max(box_h, 1.0)
        pooled.append(_pool_box(features[int(index)], x1, y1, box_w, box_h, out_h, out_w, sampling_ratio))
    return torch.stack(pooled)
