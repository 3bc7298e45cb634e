"""Connected components of binary masks in plain torch, and SAM's small-hole filling."""

from __future__ import annotations

import torch
import torch.nn.functional as F

# the 8 neighbours (dy, dx) of a pixel
_NEIGHBOURS = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]


def _neighbour_min(labels: torch.Tensor, sentinel: int) -> torch.Tensor:
    """Per pixel, the smallest label among itself and its 8 neighbours ((B, H, W) int64)."""
    height, width = labels.shape[-2:]
    padded = F.pad(labels, (1, 1, 1, 1), value=sentinel)
    best = labels
    for dy, dx in _NEIGHBOURS:
        best = torch.minimum(best, padded[:, 1 + dy:1 + dy + height, 1 + dx:1 + dx + width])
    return best


def connected_components(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Label the 8-connected components of True pixels in each (H, W) slice.

    mask: (B, H, W) bool. Returns (labels, areas), both (B, H, W) int64: labels are 0 for False
    pixels and a positive id (shared by a component, unique within its slice) otherwise;
    areas hold each True pixel's component size (0 for False pixels). The ids are not
    renumbered consecutively; only their equality matters.

    Minimum-label propagation with pointer jumping: each pixel starts with its own flat index,
    takes the smallest label among its same-valued neighbours, then follows labels to their
    labels; a fixed point gives every component its smallest index.
    """
    if mask.dim() != 3:
        raise ValueError(f"expected a (B, H, W) mask, got shape {tuple(mask.shape)}")
    batch, height, width = mask.shape
    mask = mask.bool()
    count = height * width
    sentinel = count  # larger than every index; also the label of False pixels
    index = torch.arange(count, device=mask.device).reshape(1, height, width).expand(batch, -1, -1)
    labels = torch.where(mask, index, torch.full_like(index, sentinel))
    offsets = (torch.arange(batch, device=mask.device) * (count + 1))[:, None]
    while True:
        proposed = torch.where(mask, _neighbour_min(labels, sentinel), labels)
        # pointer jumping: a label is a pixel index whose own label is at least as small
        flat = proposed.reshape(batch, count)
        table = torch.cat((flat, torch.full((batch, 1), sentinel, device=mask.device, dtype=flat.dtype)), dim=1)
        while True:
            jumped = table.reshape(-1)[(table + offsets).reshape(-1)].reshape(batch, count + 1)
            if torch.equal(jumped, table):
                break
            table = jumped
        proposed = table[:, :count].reshape(batch, height, width)
        if torch.equal(proposed, labels):
            break
        labels = proposed
    flat = labels.reshape(batch, count)
    areas = torch.zeros(batch, count + 1, dtype=torch.long, device=mask.device)
    areas.scatter_add_(1, flat, torch.ones_like(flat))
    areas[:, count] = 0
    pixel_areas = areas.gather(1, flat).reshape(batch, height, width)
    ids = torch.where(mask, labels + 1, torch.zeros_like(labels))
    return ids, pixel_areas


def fill_small_holes(logits: torch.Tensor, max_area: float, threshold: float = 0.0,
                     fill_value: float = 10.0) -> torch.Tensor:
    """Turn small background regions of mask logits into foreground.

    logits: (..., H, W). Background is ``logits <= threshold``; each 8-connected background
    region of at most ``max_area`` pixels (whether or not it touches the border) is set to
    ``threshold + fill_value``. This is the official SAM 2 / SAM 3 mask post-processing.
    """
    if max_area <= 0:
        return logits
    shape = logits.shape
    flat = logits.reshape(-1, shape[-2], shape[-1])
    labels, areas = connected_components(flat <= threshold)
    holes = (labels > 0) & (areas <= max_area)
    filled = torch.where(holes, torch.full_like(flat, threshold + fill_value), flat)
    return filled.reshape(shape)
