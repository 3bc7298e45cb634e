"""The video tracker's memory parameters and the steps that use them.

``TrackerMemory`` holds every ``tracker.*`` tensor the single-image path does not use (see
``VIDEO_ONLY_PREFIXES`` in heads.py), under the checkpoint's names. It turns a prediction into a
memory (:meth:`encode`), a decoder output token into an object pointer (:meth:`object_pointer`),
and a frame plus a memory bank into memory-conditioned features for the mask decoder
(:meth:`condition`). Which memories a frame reads is decided in memory_bank.py.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from ...checkpoint import load_into
from ..common import MLP
from ..position import SinePositionEncoding
from .config import TrackerMemoryConfig
from .heads import VIDEO_ONLY_PREFIXES
from .memory_attention import MemoryTransformer
from .memory_bank import MemoryBank, MemoryPlan, plan_memory
from .memory_encoder import MemoryEncoder


def sine_1d(positions: torch.Tensor, dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """(N,) scalar positions -> (N, dim): [sin | cos] halves (not interleaved) at geometric frequencies."""
    half = dim // 2
    index = torch.arange(half, dtype=torch.float32, device=positions.device)
    freqs = temperature ** (2 * torch.div(index, 2, rounding_mode="floor") / half)
    angles = positions[:, None] / freqs
    return torch.cat((angles.sin(), angles.cos()), dim=-1)


class TrackerMemory(nn.Module):
    """State dict = the official video-only ``tracker.*`` keys (prefix stripped):
    ``maskmem_backbone.*``, ``transformer.encoder.*``, ``maskmem_tpos_enc`` (num_maskmem, 1, 1, mem_dim),
    ``no_mem_pos_enc`` (1, 1, dim), ``no_obj_ptr`` (1, dim), ``no_obj_embed_spatial`` (1, mem_dim),
    ``obj_ptr_proj.layers.{0,1,2}``, ``obj_ptr_tpos_proj``, ``mask_downsample``.
    """

    def __init__(self, config: TrackerMemoryConfig | None = None):
        super().__init__()
        config = config or TrackerMemoryConfig()
        if config.dim % config.mem_dim:
            raise ValueError("an object pointer is split into dim // mem_dim memory tokens")
        self.config = config
        self.maskmem_backbone = MemoryEncoder(config)
        self.transformer = MemoryTransformer(config)
        # temporal encoding of spatial memories, indexed num_maskmem - 1 - slot (slot 0: prompted frames)
        self.maskmem_tpos_enc = nn.Parameter(torch.zeros(config.num_maskmem, 1, 1, config.mem_dim))
        # in the checkpoint but unused at inference: the official code returns before reading it
        self.no_mem_pos_enc = nn.Parameter(torch.zeros(1, 1, config.dim))
        self.no_obj_ptr = nn.Parameter(torch.zeros(1, config.dim))
        self.no_obj_embed_spatial = nn.Parameter(torch.zeros(1, config.mem_dim))
        self.obj_ptr_proj = MLP(config.dim, config.dim, config.dim, 3)
        self.obj_ptr_tpos_proj = nn.Linear(config.dim, config.mem_dim)
        # a mask prompt (model-input size) -> low-res mask logits for the decoder's mask input
        self.mask_downsample = nn.Conv2d(1, 1, kernel_size=4, stride=4)
        self.frame_position = SinePositionEncoding(config.dim)

    # ---- writing memories ----
    def mask_for_memory(self, high_res_logits: torch.Tensor, from_points: bool) -> torch.Tensor:
        """Mask logits -> memory-encoder input: masks from clicks are binarised (as at training),
        others go through a sigmoid; then scaled to about [-10, 10]."""
        mask = (high_res_logits > 0).float() if from_points else torch.sigmoid(high_res_logits)
        return mask * self.config.sigmoid_scale_for_mem_enc + self.config.sigmoid_bias_for_mem_enc

    def encode(self, pix_feat: torch.Tensor, high_res_logits: torch.Tensor, object_score_logits: torch.Tensor,
               from_points: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C, e, e) raw frame features, (B, 1, S, S) mask logits, (B, 1) object scores ->
        (memory features (B, mem_dim, e, e), positions (B, mem_dim, e, e)). Objects judged absent
        get the learned no-object embedding added everywhere."""
        features, pos = self.maskmem_backbone(pix_feat, self.mask_for_memory(high_res_logits, from_points))
        absent = 1.0 - (object_score_logits > 0).float()
        features = features + absent[..., None, None] * self.no_obj_embed_spatial[..., None, None]
        return features, pos

    def object_pointer(self, token: torch.Tensor, object_score_logits: torch.Tensor) -> torch.Tensor:
        """(B, dim) decoder mask token -> (B, dim) pointer; the learned no-object pointer where the
        object is judged absent (score <= 0)."""
        present = (object_score_logits > 0).float()
        return present * self.obj_ptr_proj(token) + (1 - present) * self.no_obj_ptr

    # ---- reading memories ----
    def pointer_positions(self, distances: list[int], max_pointers: int, device: torch.device) -> torch.Tensor:
        """Signed frame distances -> (N, mem_dim): 1-D sine of distance / (max_pointers - 1), projected."""
        # a one-frame video would divide by zero in the official code; every distance is 0 then
        scale = max(max_pointers - 1, 1)
        positions = torch.tensor(distances, dtype=torch.float32, device=device) / scale
        return self.obj_ptr_tpos_proj(sine_1d(positions, self.config.dim))

    def memory_tokens(self, plan: MemoryPlan, dtype: torch.dtype,
                      device: torch.device) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Plan -> (memory (B, M, mem_dim), memory positions (B, M, mem_dim), number of pointer tokens)."""
        config = self.config
        tokens, positions = [], []
        for slot, frame in plan.spatial:
            tokens.append(frame.features.to(device=device, dtype=dtype).flatten(2).transpose(1, 2))
            pos = frame.pos.to(device=device, dtype=dtype).flatten(2).transpose(1, 2)
            positions.append(pos + self.maskmem_tpos_enc[config.num_maskmem - slot - 1].to(dtype))
        num_ptr_tokens = 0
        if plan.pointers:
            distances = [d for d, _ in plan.pointers]
            ptrs = torch.stack([f.obj_ptr.to(device=device, dtype=dtype) for _, f in plan.pointers], dim=1)  # (B, P, C)
            batch, count, dim = ptrs.shape
            ptr_pos = self.pointer_positions(distances, plan.max_pointers, device).to(dtype)  # (P, mem_dim)
            split = dim // config.mem_dim
            # each pointer becomes `split` consecutive tokens of mem_dim channels, sharing its position
            tokens.append(ptrs.reshape(batch, count * split, config.mem_dim))
            positions.append(ptr_pos.repeat_interleave(split, dim=0)[None].expand(batch, -1, -1))
            num_ptr_tokens = count * split
        batch = max(t.shape[0] for t in tokens)
        memory = torch.cat([t.expand(batch, -1, -1) for t in tokens], dim=1)
        memory_pos = torch.cat([p.expand(batch, -1, -1) for p in positions], dim=1)
        return memory, memory_pos, num_ptr_tokens

    def attend(self, image: torch.Tensor, memory: torch.Tensor, memory_pos: torch.Tensor, num_ptr_tokens: int,
               image_pos: torch.Tensor | None = None) -> torch.Tensor:
        """(B or 1, C, e, e) raw frame features + (B or 1, M, mem_dim) memory tokens -> (B, C, e, e)
        memory-conditioned features. A frame shared by all B objects can be passed once (batch 1):
        the work done before it meets the memories then runs once (see MemoryAttention)."""
        _, channels, height, width = image.shape
        batch = max(image.shape[0], memory.shape[0])
        if image_pos is None:
            image_pos = self.frame_position(image)
        tokens = image.flatten(2).transpose(1, 2)
        tokens_pos = image_pos.to(image.dtype).flatten(2).transpose(1, 2)
        out = self.transformer.encoder(tokens, tokens_pos, memory.expand(batch, -1, -1),
                                       memory_pos.expand(batch, -1, -1), num_ptr_tokens)
        return out.transpose(1, 2).reshape(batch, channels, height, width)

    def condition(self, image: torch.Tensor, frame_idx: int, bank: MemoryBank, num_frames: int,
                  reverse: bool = False, image_pos: torch.Tensor | None = None) -> torch.Tensor:
        """Memory-conditioned features of a frame that is not an initial prompted frame
        (those use ``image + no_mem_embed`` instead, see ``TrackerHeads.embed_image``)."""
        plan = plan_memory(frame_idx, bank, self.config, num_frames, reverse)
        memory, memory_pos, num_ptr_tokens = self.memory_tokens(plan, image.dtype, image.device)
        return self.attend(image, memory, memory_pos, num_ptr_tokens, image_pos)

    def mask_prompt_logits(self, masks: torch.Tensor) -> torch.Tensor:
        """(B, 1, 16e', 16e') float mask prompt -> (B, 1, 4e', 4e') logits for the decoder's mask input."""
        return self.mask_downsample(masks.float())


def tracker_memory_state(tracker_state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The video-only subset of a ``SplitCheckpoint.tracker`` dict (``tracker.`` already stripped)."""
    return {k: v for k, v in tracker_state.items() if k.startswith(VIDEO_ONLY_PREFIXES)}


def load_tracker_memory(tracker_state: Mapping[str, torch.Tensor], config: TrackerMemoryConfig | None = None,
                        device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> TrackerMemory:
    """Build :class:`TrackerMemory` from ``SplitCheckpoint.tracker``; image-path keys are ignored."""
    memory = TrackerMemory(config)
    load_into(memory, tracker_memory_state(tracker_state), source="tracker checkpoint")
    return memory.to(device=device, dtype=dtype).eval()
