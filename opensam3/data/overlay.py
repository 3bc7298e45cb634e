"""Drawing masks, boxes and labels over an image for people to look at."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

# Distinct, saturated colours; instance i gets PALETTE[i % len(PALETTE)].
PALETTE: tuple[tuple[int, int, int], ...] = (
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
    (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212),
    (0, 128, 128), (220, 190, 255), (170, 110, 40), (128, 0, 0), (170, 255, 195), (0, 0, 128),
)


def draw_overlay(
    image: np.ndarray,
    masks: np.ndarray,
    boxes: np.ndarray | None = None,
    labels: Sequence[str] | None = None,
    alpha: float = 0.5,
) -> Image.Image:
    """Blend each (H, W) bool mask onto the (H, W, 3) uint8 image in its own colour, outline its
    box and write its label. Returns a new RGB PIL image; the input is not modified."""
    canvas = image.astype(np.float32).copy()
    for i, mask in enumerate(masks):
        colour = np.array(PALETTE[i % len(PALETTE)], dtype=np.float32)
        region = mask.astype(bool)
        canvas[region] = (1 - alpha) * canvas[region] + alpha * colour
    out = Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(out)
    if boxes is not None:
        for i, box in enumerate(boxes):
            colour = PALETTE[i % len(PALETTE)]
            x0, y0, x1, y1 = (float(v) for v in box)
            draw.rectangle([x0, y0, x1, y1], outline=colour, width=2)
            if labels is not None and i < len(labels):
                text = labels[i]
                text_box = draw.textbbox((x0, y0), text)
                top = max(0.0, y0 - (text_box[3] - text_box[1]) - 2)
                draw.rectangle([x0, top, x0 + (text_box[2] - text_box[0]) + 4, top + (text_box[3] - text_box[1]) + 2], fill=colour)
                draw.text((x0 + 2, top), text, fill=(0, 0, 0))
    return out
