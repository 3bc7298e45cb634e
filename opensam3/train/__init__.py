"""Training the SAM 3 detector (``opensam3 train --config CONFIG --data DIR``).

matcher: Hungarian assignment of queries to ground-truth instances.
losses:  SAM 3's detection losses, on every decoder layer.
data:    SA-Co / COCO-style image-phrase datasets and batching.
optim:   AdamW parameter groups and the warm-up + cosine schedule.
trainer: the loop, checkpoint/resume, logging and held-out cgF1.
"""

from opensam3.train.data import Batch, SacoDataset, collate
from opensam3.train.losses import LossWeights, SetCriterion
from opensam3.train.matcher import HungarianMatcher
from opensam3.train.trainer import TrainSettings, Trainer

__all__ = ["Batch", "HungarianMatcher", "LossWeights", "SacoDataset", "SetCriterion", "TrainSettings", "Trainer",
           "collate"]
