"""Training the ViT trunk for detection without breaking what else reads it.

The shipped embedded model's click / box head and video memory read the trunk through the
tracker neck (``sam2_convs``). Training the trunk for the detector alone would move those
features and leave the heads reading something they were not trained on. The anchor keeps a
frozen copy of the starting trunk and tracker neck and adds a loss that holds the (trainable)
tracker neck's output on each training image where the copy puts it: the trunk may learn what
the detector needs, and the tracker neck learns to undo the change for the heads.

The loss is each level's mean squared difference relative to the target's mean square, averaged
over the levels the heads use, so its weight means the same at any feature scale.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from opensam3.errors import InvalidInputError
from opensam3.model.vision.neck import DualFPNNeck


class TrackerNeckAnchor:
    def __init__(self, neck: DualFPNNeck, levels: int):
        if neck.sam2_convs is None:
            raise InvalidInputError("holding the tracker neck needs a model that has one: --init a file with "
                                    "the click / box head (the shipped embedded model, or train-interactive's output)")
        self.levels = levels
        # frozen copies: the targets never change while the trunk and tracker neck train
        self.trunk = copy.deepcopy(neck.trunk).requires_grad_(False).eval()
        self.convs = copy.deepcopy(neck.sam2_convs).requires_grad_(False).eval()

    def _levels(self, convs: torch.nn.ModuleList, trunk_map: torch.Tensor) -> list[torch.Tensor]:
        return [conv(trunk_map) for conv in list(convs)[:self.levels]]

    def loss(self, neck: DualFPNNeck, trunk_map: torch.Tensor, starting_trunk_map: torch.Tensor) -> torch.Tensor:
        """How far the trained tracker neck, on the trained trunk's output, is from the starting
        tracker neck on the starting trunk's output."""
        with torch.no_grad():
            targets = self._levels(self.convs, starting_trunk_map)
        terms = [F.mse_loss(level, target) / target.pow(2).mean().clamp_min(1e-12)
                 for level, target in zip(self._levels(neck.sam2_convs, trunk_map), targets)]
        return torch.stack(terms).mean()
