"""What a training run reads and writes as whole models: the model it starts from (``--init``, read
once, with the click / box head and video memory the file carries) and the model file it exports.

Every read of ``--init`` goes through ``load_init`` here, so a full-size sam3.pt (3.4 GB) is read
once per run whether the CLI or the Trainer asks for it.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import torch
from torch import nn

from opensam3.api import CONFIG_METADATA_KEY, Sam3, build_model, load
from opensam3.checkpoint import save_checkpoint
from opensam3.config import Sam3Config, architecture_differences, config_to_dict
from opensam3.model.sam3 import Sam3ImageModel

if TYPE_CHECKING:
    from opensam3.train.trainer import TrainSettings


def export_model(model: Sam3ImageModel, path: Path, dtype: torch.dtype = torch.float32,
                 tracker: Sequence[nn.Module] = ()) -> None:
    """Write weights + config (safetensors) so ``opensam3.load(path)`` rebuilds the model, with
    ``tracker`` (click / box head, video memory) as its ``tracker.*`` weights.
    Only parameters are cast: buffers (coordinate tables) stay in their own precision."""
    if dtype != torch.float32:
        model, tracker = copy.deepcopy(model), [copy.deepcopy(part) for part in tracker]
        for part in (model, *tracker):
            for param in part.parameters():
                param.data = param.data.to(dtype)
    save_checkpoint(model, path, tracker=list(tracker),
                    metadata={CONFIG_METADATA_KEY: json.dumps(config_to_dict(model.config))})


def tracker_parts(sam: Sam3) -> list[nn.Module]:
    """The click / box head and video memory a loaded model carries (none for a detector-only file)."""
    return [part for part in (sam.tracker, sam.memory) if part is not None]


def load_init(path: str, config: Sam3Config, device: torch.device | str = "cpu") -> Sam3:
    """The model to fine-tune from ``path``, read once: its image model, with the click / box head
    and video memory the file carries. A file that records its own config of the same
    architecture (an opensam3 export, possibly with the tracker neck a shipped model carries)
    keeps that config, so its tracker neck and inference settings come along; other files are
    read as ``config``."""
    from opensam3.api import _metadata_config, resolve_checkpoint

    recorded = _metadata_config(resolve_checkpoint(path))
    if recorded is not None and set(architecture_differences(recorded, config)) <= {"vision.tracker_neck"}:
        config = recorded
    return load(path, config=config, device=device)


def load_init_model(path: str, config: Sam3Config, device: torch.device | str = "cpu") -> Sam3ImageModel:
    """``load_init``'s image model alone."""
    return load_init(path, config, device).model


def carries_init_tracker(settings: TrainSettings) -> bool:
    """Whether the run exports --init's click / box head and video memory with the detector: they
    read the trunk through the tracker neck, whose output stays as it was (frozen trunk) or is
    held near where those heads were trained (anchor), so they stay valid, untrained."""
    return bool(settings.init) and (settings.freeze_trunk or settings.tracker_anchor > 0)


def starting_model(settings: TrainSettings, config: Sam3Config,
                   device: torch.device | str = "cpu") -> tuple[Sam3ImageModel, list[nn.Module]]:
    """The image model a run starts from (``settings.init`` read once by ``load_init``, else a new
    one) and the tracker parts its export carries (``carries_init_tracker``; else none)."""
    if not settings.init:
        return build_model(config, device=device), []
    init = load_init(settings.init, config, device)
    return init.model, tracker_parts(init) if carries_init_tracker(settings) else []


def carried_tracker(settings: TrainSettings, config: Sam3Config,
                    given: Sequence[nn.Module] | None = None) -> list[nn.Module]:
    """The tracker parts a run's export carries: none unless ``carries_init_tracker``; then
    ``given`` (the caller has read ``--init`` already), else read from ``--init`` now."""
    if not carries_init_tracker(settings):
        return []
    if given is not None:
        return list(given)
    return tracker_parts(load_init(settings.init, config))
