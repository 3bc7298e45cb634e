"""A second, closer look at small objects for click / box prompts.

At the model's input size a small object covers few tokens (the embedded model sees a 20 px
object on about two of its 16 x 16 tokens), so its mask is coarse. After the usual prediction, a
square window around the chosen mask and the prompts is cut from the original image, encoded on
its own (the object now spans several tokens) and asked the same prompts; the window's masks are
pasted back. Objects whose window would cover most of the image are left as they are.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

# Window side / object side when zoom is asked for on a model whose config sets none: the object
# then fills about the share of the input that the embedded model's large objects do.
DEFAULT_ZOOM_MARGIN = 3.5
BACKGROUND_LOGIT = -32.0  # the low-res logits' clamp: outside the window is background


class ZoomWindow(NamedTuple):
    """A square of the original image, in pixels: columns left..left+side, rows top..top+side."""

    left: int
    top: int
    side: int

    def slices(self) -> tuple[slice, slice]:
        return slice(self.top, self.top + self.side), slice(self.left, self.left + self.side)


@dataclass(frozen=True)
class ZoomRule:
    """margin: window side / the object's longer box side, so the object fills 1/margin of it;
    min_fraction / max_fraction: window side bounds, as fractions of the image's shorter side
    (no zoom when the window would exceed max_fraction)."""

    margin: float
    min_fraction: float = 0.43
    max_fraction: float = 0.8

    def window(self, mask: np.ndarray, prompt_xy: np.ndarray) -> ZoomWindow | None:
        """The window around a predicted mask (H, W) bool and the prompt points / box corners
        (M, 2) x, y pixels; None when there is nothing to zoom on or the object is not small."""
        height, width = mask.shape
        rows, cols = np.nonzero(mask)
        xs = np.concatenate((cols, cols + 1, prompt_xy[:, 0])).astype(np.float64)
        ys = np.concatenate((rows, rows + 1, prompt_xy[:, 1])).astype(np.float64)
        if not len(rows):
            return None
        shorter = min(height, width)
        extent = max(xs.max() - xs.min(), ys.max() - ys.min())
        side = max(extent * self.margin, self.min_fraction * shorter)
        if side > self.max_fraction * shorter:
            return None
        side = int(round(side))
        left = int(round(min(max((xs.min() + xs.max() - side) / 2, 0), width - side)))
        top = int(round(min(max((ys.min() + ys.max() - side) / 2, 0), height - side)))
        return ZoomWindow(left, top, side)


def crop_low_res(logits: torch.Tensor, window: ZoomWindow, image_size: tuple[int, int]) -> torch.Tensor:
    """Full-image low-res logits (1, L, L) -> the window's part, resampled to (1, L, L)."""
    low = logits.shape[-1]
    height, width = image_size
    # the window in the low-res grid's continuous coordinates, sampled at the window's cell centres
    steps = (torch.arange(low, dtype=torch.float32) + 0.5) / low * window.side
    gx = (window.left + steps) / width * 2 - 1
    gy = (window.top + steps) / height * 2 - 1
    grid = torch.stack(torch.meshgrid(gy, gx, indexing="ij")[::-1], dim=-1)[None]
    return F.grid_sample(logits[None].float(), grid, mode="bilinear", align_corners=False,
                         padding_mode="border")[0]


def paste(window_logits: torch.Tensor, window: ZoomWindow, image_size: tuple[int, int]) -> torch.Tensor:
    """Window logits (K, side, side) -> (K, H, W) full-image logits, background outside the window."""
    height, width = image_size
    full = torch.full((window_logits.shape[0], height, width), BACKGROUND_LOGIT, dtype=window_logits.dtype)
    rows, cols = window.slices()
    full[:, rows, cols] = window_logits
    return full


def to_low_res(full_logits: torch.Tensor, low: int) -> torch.Tensor:
    """(K, H, W) full-image logits -> (K, L, L), the grid ``mask_input`` takes."""
    return F.interpolate(full_logits[None].float(), size=(low, low), mode="bilinear", align_corners=False,
                         antialias=True)[0]
