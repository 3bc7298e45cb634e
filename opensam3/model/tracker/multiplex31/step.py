"""One propagation step of SAM 3.1's multiplex tracker for one inference state (all its buckets).

memory attention (per bucket) -> multiplex decoder -> demux to objects -> absent objects'
masks set to -1024 -> best of K by predicted IoU -> object pointer (with the linear no-object
mixing) -> optionally the new bucket memory from the chosen masks. Which frames' memories are
read is decided by the caller (the selection rules are the same as SAM 3's, see memory_bank.py);
this step takes the selected memories. The interactive head (clicks, mask prompts) is not here.

:class:`MultiplexTracker` holds the propagation parameters under the official ``tracker.model.*``
names (prefix stripped): ``sam_mask_decoder.*``, ``maskmem_backbone.*``, ``transformer.encoder.*``,
``image_pe_layer.positional_encoding_gaussian_matrix`` (2, C/2), ``output_valid_embed`` /
``output_invalid_embed`` / ``no_obj_embed_spatial`` (M, C), ``maskmem_tpos_enc`` (num_maskmem, 1,
1, C), ``obj_ptr_proj.layers.{0,1,2}``, ``no_obj_ptr_linear``, ``obj_ptr_tpos_proj`` (C, C).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ...common import MLP
from ..memory_encoder import MemoryEncoder
from ..prompt_encoder import RandomFourierPositions
from ..tracker_memory import sine_1d
from ..tracking import FrameFeatures
from .config import MultiplexTrackerConfig
from .mask_decoder import MultiplexMaskDecoder, slot_embeddings
from .memory_attention import DecoupledMemoryTransformer
from .memory_encoder import add_absent_slots, memory_encoder_input
from .slots import SlotAssignment


@dataclass
class SpatialMemory:
    """One selected memory frame of the state: features (nb, C, e, e) bucket memory; image and
    image_pos (1, C, e, e) that frame's top-level propagation features and their sine encoding
    (stored alongside, official save_image_features); tpos_row: row of ``maskmem_tpos_enc``
    (see :func:`spatial_tpos_row`)."""

    features: torch.Tensor
    image: torch.Tensor
    image_pos: torch.Tensor
    tpos_row: int


@dataclass
class PointerMemory:
    """One selected frame's pointers in mux space (nb, M, C) and its temporal distance to the
    current frame (|frame difference| in the release config)."""

    pointers: torch.Tensor
    distance: int


@dataclass
class PropagationOutput:
    """Per object (data space): multimasks (N, K, 4e, 4e) logits (-1024 where absent); ious (N, K);
    low_res_masks (N, 1, 4e, 4e) and high_res_masks (N, 1, S, S) the best candidate;
    object_score_logits (N, 1); obj_ptr (N, C). memory_features / memory_pos (nb, C, e, e):
    this frame's bucket memory, or None when the memory encoder was skipped."""

    multimasks: torch.Tensor
    ious: torch.Tensor
    low_res_masks: torch.Tensor
    high_res_masks: torch.Tensor
    object_score_logits: torch.Tensor
    obj_ptr: torch.Tensor
    memory_features: torch.Tensor | None
    memory_pos: torch.Tensor | None


def spatial_tpos_row(distance: int, is_cond: bool, num_maskmem: int) -> int:
    """Row of ``maskmem_tpos_enc`` for a memory frame (official use_maskmem_tpos_v2).

    A tracked frame d frames back (1 <= d < num_maskmem) gets row d - 1. A conditioning frame at
    signed distance d gets row num_maskmem - 1 - d when 1 <= d < num_maskmem (the reverse order of
    tracked frames, as in the official code), else the "out of range" row num_maskmem - 1.
    """
    if not is_cond:
        if not 1 <= distance < num_maskmem:
            raise ValueError(f"a tracked memory frame is 1..{num_maskmem - 1} frames back, got {distance}")
        return distance - 1
    return num_maskmem - 1 - distance if 1 <= distance < num_maskmem else num_maskmem - 1


