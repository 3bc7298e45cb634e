"""One tracking step of one frame for B objects (official ``Sam3TrackerBase.track_step``, evaluation).

A frame with a mask prompt takes the mask itself as the prediction (the decoder only supplies the
object pointer). Otherwise the frame's features are conditioned on the memory bank (or, on an
initial prompted frame, just get the no-memory embedding), the prompt encoder + mask decoder
predict masks, and absent objects get placeholder logits. Finally the memory encoder turns the
prediction into this frame's memory.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .heads import TrackerHeads
from .mask_decoder import DecodedMasks
from .memory_bank import MemoryBank, MemoryFrame
from .tracker_memory import TrackerMemory

# logits given to every pixel of an object judged absent
NO_OBJ_SCORE = -1024.0
# (multimasks, ious, low-res best mask, high-res best mask, object pointer, object score logits)
HeadOutputs = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


@dataclass
class FrameFeatures:
    """A frame's tracker inputs, for B objects (or 1, broadcast).

    image: (B, C, e, e) lowest tracker-neck level, raw; high_res: the two higher levels already
    projected by the decoder's conv_s0 / conv_s1 ((B, C/8, 4e, 4e), (B, C/4, 2e, 2e));
    pos: (B or 1, C, e, e) sine encoding of the grid, or None to compute it.
    """

    image: torch.Tensor
    high_res: tuple[torch.Tensor, torch.Tensor]
    pos: torch.Tensor | None = None


@dataclass
class FrameOutput:
    """low_res_masks (B, 1, 4e, 4e) and high_res_masks (B, 1, S, S) best-mask logits;
    multimasks: (B, K, 4e, 4e) all decoder outputs; ious (B, K); obj_ptr (B, C);
    object_score_logits (B, 1); memory features/pos (None if the memory encoder was skipped);
    score: the memory-selection score of the frame."""

    low_res_masks: torch.Tensor
    high_res_masks: torch.Tensor
    multimasks: torch.Tensor
    ious: torch.Tensor
    obj_ptr: torch.Tensor
    object_score_logits: torch.Tensor
    memory_features: torch.Tensor | None
    memory_pos: torch.Tensor | None
    score: torch.Tensor

    def memory(self, dtype: torch.dtype | None = None) -> MemoryFrame:
        """This frame's bank entry; dtype=torch.bfloat16 stores memories as the official video predictor does."""
        features = self.memory_features
        if features is not None and dtype is not None:
            features = features.to(dtype)
        return MemoryFrame(features, self.memory_pos, self.obj_ptr, self.object_score_logits, float(self.score))


def use_multimask(num_points: int, max_points: int = 1) -> bool:
    """Official tracker rule: three candidate masks for at most one click (a box counts as two)."""
    return num_points <= max_points


def memory_score(object_score_logits: torch.Tensor, ious: torch.Tensor) -> torch.Tensor:
    """Memory-selection score: presence (sigmoid rescaled to [0, 1], 0 when absent) times the
    best predicted IoU. The official code multiplies (B, 1) by (B,) and averages the resulting
    (B, B) grid, i.e. mean(presence) * mean(IoU) over the objects; kept as is."""
    presence = torch.where(object_score_logits > 0, object_score_logits.sigmoid() * 2 - 1,
                           torch.zeros_like(object_score_logits))
    return (presence * ious.max(-1).values).mean()


def run_heads(heads: TrackerHeads, image: torch.Tensor, high_res: tuple[torch.Tensor, torch.Tensor],
              coords: torch.Tensor | None, labels: torch.Tensor | None, mask_logits: torch.Tensor | None,
              multimask_output: bool) -> DecodedMasks:
    """Prompt encoder + mask decoder on (memory-conditioned) frame features, raw outputs."""
    batch = image.shape[0]
    if coords is None:
        # no clicks: a single padding point (the prompt encoder appends a second one)
        coords = image.new_zeros(batch, 1, 2)
        labels = torch.full((batch, 1), -1, dtype=torch.long, device=image.device)
    size = heads.config.low_res_size
    if mask_logits is not None and tuple(mask_logits.shape[-2:]) != (size, size):
        mask_logits = F.interpolate(mask_logits.float(), size=(size, size), mode="bilinear", align_corners=False,
                                    antialias=True)
    sparse, dense = heads.sam_prompt_encoder(coords, labels, mask_logits, batch_size=batch)
    image_pe = heads.sam_prompt_encoder.dense_positions().to(image.dtype)
    return heads.sam_mask_decoder(image, image_pe, sparse.to(image.dtype), dense.to(image.dtype), high_res,
                                  multimask_output)


