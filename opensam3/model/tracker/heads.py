"""The tracker's single-image path: SAM 2 prompt encoder + mask decoder on one frame, no memory.

Loaded from the official checkpoint's ``tracker.*`` (prefix stripped); only the keys below are
needed for images. The rest belong to video tracking (memory attention, memory encoder, object
pointers) and are skipped by :func:`tracker_image_state`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from ...checkpoint import load_into
from .config import TrackerHeadsConfig
from .mask_decoder import DecodedMasks, MaskDecoder
from .prompt_encoder import PromptEncoder

# ``tracker.*`` keys (prefix stripped) the single-image path uses
IMAGE_PATH_PREFIXES = ("sam_prompt_encoder.", "sam_mask_decoder.", "no_mem_embed")
# ``tracker.*`` keys used only when tracking through a video
VIDEO_ONLY_PREFIXES = ("transformer.", "maskmem_backbone.", "maskmem_tpos_enc", "no_mem_pos_enc", "no_obj_ptr",
                       "no_obj_embed_spatial", "obj_ptr_proj.", "obj_ptr_tpos_proj.", "mask_downsample.")


@dataclass
class TrackerImageEmbedding:
    """Per-image decoder inputs, computed once per image.

    image: (B, C, e, e) lowest tracker-neck level + no-memory embedding;
    high_res: ((B, C/8, 4e, 4e), (B, C/4, 2e, 2e)) projected higher levels.
    """

    image: torch.Tensor
    high_res: tuple[torch.Tensor, torch.Tensor]

    def select(self, index: int) -> "TrackerImageEmbedding":
        pick = slice(index, index + 1)
        return TrackerImageEmbedding(self.image[pick], (self.high_res[0][pick], self.high_res[1][pick]))


class TrackerHeads(nn.Module):
    """State dict: ``sam_prompt_encoder.*``, ``sam_mask_decoder.*``, ``no_mem_embed`` (1, 1, C),
    identical to the official ``tracker.*`` keys of those parts."""

    def __init__(self, config: TrackerHeadsConfig | None = None):
        super().__init__()
        config = config or TrackerHeadsConfig()
        self.config = config
        self.sam_prompt_encoder = PromptEncoder(config)
        self.sam_mask_decoder = MaskDecoder(config)
        # stands in for memory-conditioned features on a frame without memories (a single image)
        self.no_mem_embed = nn.Parameter(torch.zeros(1, 1, config.dim))

    def embed_image(self, tracker_fpn: list[torch.Tensor]) -> TrackerImageEmbedding:
        """Tracker-neck levels (B, C, 4e, 4e), (B, C, 2e, 2e), (B, C, e, e) -> decoder inputs."""
        if len(tracker_fpn) != 3:
            raise ValueError(f"expected 3 tracker feature levels, got {len(tracker_fpn)}")
        # The official neck hands out channels-last maps, and the decoder keeps that layout.
        # Same values either way, but convolutions and GEMMs over the image tokens pick their
        # summation order by layout; matching it makes float results agree bit for bit.
        level0, level1, level2 = (level.contiguous(memory_format=torch.channels_last) for level in tracker_fpn)
        s0, s1 = self.sam_mask_decoder.project_high_res(level0, level1)
        image = level2 + self.no_mem_embed.reshape(1, -1, 1, 1).to(level2.dtype)
        return TrackerImageEmbedding(image, (s0, s1))

    def forward(self, embedding: TrackerImageEmbedding, coords: torch.Tensor | None, labels: torch.Tensor | None,
                mask_logits: torch.Tensor | None, multimask_output: bool) -> DecodedMasks:
        """Decode masks for B prompts on one image (or B images with one prompt each).

        coords: (B, N, 2) xy in the square model-input frame (pixels of image_size), boxes as
        their two corners first (labels 2, 3); labels: (B, N) in {0, 1, 2, 3}; mask_logits:
        (B, 1, 4e, 4e) or None. Returns low-res logits (B, K, 4e, 4e), K = 3 or 1.
        """
        batch = coords.shape[0] if coords is not None else (mask_logits.shape[0] if mask_logits is not None else 1)
        sparse, dense = self.sam_prompt_encoder(coords, labels, mask_logits, batch_size=batch)
        dtype = embedding.image.dtype
        image_pe = self.sam_prompt_encoder.dense_positions().to(dtype)
        return self.sam_mask_decoder(embedding.image, image_pe, sparse.to(dtype), dense.to(dtype),
                                     embedding.high_res, multimask_output)


def tracker_image_state(tracker_state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The image-path subset of a ``SplitCheckpoint.tracker`` dict (``tracker.`` already stripped)."""
    return {k: v for k, v in tracker_state.items() if k.startswith(IMAGE_PATH_PREFIXES)}


def load_tracker_heads(tracker_state: Mapping[str, torch.Tensor], config: TrackerHeadsConfig | None = None,
                       device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> TrackerHeads:
    """Build :class:`TrackerHeads` from ``SplitCheckpoint.tracker``; video-only keys are ignored."""
    heads = TrackerHeads(config)
    load_into(heads, tracker_image_state(tracker_state), source="tracker checkpoint")
    return heads.to(device=device, dtype=dtype).eval()
