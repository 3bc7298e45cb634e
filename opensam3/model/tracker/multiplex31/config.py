"""Sizes and rules of SAM 3.1's "Object Multiplex" propagation tracker.

The defaults are the release values of the official ``build_sam3_multiplex_video_model`` (see
docs/sam31_multiplex_notes.md, sections 2-3). :data:`TINY_MULTIPLEX` is a small variant for tests.
The existing SAM 3 building blocks are parametrised by ``TrackerHeadsConfig`` /
``TrackerMemoryConfig``; the two ``*_config`` methods translate this config into those.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..config import TrackerHeadsConfig, TrackerMemoryConfig


@dataclass(frozen=True)
class MultiplexTrackerConfig:
    image_size: int = 1008
    backbone_stride: int = 14
    # hidden width of the decoder / memory attention; the memory width is the same (no out_proj)
    dim: int = 256
    # slots per bucket (official multiplex_count); every slot has its own learned tokens
    multiplex_count: int = 16
    # mask candidates per slot; there is no single-mask token (multimask_outputs_only)
    masks_per_slot: int = 3
    # mask decoder (two-way transformer and heads)
    decoder_depth: int = 2
    decoder_heads: int = 8
    decoder_mlp_dim: int = 2048
    attention_downsample: int = 2
    iou_head_depth: int = 3
    iou_head_hidden: int = 256
    # memory attention (decoupled transformer)
    attention_layers: int = 4
    attention_heads: int = 8
    attention_ffn: int = 2048
    rope_theta: float = 10000.0
    # scale of the frame's sine encoding added once to the attention input (pos_enc_at_input)
    input_pos_scale: float = 0.1
    # memory encoder: per slot a mask channel and a conditioning channel; stride-2 3x3 convs
    # from 16x the feature grid down to it, widths first_channels * 4, * 16, ... (16->64->256->1024)
    mask_channels_per_slot: int = 2
    mask_first_channels: int = 4
    mask_stride: int = 2
    mask_total_stride: int = 16
    mask_kernel: int = 3
    mask_padding: int = 1
    fuser_layers: int = 2
    fuser_kernel: int = 7
    # mask logits -> memory-encoder input: sigmoid * scale + bias (about [-1, 1])
    sigmoid_scale_for_mem_enc: float = 2.0
    sigmoid_bias_for_mem_enc: float = -1.0
    # conditioning channel values for prompted and other objects (condition_as_mask_input)
    condition_fg: float = 1.0
    condition_bg: float = 0.0
    # memory bank sizes (the selection itself is outside this package)
    num_maskmem: int = 7
    max_obj_ptrs_in_encoder: int = 16
    max_cond_frames_in_attn: int = 4
    # an object is present where its score logit is above this
    object_score_threshold: float = 0.0
    # logits given to every pixel of an object judged absent
    no_object_logit: float = -1024.0

    # grid sizes follow SAM 3's rules (derived from the existing configs, not restated)
    @property
    def embedding_size(self) -> int:
        """Side of the feature grid (72 at full size)."""
        return self.heads_config().embedding_size

    @property
    def low_res_size(self) -> int:
        """Side of the decoder's mask logits (288 at full size)."""
        return self.heads_config().low_res_size

    @property
    def mask_input_size(self) -> int:
        """Side of the masks the memory encoder downsamples (1152 at full size)."""
        return self.memory_config().mask_input_size

    @property
    def mask_in_channels(self) -> int:
        """Input channels of the memory encoder's first conv (32 at full size)."""
        return self.mask_channels_per_slot * self.multiplex_count

    def heads_config(self) -> TrackerHeadsConfig:
        """The SAM decoder sizes for the shared (non per-slot) decoder parts. SAM's decoder adds a
        single-mask token to its multimask outputs; asking it for one multimask output fewer yields
        exactly ``masks_per_slot`` hypernetwork MLPs and IoU outputs."""
        return TrackerHeadsConfig(
            image_size=self.image_size, backbone_stride=self.backbone_stride, dim=self.dim,
            transformer_depth=self.decoder_depth, transformer_heads=self.decoder_heads,
            transformer_mlp_dim=self.decoder_mlp_dim, attention_downsample=self.attention_downsample,
            num_multimask_outputs=self.masks_per_slot - 1, iou_head_depth=self.iou_head_depth,
            iou_head_hidden=self.iou_head_hidden)

    def interactive_heads_config(self) -> TrackerHeadsConfig:
        """The interactive head: a stock SAM decoder (3 candidates + a single-mask token) at
        this tracker's widths."""
        return dataclasses.replace(self.heads_config(), num_multimask_outputs=self.masks_per_slot)

    def memory_config(self) -> TrackerMemoryConfig:
        """SAM 3's memory sizes with this tracker's widths (memory width = hidden width)."""
        return TrackerMemoryConfig(
            image_size=self.image_size, backbone_stride=self.backbone_stride, dim=self.dim, mem_dim=self.dim,
            mask_stride=self.mask_stride, mask_total_stride=self.mask_total_stride, mask_kernel=self.mask_kernel,
            mask_padding=self.mask_padding, fuser_layers=self.fuser_layers, fuser_kernel=self.fuser_kernel,
            attention_layers=self.attention_layers, attention_heads=self.attention_heads,
            attention_ffn=self.attention_ffn, rope_theta=self.rope_theta, num_maskmem=self.num_maskmem,
            max_cond_frames_in_attn=self.max_cond_frames_in_attn,
            max_obj_ptrs_in_encoder=self.max_obj_ptrs_in_encoder,
            sigmoid_scale_for_mem_enc=self.sigmoid_scale_for_mem_enc,
            sigmoid_bias_for_mem_enc=self.sigmoid_bias_for_mem_enc, mask_in_channels=self.mask_in_channels,
            mask_first_channels=self.mask_first_channels)


# a small model for tests: 4 slots, width 32 (2 heads of 16), an 8x8 grid (112 px input)
TINY_MULTIPLEX = MultiplexTrackerConfig(
    image_size=112, dim=32, multiplex_count=4, decoder_heads=2, decoder_mlp_dim=64, iou_head_hidden=32,
    attention_layers=2, attention_heads=2, attention_ffn=64, mask_first_channels=1)
