"""Building the interactive video tracker from a loaded model or a checkpoint."""

from __future__ import annotations

import copy
import dataclasses
import os

import torch

from ..checkpoint import MULTIPLEX_TRACKER_PREFIX, TRACKER_PREFIX, load_into, read_checkpoint, split_checkpoint
from ..config import Sam3Config, get_config
from ..errors import CheckpointError, InvalidInputError
from ..model.tracker.config import TrackerMemoryConfig
from ..model.tracker.multiplex31 import InteractiveHead, MultiplexTracker, MultiplexTrackerConfig
from ..model.tracker.tracker_memory import TrackerMemory
from .video_multiplex31 import Multiplex31VideoTracker
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
    if sam.model.config.vision.multiplex_necks:
        raise CheckpointError(f"{checkpoint} is a SAM 3.1 checkpoint: its tracker is the multiplex one, loaded by "
                              "opensam3.load_multiplex_tracker")
    if sam.tracker is None or sam.memory is None:
        raise CheckpointError(f"{checkpoint or 'the default checkpoint'} has no tracker weights (tracker.*), so it "
                              "cannot track objects in video; use the official sam3.pt")
    if sam.memory.config.use_memory_selection != use_memory_selection:
        sam.memory.config = dataclasses.replace(sam.memory.config, use_memory_selection=use_memory_selection)
    return build_video_tracker(sam, sam.memory, tracker_dtype=tracker_dtype, **options)


def is_multiplex31_checkpoint(checkpoint: str | os.PathLike | None) -> bool:
    """Whether the file holds SAM 3.1's multiplex tracker (``tracker.model.*``), told from its tensor
    names alone so that the weights are read once, by the loader that fits them."""
    from ..api import resolve_checkpoint
    from ..checkpoint import checkpoint_keys

    return any(key.startswith(MULTIPLEX_TRACKER_PREFIX) for key in checkpoint_keys(resolve_checkpoint(checkpoint)))


def load_multiplex_tracker(checkpoint: str | os.PathLike, config: Sam3Config | str | None = None,
                           tracker_config: MultiplexTrackerConfig | None = None, device: torch.device | str = "cpu",
                           dtype: torch.dtype = torch.float32, tracker_dtype: torch.dtype = torch.float32,
                           **options) -> Multiplex31VideoTracker:
    """SAM 3.1's multiplex video tracker from an official checkpoint (``sam3.1_multiplex.pt``:
    ``detector.*`` on the three-pyramid backbone, ``tracker.model.*``) or an opensam3 file of the
    same layout. ``config``: the image model's (default: from the file, else inferred: "sam3.1");
    ``tracker_config``: the tracker's (default: the release sizes at the image model's resolution
    and width). ``dtype`` is the backbone's, ``tracker_dtype`` the heads'; ``options`` go to
    :class:`Multiplex31VideoTracker`."""
    from ..api import _metadata_config, build_model, infer_config, resolve_checkpoint

    path = resolve_checkpoint(checkpoint)
    # cast while reading: no float32 copy next to a bf16 model
    state = read_checkpoint(path, lambda key: tracker_dtype if key.startswith(MULTIPLEX_TRACKER_PREFIX) else dtype)
    split = split_checkpoint(state)  # drops recomputed tables; SAM 3.1's tracker keys keep "model."
    inner = MULTIPLEX_TRACKER_PREFIX[len(TRACKER_PREFIX):]
    tracker_state = {k[len(inner):]: v for k, v in split.tracker.items() if k.startswith(inner)}
    if not tracker_state:
        hint = (" (it has SAM 3's tracker.*: use opensam3.load_video_tracker)" if split.tracker else "")
        raise CheckpointError(f"{path} has no SAM 3.1 tracker weights (tracker.model.*){hint}")
    config = get_config(config) if isinstance(config, str) else config
    config = config or _metadata_config(path) or infer_config(split.detector)
    if not config.vision.multiplex_necks:
        raise CheckpointError(f"{path}: the image model config {config.name!r} has no SAM 3.1 interactive and "
                              "propagation necks; pass config='sam3.1' (or a config with multiplex_necks=True)")
    try:
        model = build_model(config, split.detector, device=device, dtype=dtype)
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    tracker_config = tracker_config or dataclasses.replace(
        MultiplexTrackerConfig(), image_size=config.image_size, backbone_stride=config.vision.patch_size,
        dim=config.vision.neck_dim)
    interactive, tracker = InteractiveHead(tracker_config), MultiplexTracker(tracker_config)
    # one official module holds both; each of ours takes its own names, and nothing may be left over
    names = set(interactive.state_dict())
    load_into(interactive, {k: v for k, v in tracker_state.items() if k in names}, f"{path} (tracker.model.interactive*)")
    load_into(tracker, {k: v for k, v in tracker_state.items() if k not in names}, f"{path} (tracker.model.*)")
    interactive, tracker = (m.to(device=device, dtype=tracker_dtype) for m in (interactive, tracker))
    return Multiplex31VideoTracker(model, interactive, tracker, **options)
