"""Vision backbone: ViT trunk with 2-D RoPE and the (dual) simple-FPN neck."""

from opensam3.model.vision.neck import DualFPNNeck, FPNNeck, VisionFeatures
from opensam3.model.vision.rope import AxialRope, apply_rope
from opensam3.model.vision.vit import VisionTransformer, window_partition, window_unpartition

__all__ = [
    "AxialRope",
    "DualFPNNeck",
    "FPNNeck",
    "VisionFeatures",
    "VisionTransformer",
    "apply_rope",
    "window_partition",
    "window_unpartition",
]
