"""Building the interactive video tracker from a loaded model or a checkpoint."""

from __future__ import annotations

import copy
import dataclasses
import os

import torch

from ..config import Sam3Config
from ..errors import CheckpointError, InvalidInputError
from ..model.tracker.config import TrackerMemoryConfig
from ..model.tracker.tracker_memory import TrackerMemory
from .video_tracker import VideoTracker


def tracker_memory_config(config: Sam3Config, use_memory_selection: bool = True) -> TrackerMemoryConfig:
    """The memory path that goes with a model config (see TrackerMemoryConfig.from_model_config)."""
    return TrackerMemoryConfig.from_model_config(config, use_memory_selection)


def build_video_tracker(sam, memory: TrackerMemory, tracker_dtype: torch.dtype = torch.float32,
                        **options) -> VideoTracker:
    """A :class:`VideoTracker` from a loaded ``Sam3`` (image model + tracker heads) and the
    tracker memory weights. The backbone keeps the model's dtype (bf16 is the fast path); the
    tracker heads and memory run in ``tracker_dtype`` (a float32 copy of bf16 heads is made, so
    the image predictor is untouched). ``options`` go to :class:`VideoTracker`."""
    heads = getattr(sam, "tracker", None)
    if heads is None:
        raise InvalidInputError("this model has no tracker weights, so it cannot track objects in video; "
                                "load the official sam3.pt (it carries tracker.* weights)")
    if next(heads.parameters()).dtype != tracker_dtype:
        heads = copy.deepcopy(heads).to(tracker_dtype)
    return VideoTracker(sam.model, heads, memory.to(tracker_dtype), **options)


def load_video_tracker(checkpoint: str | os.PathLike | None = None, config: Sam3Config | str | None = None,
                       device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                       use_memory_selection: bool = True, tracker_dtype: torch.dtype = torch.float32,
                       **options) -> VideoTracker:
    """Load the image model, the tracker heads and the tracker memory from one checkpoint
    (the official ``sam3.pt`` has all of them under ``detector.*`` / ``tracker.*``). ``dtype``
    is the backbone's (bfloat16 is about twice as fast on CPU); the tracker heads and memory,
    a small share of the cost, run in ``tracker_dtype``."""
    from ..api import load  # late: api imports the predictors

    sam = load(checkpoint, config=config, device=device, dtype=dtype, tracker_dtype=tracker_dtype)
    if sam.tracker is None or sam.memory is None:
        raise CheckpointError(f"{checkpoint or 'the default checkpoint'} has no tracker weights (tracker.*), so it "
                              "cannot track objects in video; use the official sam3.pt")
    if sam.memory.config.use_memory_selection != use_memory_selection:
        sam.memory.config = dataclasses.replace(sam.memory.config, use_memory_selection=use_memory_selection)
    return build_video_tracker(sam, sam.memory, tracker_dtype=tracker_dtype, **options)
