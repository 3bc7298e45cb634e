"""The public entry point: ``opensam3.load`` and the model object it returns."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import torch

from .checkpoint import (
    HUB_FILENAME_31,
    HUB_REPO,
    HUB_REPO_31,
    TRACKER_PREFIX,
    SplitCheckpoint,
    check_state_dict,
    download_official,
    read_checkpoint,
    save_checkpoint,
    split_checkpoint,
)
from .config import CONFIGS, Sam3Config, config_from_dict, config_to_dict, get_config
from .device import release_free_memory, warn_if_slow_bf16
from .errors import CheckpointError, InvalidInputError
from .model.sam3 import Sam3ImageModel
from .model.tracker.config import TrackerHeadsConfig, TrackerMemoryConfig
from .model.tracker.heads import TrackerHeads, load_tracker_heads
from .model.tracker.tracker_memory import TrackerMemory, load_tracker_memory, tracker_memory_state
from .predictor.image import ConceptPredictor, ImageState
from .predictor.interactive import InteractiveMasks, InteractivePredictor
from .predictor.zoom import ZoomRule

CHECKPOINT_ENV = "OPENSAM3_CHECKPOINT"
CONFIG_METADATA_KEY = "opensam3_config"
EMBEDDED_NAME = "embedded"  # checkpoint name of the small model that ships with the package
EMBEDDED_FILE = "embedded.safetensors"


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


def embedded_weights() -> Path:
    """The small model shipped inside the package (trained here on the synthetic shapes world)."""
    return Path(__file__).resolve().parent / "assets" / EMBEDDED_FILE


def _sam31_interactive_name(key: str) -> str:
    """SAM 3.1 ``tracker.model.interactive*`` key (``tracker.`` stripped) -> SAM 3 ``tracker.*`` name."""
    key = key[len("model."):]
    return key.replace("interactivity_no_mem_embed", "no_mem_embed").replace("interactive_sam_", "sam_")


def resolve_checkpoint(checkpoint: str | os.PathLike | None) -> Path:
    """A path, 'facebook/sam3' / 'sam3' or 'facebook/sam3.1' / 'sam3.1' (download), 'embedded',
    or None ($OPENSAM3_CHECKPOINT, else the embedded model)."""
    if checkpoint is None:
        checkpoint = os.environ.get(CHECKPOINT_ENV) or EMBEDDED_NAME
    text = str(checkpoint)
    if text == EMBEDDED_NAME and not Path(text).exists():
        path = embedded_weights()
        if not path.is_file():
            raise CheckpointError(
                f"the embedded model's weights are missing ({path}: this build does not ship them). Pass a checkpoint path (sam3.pt or .safetensors), set {CHECKPOINT_ENV}=PATH, or "
                "use 'facebook/sam3' to download the official weights (needs network access and an accepted "
                "licence on huggingface.co)")
        return path
    if text in (HUB_REPO, "sam3") and not Path(text).exists():
        return download_official()
    if text in (HUB_REPO_31, "sam3.1") and not Path(text).exists():
        return download_official(HUB_REPO_31, HUB_FILENAME_31)
    return Path(checkpoint).expanduser()


class Sam3(ConceptPredictor):
    """A loaded SAM 3 model: ``segment()`` for concepts (text and/or exemplar boxes) and
    ``predict()`` for one object from clicks, a box or a mask (needs the tracker weights).
    Both reuse the same encoded image (``set_image``)."""

    def __init__(self, model: Sam3ImageModel, tracker: TrackerHeads | None = None, confidence_threshold: float = 0.5,
                 memory: TrackerMemory | None = None, nms_iou: float | None = None, refine_masks: bool | None = None):
        super().__init__(model, confidence_threshold=confidence_threshold, nms_iou=nms_iou)
        # concept masks re-drawn by the click / box head from each detection's box (by default as
        # the config says, when the head is there)
        if refine_masks is None:
            refine_masks = model.config.refine_masks and tracker is not None
        self.refine_masks = refine_masks
        if refine_masks and tracker is None:
            raise InvalidInputError("refine_masks needs the tracker's click / box head, and this model has none; "
                                    "load a checkpoint with tracker.* weights or pass refine_masks=False")
        self.tracker = tracker
        self.memory = memory  # the tracker's video memory path (official sam3.pt carries it)
        zoom = model.config.interactive_zoom
        self.interactive = (InteractivePredictor(tracker, max_hole_area=model.config.interactive_hole_area,
                                                 zoom=None if zoom is None else ZoomRule(zoom), encode=self.set_image,
                                                 feedback=model.config.interactive_feedback,
                                                 box_clip=model.config.interactive_box_clip)
                            if tracker is not None else None)

    def postprocess(self, outputs, index, state, threshold, prompt=None):
        result = super().postprocess(outputs, index, state, threshold, prompt)
        if self.refine_masks and len(result):
            result.masks = self.interactive.masks_for_boxes(state, result.boxes, result.masks)
        return result

    def video_tracker(self, **options):
        """The interactive video predictor (points, boxes, masks on any frame; propagation) on
        this model's weights; ``options`` go to :func:`opensam3.build_video_tracker`."""
        from .predictor.video_build import build_video_tracker

        if self.model.config.vision.multiplex_necks:
            raise InvalidInputError("this is a SAM 3.1 model: its video tracker is the multiplex one, loaded by "
                                    "opensam3.load_multiplex_tracker(checkpoint)")
        if self.memory is None:
            raise InvalidInputError("this model has no tracker memory weights, so it cannot track objects in "
                                    "video; load the official sam3.pt (it carries tracker.* weights)")
        return build_video_tracker(self, self.memory, **options)

    def video_predictor(self, **options):
        """Concept tracking in video with the official session protocol (``handle_request`` /
        ``handle_stream_request``) on this model's weights; ``options`` go to
        :func:`opensam3.predictor.video_session.build_concept_video_model`."""
        from .predictor.video_session import Sam3VideoPredictor, build_concept_video_model

        return Sam3VideoPredictor(build_concept_video_model(self, **options))

    def predict(self, image, points=None, point_labels=None, box=None, mask_input=None,
                multimask_output: bool = True, return_logits: bool = False, zoom: bool | None = None,
                box_clip: bool | None = None) -> InteractiveMasks:
        """Segment one object (the SAM 1/2 task): points (N, 2) x, y pixels with labels 1/0,
        a box x0, y0, x1, y1 in pixels, and/or ``mask_input`` low-res logits from an earlier call.
        Returns (masks (K, H, W) bool, iou_scores (K,), low_res_logits (K, L, L)).
        ``zoom``: force the second look at small objects on (True, with a default window of 3.5x
        the object) or off; ``box_clip``: keep the mask inside the box or not. None follows the
        config for both (on for the embedded model, off for the official ones)."""
        if self.interactive is None:
            raise InvalidInputError("this model has no tracker weights, so it cannot take point or box prompts; "
                                    "load the official sam3.pt (it carries tracker.* weights)")
        state = image if isinstance(image, ImageState) else self.set_image(image)
        return self.interactive.predict(state, points, point_labels, box, mask_input, multimask_output, return_logits,
                                        zoom, box_clip)

    @classmethod
    def from_pretrained(cls, repo_id: str = HUB_REPO, **kwargs) -> "Sam3":
        """The official weights from the Hugging Face hub (``facebook/sam3``); see :func:`load`."""
        return load(download_official(repo_id), **kwargs)

    def save(self, path: str | os.PathLike) -> None:
        """Write the weights as safetensors in the official key layout, config in the metadata."""
        parts = [part for part in (self.tracker, self.memory) if part is not None]
        save_checkpoint(self.model, path, tracker=parts, metadata={CONFIG_METADATA_KEY: json.dumps(config_to_dict(self.model.config))})


