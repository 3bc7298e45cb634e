"""Sizes of the SAM-2-style tracker heads (prompt encoder + mask decoder)."""

from __future__ import annotations

from dataclasses import dataclass

from ...config import Sam3Config


@dataclass(frozen=True)
class TrackerHeadsConfig:
    image_size: int = 1008
    backbone_stride: int = 14
    dim: int = 256
    mask_in_chans: int = 16
    transformer_depth: int = 2
    transformer_heads: int = 8
    transformer_mlp_dim: int = 2048
    attention_downsample: int = 2
    num_multimask_outputs: int = 3
    iou_head_depth: int = 3
    iou_head_hidden: int = 256
    # single-mask requests fall back to the best multimask output when the single mask's
    # logits are unstable: IoU(logits > delta, logits > -delta) < thresh
    stability_delta: float = 0.05
    stability_thresh: float = 0.98

    @property
    def embedding_size(self) -> int:
        """Side of the lowest-resolution feature map the decoder attends to (72 at full size)."""
        return self.image_size // self.backbone_stride

    @property
    def low_res_size(self) -> int:
        """Side of the decoder's mask logits and of a mask prompt (288 at full size)."""
        return 4 * self.embedding_size

    @classmethod
    def from_model_config(cls, config: Sam3Config) -> "TrackerHeadsConfig":
        """The heads that go with a model config. The widths follow the tracker neck: ``dim`` is
        the neck width, one attention head per 32 channels, the token MLP 8x and the IoU head 1x
        the width (the official 8 heads and 256 / 2048 / 256 at the full size; 4 heads and
        128 / 1024 / 128 for the embedded model), so a saved model's heads are rebuilt from its
        config alone."""
        dim = config.vision.neck_dim
        return cls(image_size=config.vision.image_size, backbone_stride=config.vision.patch_size, dim=dim,
                   transformer_heads=max(1, dim // 32), transformer_mlp_dim=8 * dim, iou_head_hidden=dim)


@dataclass(frozen=True)
class TrackerMemoryConfig:
    """Sizes and rules of the video tracker's memory path (official ``build_tracker`` values)."""

    image_size: int = 1008
    backbone_stride: int = 14
    dim: int = 256
    mem_dim: int = 64
    # memory encoder: the mask is resized to 16x the feature grid (1152 at full size), then
    # 4 stride-2 convs bring it down to the grid; a 2-block ConvNeXt fuser mixes it with the frame
    mask_stride: int = 2
    mask_total_stride: int = 16
    mask_kernel: int = 3
    mask_padding: int = 1
    # the downsampler's input channels, and the width its first conv multiplies by stride**2
    # (SAM 3: one mask channel, 1 -> 4; SAM 3.1 multiplex: 16 masks + 16 flags, 32 -> 16)
    mask_in_channels: int = 1
    mask_first_channels: int = 1
    fuser_layers: int = 2
    fuser_kernel: int = 7
    # memory attention
    attention_layers: int = 4
    attention_heads: int = 1
    attention_ffn: int = 2048
    rope_theta: float = 10000.0
    # memory bank
    num_maskmem: int = 7
    max_cond_frames_in_attn: int = 4
    keep_first_cond_frame: bool = False
    max_obj_ptrs_in_encoder: int = 16
    memory_temporal_stride: int = 1
    # official video model default (SAM2Long-style filter of past frames by their scores)
    use_memory_selection: bool = False
    memory_selection_threshold: float = 0.01
    # predicted mask logits -> memory-encoder input: sigmoid (or > 0 for click-driven masks) * 20 - 10
    sigmoid_scale_for_mem_enc: float = 20.0
    sigmoid_bias_for_mem_enc: float = -10.0

    @property
    def embedding_size(self) -> int:
        return self.image_size // self.backbone_stride

    @classmethod
    def from_model_config(cls, config: Sam3Config, use_memory_selection: bool = True) -> "TrackerMemoryConfig":
        """The memory path that goes with a model config (official ``build_tracker`` values at full
        size; the official SAM 3 video model turns memory selection on)."""
        dim = config.vision.neck_dim
        # memories are a quarter of the width and the attention MLP 8x it: the official 64 and
        # 2048 at 256 channels; 32 and 1024 for the embedded model
        return cls(image_size=config.vision.image_size, backbone_stride=config.vision.patch_size, dim=dim,
                   mem_dim=dim // 4, attention_ffn=8 * dim, use_memory_selection=use_memory_selection)

    @property
    def mask_input_size(self) -> int:
        """Side of the masks the memory encoder downsamples (1152 at full size)."""
        return self.mask_total_stride * self.embedding_size