def _tokens(x: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) -> (B, h w, C)."""
    return x.flatten(2).transpose(1, 2)


class MultiplexTracker(nn.Module):
    """The learned propagation modules of the SAM 3.1 tracker (state dict: module docstring)."""

    def __init__(self, config: MultiplexTrackerConfig | None = None):
        super().__init__()
        config = config or MultiplexTrackerConfig()
        self.config = config
        dim, slots = config.dim, config.multiplex_count
        self.sam_mask_decoder = MultiplexMaskDecoder(config)
        # SAM 3's encoder at these sizes: 2M input channels, memory width = hidden width (no out_proj)
        self.maskmem_backbone = MemoryEncoder(config.memory_config())
        self.transformer = DecoupledMemoryTransformer(config)
        self.image_pe_layer = RandomFourierPositions(dim // 2)
        self.output_valid_embed = nn.Parameter(torch.zeros(slots, dim))
        self.output_invalid_embed = nn.Parameter(torch.zeros(slots, dim))
        self.no_obj_embed_spatial = nn.Parameter(torch.zeros(slots, dim))
        self.maskmem_tpos_enc = nn.Parameter(torch.zeros(config.num_maskmem, 1, 1, dim))
        self.obj_ptr_proj = MLP(dim, dim, dim, 3)
        self.no_obj_ptr_linear = nn.Linear(dim, dim)
        self.obj_ptr_tpos_proj = nn.Linear(dim, dim)

    def dense_pe(self) -> torch.Tensor:
        """(1, C, e, e) random-Fourier encoding of the decoder's grid."""
        size = self.config.embedding_size
        return self.image_pe_layer.grid(size, size)[None]

    def pointer_positions(self, distances: list[int], num_frames: int, device: torch.device) -> torch.Tensor:
        """Frame distances -> (len, C): sine of distance / (min(num_frames, max pointers) - 1), projected."""
        # a one-frame clip would divide by zero in the official code; all distances are 0 then
        scale = max(min(num_frames, self.config.max_obj_ptrs_in_encoder) - 1, 1)
        positions = torch.tensor(distances, dtype=torch.float32, device=device) / scale
        weight = self.obj_ptr_tpos_proj.weight
        return self.obj_ptr_tpos_proj(sine_1d(positions, self.config.dim).to(weight.dtype))

    def condition(self, features: FrameFeatures, num_buckets: int, spatial: list[SpatialMemory],
                  pointers: list[PointerMemory], num_frames: int) -> torch.Tensor:
        """Memory-conditioned bucket features (nb, C, e, e). Without a spatial memory the raw
        frame is used (official fallback, pointers alone are not attended to)."""
        image = features.image
        if not spatial:
            return image.expand(num_buckets, -1, -1, -1)
        dtype, device = image.dtype, image.device
        pos = features.pos if features.pos is not None else self.maskmem_backbone.position_encoding(image)
        memory = [_tokens(m.features.to(device=device, dtype=dtype)) for m in spatial]
        memory_image = [_tokens(m.image.to(device=device, dtype=dtype)) for m in spatial]
        memory_image_pos = [_tokens(m.image_pos.to(device=device, dtype=dtype)) + self.maskmem_tpos_enc[m.tpos_row]
                            for m in spatial]
        pointer_pos = None
        if pointers:
            memory += [p.pointers.to(device=device, dtype=dtype) for p in pointers]
            slots = pointers[0].pointers.shape[1]
            # one position per frame, shared by its M slot pointers (frame-major, slot-minor)
            pointer_pos = self.pointer_positions([p.distance for p in pointers], num_frames, device)
            pointer_pos = pointer_pos.repeat_interleave(slots, dim=0)
        out = self.transformer.encoder(
            _tokens(image), _tokens(pos.to(dtype)), torch.cat(memory_image, dim=1), torch.cat(memory_image_pos, dim=1),
            torch.cat([m.expand(num_buckets, -1, -1) for m in memory], dim=1), pointer_pos, num_buckets)
        _, channels, height, width = image.shape
        return out.transpose(1, 2).reshape(num_buckets, channels, height, width)

    def object_pointer(self, token: torch.Tensor, object_score_logits: torch.Tensor) -> torch.Tensor:
        """(N, C) chosen mask token -> (N, C) pointer; absent objects get the linear
        no-object map of their own pointer (official use_linear_no_obj_ptr)."""
        pointer = self.obj_ptr_proj(token)
        present = (object_score_logits > self.config.object_score_threshold).to(pointer.dtype)
        return present * pointer + (1 - present) * self.no_obj_ptr_linear(pointer)

    def encode_memory(self, image: torch.Tensor, mask_logits: torch.Tensor, object_score_logits: torch.Tensor,
                      slots: SlotAssignment, conditioning: torch.Tensor | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """Frame (1, C, e, e), per-object mask logits (N, 1, H, W), scores (N, 1), conditioning
        flags (N,) bool (None: no object conditioning) -> bucket memory and positions (nb, C, e, e)."""
        if conditioning is None:
            conditioning = torch.zeros(slots.num_objects, dtype=torch.bool, device=mask_logits.device)
        masks = memory_encoder_input(mask_logits, conditioning, slots, self.config)
        features, pos = self.maskmem_backbone(image, masks)
        features = add_absent_slots(features, object_score_logits, self.no_obj_embed_spatial, slots,
                                    self.config.object_score_threshold)
        return features, pos


def propagate(tracker: MultiplexTracker, features: FrameFeatures, slots: SlotAssignment,
              spatial: list[SpatialMemory], pointers: list[PointerMemory], num_frames: int,
              conditioning: torch.Tensor | None = None, run_mem_encoder: bool = True) -> PropagationOutput:
    """Track every object of the state on one frame. ``features``: the frame's propagation
    levels, batch 1 (image (1, C, e, e) raw top level; high_res already projected by
    ``sam_mask_decoder.project_high_res``; pos or None)."""
    config = tracker.config
    image = features.image
    conditioned = tracker.condition(features, slots.num_buckets, spatial, pointers, num_frames)
    embed = slot_embeddings(slots.valid_mask(image.device), tracker.output_valid_embed, tracker.output_invalid_embed)
    out = tracker.sam_mask_decoder(conditioned, tracker.dense_pe().to(image.dtype), features.high_res,
                                   embed.to(image.dtype))
    masks, ious = slots.demux(out.masks), slots.demux(out.ious)
    scores, tokens = slots.demux(out.object_score_logits), slots.demux(out.tokens)

    present = scores > config.object_score_threshold
    multimasks = torch.where(present[:, :, None, None], masks, config.no_object_logit).float()
    rows = torch.arange(multimasks.shape[0], device=image.device)
    best = ious.argmax(dim=-1)
    low = multimasks[rows, best][:, None]
    # only the chosen candidate goes up to the input size (bilinear acts per channel: the same
    # values as resizing every candidate and then choosing, without 2 in 3 of the work)
    high = F.interpolate(low, size=(config.image_size,) * 2, mode="bilinear", align_corners=False)
    obj_ptr = tracker.object_pointer(tokens[rows, best], scores)

    mem_features = mem_pos = None
    if run_mem_encoder:
        mem_features, mem_pos = tracker.encode_memory(image, high, scores, slots, conditioning)
    return PropagationOutput(multimasks, ious, low, high, scores, obj_ptr, mem_features, mem_pos)