def select_outputs(heads: TrackerHeads, memory: TrackerMemory, out: DecodedMasks, multimask_output: bool) -> HeadOutputs:
    """Raw decoder outputs -> (multimasks, ious, low-res best, high-res best, obj_ptr, object score):
    absent objects get placeholder logits, the best candidate by predicted IoU is chosen."""
    batch = out.masks.shape[0]
    present = out.object_score_logits > 0
    multimasks = torch.where(present[:, None, None], out.masks, NO_OBJ_SCORE).float()
    image_size = heads.config.image_size
    high_multimasks = F.interpolate(multimasks, size=(image_size, image_size), mode="bilinear", align_corners=False)
    rows = torch.arange(batch, device=out.masks.device)
    if multimask_output:
        best = out.iou_scores.argmax(dim=-1)
        low, high = multimasks[rows, best][:, None], high_multimasks[rows, best][:, None]
        # the pointer comes from the chosen multimask token (use_multimask_token_for_obj_ptr)
        token = out.mask_tokens[:, 1:][rows, best]
    else:
        low, high = multimasks, high_multimasks
        token = out.mask_tokens[:, 0]
    obj_ptr = memory.object_pointer(token, out.object_score_logits)
    return multimasks, out.iou_scores, low, high, obj_ptr, out.object_score_logits


def decode(heads: TrackerHeads, memory: TrackerMemory, image: torch.Tensor, high_res: tuple[torch.Tensor, torch.Tensor],
           coords: torch.Tensor | None, labels: torch.Tensor | None, mask_logits: torch.Tensor | None,
           multimask_output: bool) -> HeadOutputs:
    """Official ``_forward_sam_heads``: -> (multimasks, ious, low-res best, high-res best, obj_ptr, object score)."""
    out = run_heads(heads, image, high_res, coords, labels, mask_logits, multimask_output)
    return select_outputs(heads, memory, out, multimask_output)


def mask_as_output(heads: TrackerHeads, memory: TrackerMemory, image: torch.Tensor,
                   high_res: tuple[torch.Tensor, torch.Tensor], masks: torch.Tensor) -> HeadOutputs:
    """Official ``_use_mask_as_output``: a (B, 1, S', S') mask prompt (S' = 16 * 4e, the memory
    encoder's input size) becomes +-10 logits; the decoder, fed the downsampled mask, gives the
    pointer. ``image`` is the raw frame level: the official code adds no no-memory embedding here."""
    masks = masks.float()
    high = masks * 20.0 - 10.0
    stride = heads.config.backbone_stride
    # 1152 // 14 * 4 = 328 at full size, not the decoder's 288: kept, it is the official output
    low = F.interpolate(high, size=(high.shape[-2] // stride * 4, high.shape[-1] // stride * 4), mode="bilinear",
                        align_corners=False, antialias=True)
    ious = masks.new_ones(masks.shape[0], 1)
    _, _, _, _, obj_ptr, _ = decode(heads, memory, image, high_res, None, None, memory.mask_prompt_logits(masks), False)
    present = (masks.flatten(1) > 0).any(dim=1, keepdim=True).float()
    object_score = 20.0 * present - 10.0
    obj_ptr = present * obj_ptr + (1 - present) * memory.no_obj_ptr
    return low, ious, low, high, obj_ptr, object_score


def track_step(heads: TrackerHeads, memory: TrackerMemory, features: FrameFeatures, frame_idx: int, bank: MemoryBank,
               num_frames: int, is_init_cond_frame: bool, coords: torch.Tensor | None = None,
               labels: torch.Tensor | None = None, mask_input: torch.Tensor | None = None,
               prev_mask_logits: torch.Tensor | None = None, reverse: bool = False,
               run_mem_encoder: bool = True) -> FrameOutput:
    """Track B objects on one frame. coords/labels: (B, N, 2) clicks in model-input pixels and
    (B, N) labels; mask_input: (B, 1, S', S') mask prompt (replaces the prediction);
    prev_mask_logits: (B, 1, 4e, 4e) earlier logits refined together with new clicks."""
    if mask_input is not None and coords is not None:
        raise ValueError("a frame takes either clicks or a mask prompt, not both")
    image = features.image
    if mask_input is not None:
        multimasks, ious, low, high, obj_ptr, score = mask_as_output(heads, memory, image, features.high_res,
                                                                    mask_input)
    else:
        if is_init_cond_frame:
            conditioned = image + heads.no_mem_embed.reshape(1, -1, 1, 1).to(image.dtype)
        else:
            conditioned = memory.condition(image, frame_idx, bank, num_frames, reverse, features.pos)
        num_points = 0 if labels is None else labels.shape[1]
        multimask = use_multimask(num_points)
        multimasks, ious, low, high, obj_ptr, score = decode(heads, memory, conditioned, features.high_res, coords,
                                                            labels, prev_mask_logits, multimask)
    mem_features = mem_pos = None
    if run_mem_encoder:
        mem_features, mem_pos = memory.encode(image, high, score, from_points=coords is not None)
    return FrameOutput(low, high, multimasks, ious, obj_ptr, score, mem_features, mem_pos, memory_score(score, ious))
