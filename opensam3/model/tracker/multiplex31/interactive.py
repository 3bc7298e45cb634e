"""SAM 3.1's interactive head: clicks, boxes and mask prompts for one object at a time.

SAM 3.1 splits SAM 3's single tracker head in two (docs/sam31_multiplex_notes.md, section 2.0):
propagation runs per bucket through the multiplex decoder (step.py), while a prompt is decoded
per object by a stock SAM prompt encoder + mask decoder on the frame's features plus a learned
"no memory" vector, with its own pointer projection. The layout is SAM 3's heads under new names.

State dict (official ``tracker.model.*``, prefix stripped): ``interactive_sam_prompt_encoder.*`` and
``interactive_sam_mask_decoder.*`` (SAM 3's ``sam_prompt_encoder.*`` / ``sam_mask_decoder.*``
layout), ``interactive_obj_ptr_proj.layers.{0,1,2}``, ``interactivity_no_mem_embed`` (1, 1, C),
``interactive_mask_downsample`` (Conv 1->1, kernel 4, stride 4).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...common import MLP
from ..mask_decoder import DecodedMasks, MaskDecoder
from ..prompt_encoder import PromptEncoder
from ..tracking import run_heads, use_multimask
from .config import MultiplexTrackerConfig

# a mask prompt's logits: inside / outside (official mask-as-output values)
MASK_PROMPT_LOGIT = 10.0


class InteractiveHead(nn.Module):
    """Decodes one object's prompt on a frame without memory (see the module docstring)."""

    def __init__(self, config: MultiplexTrackerConfig | None = None):
        super().__init__()
        config = config or MultiplexTrackerConfig()
        self.config = config
        heads_config = config.interactive_heads_config()
        self.heads_config = heads_config
        self.interactive_sam_prompt_encoder = PromptEncoder(heads_config)
        self.interactive_sam_mask_decoder = MaskDecoder(heads_config)
        self.interactive_obj_ptr_proj = MLP(config.dim, config.dim, config.dim, 3)
        self.interactivity_no_mem_embed = nn.Parameter(torch.zeros(1, 1, config.dim))
        self.interactive_mask_downsample = nn.Conv2d(1, 1, kernel_size=4, stride=4)

    # the names ``run_heads`` reads (SAM 3's TrackerHeads interface)
    @property
    def sam_prompt_encoder(self) -> PromptEncoder:
        return self.interactive_sam_prompt_encoder

    @property
    def sam_mask_decoder(self) -> MaskDecoder:
        return self.interactive_sam_mask_decoder

    def decode(self, image: torch.Tensor, high_res: tuple[torch.Tensor, torch.Tensor], coords: torch.Tensor | None,
               labels: torch.Tensor | None, mask_logits: torch.Tensor | None, multimask_output: bool) -> DecodedMasks:
        """Raw decoder outputs for B prompts on one frame: ``image`` (B or 1, C, e, e) the raw top
        level; ``high_res`` projected by this head's ``conv_s0`` / ``conv_s1``."""
        conditioned = image + self.interactivity_no_mem_embed.reshape(1, -1, 1, 1).to(image.dtype)
        batch = coords.shape[0] if coords is not None else mask_logits.shape[0]
        conditioned = conditioned.expand(batch, -1, -1, -1)
        high_res = tuple(level.expand(batch, -1, -1, -1) for level in high_res)
        return run_heads(self, conditioned, high_res, coords, labels, mask_logits, multimask_output)

    def predict(self, image: torch.Tensor, high_res: tuple[torch.Tensor, torch.Tensor], coords: torch.Tensor,
                labels: torch.Tensor, no_obj_ptr_linear: nn.Linear
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Clicks / boxes (B, N, 2) + labels (B, N) -> (best low-res logits (B, 1, 4e, 4e), predicted
        IoU (B,), object score logits (B, 1), pointer (B, C)). Several candidates for a lone click,
        the best by predicted IoU (SAM's rule); absent objects get the no-object logits."""
        multimask = use_multimask(labels.shape[1])
        out = self.decode(image, high_res, coords, labels, None, multimask)
        rows = torch.arange(out.masks.shape[0], device=out.masks.device)
        pick = out.iou_scores.argmax(dim=-1) if multimask else torch.zeros_like(rows)
        tokens = out.mask_tokens[:, 1:] if multimask else out.mask_tokens[:, :1]
        masks = out.masks[rows, pick][:, None].float()
        present = out.object_score_logits > self.config.object_score_threshold
        masks = torch.where(present[:, :, None, None], masks, self.config.no_object_logit)
        pointer = self.pointer(tokens[rows, pick], out.object_score_logits, no_obj_ptr_linear)
        return masks, out.iou_scores[rows, pick], out.object_score_logits, pointer

    def mask_as_output(self, image: torch.Tensor, high_res: tuple[torch.Tensor, torch.Tensor], masks: torch.Tensor,
                       no_obj_ptr_linear: nn.Linear) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mask prompts (B, 1, S', S') at the memory encoder's input size -> (+-10 logits at that
        size, object score logits (B, 1) +-10 by emptiness, pointer (B, C) from the decoder fed the
        downsampled mask)."""
        masks = masks.float()
        logits = (2 * masks - 1) * MASK_PROMPT_LOGIT
        low = self.interactive_mask_downsample(masks.to(self.interactive_mask_downsample.weight.dtype))
        size = self.heads_config.low_res_size
        if tuple(low.shape[-2:]) != (size, size):
            low = F.interpolate(low.float(), size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        out = self.decode(image, high_res, None, None, low, False)
        present = (masks.flatten(1) > 0).any(dim=1, keepdim=True)
        score = torch.where(present, MASK_PROMPT_LOGIT, -MASK_PROMPT_LOGIT).to(out.object_score_logits.dtype)
        return logits, score, self.pointer(out.mask_tokens[:, 0], score, no_obj_ptr_linear)

    def pointer(self, token: torch.Tensor, object_score_logits: torch.Tensor, no_obj_ptr_linear: nn.Linear
                ) -> torch.Tensor:
        """Chosen mask token -> object pointer, absent objects mapped by the tracker's linear
        no-object map (official use_linear_no_obj_ptr, shared with propagation)."""
        pointer = self.interactive_obj_ptr_proj(token)
        present = (object_score_logits > self.config.object_score_threshold).to(pointer.dtype)
        return present * pointer + (1 - present) * no_obj_ptr_linear(pointer)
