"""Simple feature pyramid on top of the ViT trunk (ViTDet "simple FPN"), optionally doubled.

SAM 3 keeps two pyramids with identical structure and separate weights over one trunk:
``convs`` feeds the detector, ``sam2_convs`` the SAM 2 style tracker / point-prompt decoder.
SAM 3.1 keeps three: ``convs``, ``interactive_convs`` (its per-object prompt head) and
``propagation_convs`` (the multiplex tracker).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from opensam3.config import VisionConfig
from opensam3.model.position import SinePositionEncoding
from opensam3.model.vision.vit import VisionTransformer


@dataclass
class VisionFeatures:
    """Pyramid outputs, every list ordered from highest to lowest resolution.

    With scale factors (4, 2, 1, 0.5) and an S x S image at patch size p (grid g = S / p):
    level i has shape (B, neck_dim, g * scale_i, g * scale_i), i.e. strides p/4, p/2, p, 2p
    (for 1008 px: 288, 144, 72, 36). ``*_pos`` are the matching sine position encodings
    (B, neck_dim, h_i, w_i) in the features' dtype; they are batch-expanded views (treat as
    read-only). ``tracker`` / ``tracker_pos`` are None when the config has no tracker neck.
    Note: the official image model then drops the last (0.5x) level of both pyramids.
    """

    detector: list[torch.Tensor]
    detector_pos: list[torch.Tensor]
    tracker: list[torch.Tensor] | None
    tracker_pos: list[torch.Tensor] | None


def _pyramid_level(dim: int, out_dim: int, scale: float) -> nn.Sequential:
    """Resample the trunk map by ``scale`` then project to ``out_dim`` (1x1 conv, 3x3 conv)."""
    level = nn.Sequential()
    if scale == 4.0:
        level.add_module("dconv_2x2_0", nn.ConvTranspose2d(dim, dim // 2, kernel_size=2, stride=2))
        level.add_module("gelu", nn.GELU())
        level.add_module("dconv_2x2_1", nn.ConvTranspose2d(dim // 2, dim // 4, kernel_size=2, stride=2))
        width = dim // 4
    elif scale == 2.0:
        level.add_module("dconv_2x2", nn.ConvTranspose2d(dim, dim // 2, kernel_size=2, stride=2))
        width = dim // 2
    elif scale == 1.0:
        width = dim
    elif scale == 0.5:
        level.add_module("maxpool_2x2", nn.MaxPool2d(kernel_size=2, stride=2))
        width = dim
    else:
        raise ValueError(f"unsupported pyramid scale factor {scale}")
    level.add_module("conv_1x1", nn.Conv2d(width, out_dim, kernel_size=1))
    level.add_module("conv_3x3", nn.Conv2d(out_dim, out_dim, kernel_size=3, padding=1))
    return level


class DualFPNNeck(nn.Module):
    """ViT trunk + detector pyramid (+ tracker pyramid when ``cfg.tracker_neck``).

    forward(images (B, 3, S, S) normalised float) -> :class:`VisionFeatures`.
    ``pyramid(trunk_map)`` runs the necks alone on a precomputed (B, embed_dim, g, g) trunk map.
    State dict: ``trunk.*``, ``convs.*`` and, with the tracker neck, ``sam2_convs.*``; with
    ``cfg.multiplex_necks`` (SAM 3.1) ``interactive_convs.*`` and ``propagation_convs.*`` instead.
    """

    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.cfg = cfg
        self.trunk = VisionTransformer(cfg)
        self.position_encoding = SinePositionEncoding(cfg.neck_dim)
        self.convs = self._pyramid(cfg)
        self.sam2_convs: nn.ModuleList | None = None
        if cfg.tracker_neck:
            self.sam2_convs = self._pyramid(cfg)
        self.interactive_convs: nn.ModuleList | None = None
        self.propagation_convs: nn.ModuleList | None = None
        if cfg.multiplex_necks:
            self.interactive_convs = self._pyramid(cfg)
            self.propagation_convs = self._pyramid(cfg)

    @staticmethod
    def _pyramid(cfg: VisionConfig) -> nn.ModuleList:
        return nn.ModuleList(_pyramid_level(cfg.embed_dim, cfg.neck_dim, s) for s in cfg.scale_factors)

    def detector_levels(self, trunk_map: torch.Tensor, count: int | None = None) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The first ``count`` detector levels (all by default) and their position encodings."""
        return self._levels(self.convs, trunk_map, count)

    def tracker_levels(self, trunk_map: torch.Tensor, count: int | None = None) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The first ``count`` levels of the pyramid the click / box decoder reads, and their
        encodings: SAM 3's tracker neck, or SAM 3.1's interactive one."""
        convs = self.sam2_convs if self.sam2_convs is not None else self.interactive_convs
        if convs is None:
            raise ValueError("this vision backbone was built without the tracker neck")
        return self._levels(convs, trunk_map, count)

    @property
    def has_tracker_levels(self) -> bool:
        return self.sam2_convs is not None or self.interactive_convs is not None

    def multiplex_levels(self, trunk_map: torch.Tensor, count: int | None = None
                         ) -> tuple[tuple[list[torch.Tensor], list[torch.Tensor]], tuple[list[torch.Tensor], list[torch.Tensor]]]:
        """SAM 3.1: (interactive levels, encodings) and (propagation levels, encodings)."""
        if self.interactive_convs is None or self.propagation_convs is None:
            raise ValueError("this vision backbone was built without SAM 3.1's interactive and propagation necks")
        return self._levels(self.interactive_convs, trunk_map, count), self._levels(self.propagation_convs, trunk_map, count)

    def _levels(self, convs: nn.ModuleList, trunk_map: torch.Tensor, count: int | None):
        features = [level(trunk_map) for level in list(convs)[:count]]
        return features, [self.position_encoding(f, f.dtype) for f in features]

    def pyramid(self, trunk_map: torch.Tensor) -> VisionFeatures:
        detector, detector_pos = [], []
        tracker = [] if self.sam2_convs is not None else None
        tracker_pos = [] if self.sam2_convs is not None else None
        for index, level in enumerate(self.convs):
            features = level(trunk_map)
            pos = self.position_encoding(features, features.dtype)
            detector.append(features)
            detector_pos.append(pos)
            if self.sam2_convs is not None:
                tracker_features = self.sam2_convs[index](trunk_map)
                tracker.append(tracker_features)
                # same grid as the detector level, hence the same encoding
                tracker_pos.append(pos)
        return VisionFeatures(detector, detector_pos, tracker, tracker_pos)

    def forward(self, images: torch.Tensor) -> VisionFeatures:
        return self.pyramid(self.trunk(images))


# Single name for callers that do not care whether the tracker pyramid is present.
FPNNeck = DualFPNNeck
