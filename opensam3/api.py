"""The public entry point: ``opensam3.load`` and the model object it returns."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from .checkpoint import (
    HUB_REPO,
    SplitCheckpoint,
    check_state_dict,
    download_official,
    read_checkpoint,
    save_checkpoint,
    split_checkpoint,
)
from .config import CONFIGS, Sam3Config, config_from_dict, config_to_dict, get_config
from .errors import CheckpointError, InvalidInputError
from .model.sam3 import Sam3ImageModel
from .model.tracker.config import TrackerHeadsConfig
from .model.tracker.heads import TrackerHeads, load_tracker_heads
from .predictor.image import ConceptPredictor, ImageState
from .predictor.interactive import InteractiveMasks, InteractivePredictor

CHECKPOINT_ENV = "OPENSAM3_CHECKPOINT"
CONFIG_METADATA_KEY = "opensam3_config"


def build_model(config: Sam3Config | str, state: dict[str, torch.Tensor] | None = None,
                device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> Sam3ImageModel:
    """Build the image model; with ``state`` (image-model keys), load it without a second copy.

    Without weights the parameters are randomly initialised (for training from scratch).
    """
    config = get_config(config) if isinstance(config, str) else config
    if state is None:
        return Sam3ImageModel(config).to(device=device, dtype=dtype).eval()
    # Build on the meta device (no memory, no init cost) and adopt the checkpoint tensors.
    with torch.device("meta"):
        model = Sam3ImageModel(config)
    check_state_dict(model, state)
    expected = model.state_dict()
    converted = {k: v.to(device=device, dtype=dtype if expected[k].is_floating_point() else v.dtype)
                 for k, v in state.items()}
    model.load_state_dict(converted, strict=True, assign=True)
    leftovers = [name for name, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if leftovers:
        raise RuntimeError(f"internal error: tensors left unmaterialised after loading: {leftovers[:5]}")
    return model.eval()


def infer_config(state: dict[str, torch.Tensor]) -> Sam3Config:
    """Pick the named config whose shapes fit the checkpoint (official weights -> sam3)."""
    for config in CONFIGS.values():
        with torch.device("meta"):
            probe = Sam3ImageModel(config)
        expected = probe.state_dict()
        if expected.keys() == state.keys() and all(tuple(expected[k].shape) == tuple(state[k].shape) for k in state):
            return config
    return CONFIGS["sam3"]  # check_state_dict then explains what does not fit


def _metadata_config(path: Path) -> Sam3Config | None:
    if path.suffix != ".safetensors":
        return None
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            text = (handle.metadata() or {}).get(CONFIG_METADATA_KEY)
    except Exception:  # noqa: BLE001 - unreadable files are reported by read_checkpoint
        return None
    return config_from_dict(json.loads(text)) if text else None


def resolve_checkpoint(checkpoint: str | os.PathLike | None) -> Path:
    """A path, 'facebook/sam3' / 'sam3' (download), or None ($OPENSAM3_CHECKPOINT)."""
    if checkpoint is None:
        checkpoint = os.environ.get(CHECKPOINT_ENV)
        if not checkpoint:
            raise CheckpointError(
                "no checkpoint given. Pass a path (sam3.pt or .safetensors), set "
                f"{CHECKPOINT_ENV}=PATH, or use 'facebook/sam3' to download the official weights "
                "(needs network access and an accepted licence on huggingface.co)")
    text = str(checkpoint)
    if text in (HUB_REPO, "sam3") and not Path(text).exists():
        return download_official()
    return Path(checkpoint).expanduser()


class Sam3(ConceptPredictor):
    """A loaded SAM 3 model: ``segment()`` for concepts (text and/or exemplar boxes) and
    ``predict()`` for one object from clicks, a box or a mask (needs the tracker weights).
    Both reuse the same encoded image (``set_image``)."""

    def __init__(self, model: Sam3ImageModel, tracker: TrackerHeads | None = None, confidence_threshold: float = 0.5):
        super().__init__(model, confidence_threshold=confidence_threshold)
        self.tracker = tracker
        self.interactive = InteractivePredictor(tracker) if tracker is not None else None

    def predict(self, image, points=None, point_labels=None, box=None, mask_input=None,
                multimask_output: bool = True, return_logits: bool = False) -> InteractiveMasks:
        """Segment one object (the SAM 1/2 task): points (N, 2) x, y pixels with labels 1/0,
        a box x0, y0, x1, y1 in pixels, and/or ``mask_input`` low-res logits from an earlier call.
        Returns (masks (K, H, W) bool, iou_scores (K,), low_res_logits (K, L, L))."""
        if self.interactive is None:
            raise InvalidInputError("this model has no tracker weights, so it cannot take point or box prompts; "
                                    "load the official sam3.pt (it carries tracker.* weights)")
        state = image if isinstance(image, ImageState) else self.set_image(image)
        return self.interactive.predict(state, points, point_labels, box, mask_input, multimask_output, return_logits)

    @classmethod
    def from_pretrained(cls, repo_id: str = HUB_REPO, **kwargs) -> "Sam3":
        """The official weights from the Hugging Face hub (``facebook/sam3``); see :func:`load`."""
        return load(download_official(repo_id), **kwargs)

    def save(self, path: str | os.PathLike) -> None:
        """Write the weights as safetensors in the official key layout, config in the metadata."""
        save_checkpoint(self.model, path, tracker=self.tracker, metadata={CONFIG_METADATA_KEY: json.dumps(config_to_dict(self.model.config))})


def load(checkpoint: str | os.PathLike | None = None, config: Sam3Config | str | None = None,
         device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
         confidence_threshold: float = 0.5) -> Sam3:
    """Load SAM 3 for inference.

    checkpoint: path to the official ``sam3.pt``, a ``.safetensors`` file written by opensam3, a
        bare state dict; 'facebook/sam3' to download; None to use $OPENSAM3_CHECKPOINT.
    config: a config name or object; by default read from the file's metadata or inferred.
    device, dtype: where to run; float32 is exact, bfloat16 is the fast path.
    """
    path = resolve_checkpoint(checkpoint)
    state: SplitCheckpoint = split_checkpoint(read_checkpoint(path))
    if isinstance(config, str):
        config = get_config(config)
    config = config or _metadata_config(path) or infer_config(state.detector)
    try:
        model = build_model(config, state.detector, device=device, dtype=dtype)
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    tracker = None
    if state.tracker and config.vision.tracker_neck:
        tracker = load_tracker_heads(state.tracker, TrackerHeadsConfig.from_model_config(config), device=device, dtype=dtype)
    return Sam3(model, tracker=tracker, confidence_threshold=confidence_threshold)
