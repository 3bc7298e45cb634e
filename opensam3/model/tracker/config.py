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
        return cls(image_size=config.vision.image_size, backbone_stride=config.vision.patch_size)