def load(checkpoint: str | os.PathLike | None = None, config: Sam3Config | str | None = None,
         device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
         confidence_threshold: float = 0.5, tracker_dtype: torch.dtype | None = None,
         nms_iou: float | None = None, refine_masks: bool | None = None) -> Sam3:
    """Load SAM 3 for inference.

    checkpoint: path to the official ``sam3.pt``, a ``.safetensors`` file written by opensam3, a
        bare state dict; 'facebook/sam3' to download; 'embedded' for the small model shipped
        with the package (it knows only the synthetic shapes world); None to use
        $OPENSAM3_CHECKPOINT, else the embedded model.
    config: a config name or object; by default read from the file's metadata or inferred.
    device, dtype: where to run; float32 is exact, bfloat16 is the fast path on GPUs and CPUs with
        bf16 arithmetic (elsewhere it is emulated and slow: a warning says so).
    tracker_dtype: dtype of the tracker heads and memory (points/boxes, video); default ``dtype``.
    nms_iou: duplicate suppression of concept detections (mask IoU); default the config's (off for
        official weights), 1.0 = off.
    """
    warn_if_slow_bf16(device, dtype)
    path = resolve_checkpoint(checkpoint)
    tracker_dtype = tracker_dtype or dtype

    def dtype_for(key: str) -> torch.dtype:  # cast while reading: no float32 copy next to a bf16 model
        return tracker_dtype if key.startswith(TRACKER_PREFIX) else dtype

    state: SplitCheckpoint = split_checkpoint(read_checkpoint(path, dtype_for))
    if isinstance(config, str):
        config = get_config(config)
    config = config or _metadata_config(path) or infer_config(state.detector)
    try:
        model = build_model(config, state.detector, device=device, dtype=dtype)
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    tracker = memory = None
    if state.tracker and config.vision.multiplex_necks:
        # SAM 3.1: its interactive head is SAM 3's click / box head under other names
        renamed = {_sam31_interactive_name(k): v for k, v in state.tracker.items() if k.startswith("model.interactiv")}
        if renamed:
            heads_config = TrackerHeadsConfig.from_model_config(config)
            lin1 = renamed.get("sam_mask_decoder.transformer.layers.0.mlp.lin1.weight")
            if lin1 is not None:  # the release's 2048; smaller builds differ
                heads_config = dataclasses.replace(heads_config, transformer_mlp_dim=lin1.shape[0])
            tracker = load_tracker_heads(renamed, heads_config, device=device, dtype=tracker_dtype)
    elif state.tracker and config.vision.tracker_neck:
        tracker = load_tracker_heads(state.tracker, TrackerHeadsConfig.from_model_config(config), device=device,
                                     dtype=tracker_dtype)
        if tracker_memory_state(state.tracker):
            memory = load_tracker_memory(state.tracker, TrackerMemoryConfig.from_model_config(config), device=device,
                                         dtype=tracker_dtype)
    release_free_memory()  # the heap holes reading the checkpoint left behind
    return Sam3(model, tracker=tracker, confidence_threshold=confidence_threshold, memory=memory, nms_iou=nms_iou,
                refine_masks=refine_masks)
