"""Building the interactive video tracker from a loaded model or a checkpoint."""

from __future__ import annotations

import copy
import os

import torch

from ..checkpoint import read_checkpoint, split_checkpoint
from ..config import Sam3Config, get_config
from ..errors import CheckpointError, InvalidInputError
from ..model.tracker.config import TrackerHeadsConfig, TrackerMemoryConfig
from ..model.tracker.heads import load_tracker_heads
from ..model.tracker.tracker_memory import TrackerMemory, load_tracker_memory
from .video_tracker import VideoTracker


def tracker_memory_config(config: Sam3Config, use_memory_selection: bool = True) -> TrackerMemoryConfig:
    """The memory path that goes with a model config (official ``build_tracker`` values; the
    official SAM 3 video model turns memory selection on)."""
    return TrackerMemoryConfig(image_size=config.vision.image_size, backbone_stride=config.vision.patch_size,
                               dim=config.vision.neck_dim, use_memory_selection=use_memory_selection)


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
    from .. import api  # late: api imports the predictors

    path = api.resolve_checkpoint(checkpoint)
    state = split_checkpoint(read_checkpoint(path))
    if isinstance(config, str):
        config = get_config(config)
    config = config or api._metadata_config(path) or api.infer_config(state.detector)
    if not state.tracker or not config.vision.tracker_neck:
        raise CheckpointError(f"{path} has no tracker weights (tracker.*), so it cannot track objects in video; "
                              "use the official sam3.pt")
    try:
        model = api.build_model(config, state.detector, device=device, dtype=dtype)
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    heads = load_tracker_heads(state.tracker, TrackerHeadsConfig.from_model_config(config), device=device,
                               dtype=tracker_dtype)
    memory = load_tracker_memory(state.tracker, tracker_memory_config(config, use_memory_selection), device=device,
                                 dtype=tracker_dtype)
    return VideoTracker(model, heads, memory, **options)
