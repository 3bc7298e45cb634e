"""Video object tracking with SAM 3.1's "Object Multiplex" tracker: every object of a video is
packed into buckets of ``multiplex_count`` slots, and one memory-attention + decoder +
memory-encoder pass serves a whole bucket (docs/sam31_multiplex_notes.md).

    tracker = Multiplex31VideoTracker(image_model, InteractiveHead(cfg), MultiplexTracker(cfg))
    state = tracker.init_state("clip.mp4")
    tracker.add_new_points_or_box(state, 0, obj_id=1, box=[40, 60, 200, 220])
    tracker.add_new_mask(state, 0, obj_id=2, mask=mask)
    for out in tracker.propagate_in_video(state):
        out.frame_idx, out.obj_ids, out.masks

Scope, stated plainly:

* Objects are prompted on one frame (clicks, a box or a mask each; prompting an object again
  replaces its prompt) before the first propagation; propagation then runs forward and/or
  backward from that frame. Corrections on later frames and objects joining mid-video (the
  official "dynamic" state) are not implemented: ``reset_state`` and prompt again.
* Frame features: with a SAM 3.1 backbone (``multiplex_necks``), the interactive head reads the
  interactive neck and the multiplex tracker the propagation neck, as the official
  ``Sam3TriViTDetNeck``; on a SAM 3 backbone its one tracker neck serves both. Official SAM 3.1
  weights load with :func:`opensam3.load_multiplex_tracker`.
* ``objects_per_bucket=1`` puts every object alone in slot 0 of its own bucket: the per-object
  baseline of the same weights. Objects sharing a bucket influence each other by design, so the
  two layouts do not give the same masks; buckets are independent of each other.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from ..data.video_io import Video, open_video
from ..errors import InvalidInputError
from ..model.tracker.multiplex31 import (EMPTY, InteractiveHead, MultiplexTracker, PointerMemory, SlotAssignment,
                                         SpatialMemory, propagate, spatial_tpos_row)
from ..model.tracker.tracking import FrameFeatures
from .video_prompts import mask_prompt, point_prompt
from .video_state import VideoFrameResult, processing_order, recent_frames_cache
from .video_tracker import video_frame_trunk


@dataclass
class PromptOutput:
    """One object's decoded prompt: low-res logits (1, 1, L, L) (its output on the frame), the
    logits its memory is encoded from (1, 1, S, S), object score (1, 1), pointer (1, C)."""

    low_res: torch.Tensor
    for_memory: torch.Tensor
    score: torch.Tensor
    pointer: torch.Tensor


@dataclass
class StoredFrame:
    """A processed frame: per object low-res logits (N, 1, L, L) and scores (N, 1); the bucket
    memory (nb, C, e, e) with the frame's image features and their encoding (1, C, e, e) and
    the pointers in mux space (nb, M, C)."""

    masks: torch.Tensor
    scores: torch.Tensor
    memory: torch.Tensor
    image: torch.Tensor
    image_pos: torch.Tensor
    pointers: torch.Tensor


@dataclass
class Multiplex31State:
    """One video's objects, their prompts (all on ``prompt_frame``) and the processed frames."""

    video: Video
    num_frames: int
    height: int
    width: int
    obj_ids: list[int] = field(default_factory=list)
    prompt_frame: int | None = None
    prompts: dict[int, PromptOutput] = field(default_factory=dict)   # object index -> decoded prompt
    slots: SlotAssignment | None = None                              # set when propagation starts
    frames: dict[int, StoredFrame] = field(default_factory=dict)
    features: OrderedDict = field(default_factory=OrderedDict)       # frame -> (interactive, propagation)

    @property
    def started(self) -> bool:
        return self.slots is not None


class Multiplex31VideoTracker:
    """SAM 3.1 multiplex tracking on an image model's backbone (SAM 3.1's, or SAM 3's tracker
    neck; see the module docstring).

    ``objects_per_bucket``: slots filled per bucket (default: all ``multiplex_count``; 1 = the
    per-object baseline). ``memory_dtype``: storage of bucket memories (bf16, as the official
    demo stores them). ``feature_cache_frames``: frames whose features are kept.
    """

    def __init__(self, image_model, interactive: InteractiveHead, tracker: MultiplexTracker,
                 objects_per_bucket: int | None = None, memory_dtype: torch.dtype = torch.bfloat16,
                 feature_cache_frames: int = 2):
        backbone = image_model.backbone.vision_backbone
        if backbone.sam2_convs is None and backbone.interactive_convs is None:
            raise InvalidInputError("this model was built without a tracker neck, so it cannot track objects")
        config = tracker.config
        if (image_model.config.image_size, image_model.config.vision.neck_dim) != (config.image_size, config.dim):
            raise InvalidInputError(
                f"the multiplex tracker is sized for {config.image_size} px and width {config.dim}, the image model "
                f"for {image_model.config.image_size} px and width {image_model.config.vision.neck_dim}")
        slots = objects_per_bucket or config.multiplex_count
        if not 1 <= slots <= config.multiplex_count:
            raise InvalidInputError(f"objects_per_bucket must be 1..{config.multiplex_count}; got {objects_per_bucket}")
        self.image_model = image_model.eval()
        self.interactive = interactive.eval()
        self.tracker = tracker.eval()
        self.config = config
        self.objects_per_bucket = slots
        self.memory_dtype = memory_dtype
        self.feature_cache_frames = feature_cache_frames
        self.input_mask_size = config.mask_input_size

    @property
    def device(self) -> torch.device:
        return next(self.tracker.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.tracker.parameters()).dtype

    # ---- state ----
    def init_state(self, video) -> Multiplex31State:
        """A new session on ``video``: a file, a folder of frames, an array or a Video."""
        video = open_video(video)
        return Multiplex31State(video, len(video), video.height, video.width)

    def reset_state(self, state: Multiplex31State) -> None:
        """Forget every object, prompt and result (cached frame features stay)."""
        state.obj_ids.clear()
        state.prompts.clear()
        state.frames.clear()
        state.prompt_frame, state.slots = None, None

    # ---- features ----
    def frame_trunk(self, video: Video, frame_idx: int) -> torch.Tensor:
        """The ViT trunk output (1, D, g, g) of one video frame."""
        return video_frame_trunk(self.image_model, video, frame_idx)

    @torch.inference_mode()
    def frame_features(self, state: Multiplex31State, frame_idx: int) -> tuple[FrameFeatures, FrameFeatures]:
        """(interactive, propagation) features of one frame, batch 1; the last few are cached."""
        return recent_frames_cache(state.features, frame_idx, self.feature_cache_frames,
                                   lambda: self._compute_features(state.video, frame_idx))

    def _compute_features(self, video: Video, frame_idx: int) -> tuple[FrameFeatures, FrameFeatures]:
        backbone = self.image_model.backbone.vision_backbone
        count = self.image_model.config.vision.used_levels
        trunk = self.frame_trunk(video, frame_idx)
        if backbone.interactive_convs is not None:  # SAM 3.1's own necks
            necks = backbone.multiplex_levels(trunk, count=count)
        else:  # a SAM 3 backbone: its tracker neck serves both heads
            necks = (backbone.tracker_levels(trunk, count=count),) * 2
        out = []
        for (levels, positions), decoder in zip(necks, (self.interactive.sam_mask_decoder, self.tracker.sam_mask_decoder)):
            level0, level1, image = (level.to(self.dtype) for level in levels)
            out.append(FrameFeatures(image, decoder.project_high_res(level0, level1), positions[-1].to(self.dtype)))
        return out[0], out[1]

    # ---- prompts ----
    def _check_prompt(self, state: Multiplex31State, frame_idx, obj_id) -> tuple[int, int]:
        """Checked (frame index, object id) of a new prompt."""
        frame_idx = state.video.check_index(frame_idx)
        if isinstance(obj_id, (bool, np.bool_)) or not isinstance(obj_id, (int, np.integer)):
            raise InvalidInputError(f"object ids are integers; got {obj_id!r}")
        if state.started:
            raise InvalidInputError("this SAM 3.1 tracker takes its prompts before propagation: call reset_state() "
                                    "and prompt every object again")
        if state.prompt_frame is not None and frame_idx != state.prompt_frame:
            raise InvalidInputError(f"all objects are prompted on frame {state.prompt_frame} (this SAM 3.1 tracker "
                                    f"takes prompts on one frame); got frame {frame_idx}")
        return frame_idx, int(obj_id)

    def _store_prompt(self, state: Multiplex31State, frame_idx: int, obj_id: int, output: PromptOutput
                      ) -> VideoFrameResult:
        """Record a decoded prompt (the state changes only once decoding succeeded)."""
        state.prompt_frame = frame_idx
        if obj_id not in state.obj_ids:
            state.obj_ids.append(obj_id)
        state.prompts[state.obj_ids.index(obj_id)] = output
        low = torch.cat([state.prompts[i].low_res for i in range(len(state.obj_ids))])
        return VideoFrameResult(frame_idx, list(state.obj_ids), self._video_masks(state, low).cpu())

    @torch.inference_mode()
    def add_new_points_or_box(self, state: Multiplex31State, frame_idx: int, obj_id: int, points=None, labels=None,
                              box=None) -> VideoFrameResult:
        """Clicks (x, y pixels; labels 1 object / 0 background) and/or a box (x0, y0, x1, y1
        pixels) for one object; returns every prompted object's mask on the frame."""
        coords, point_labels = point_prompt(points, labels, box, state.width, state.height, self.config.image_size,
                                            self.device)
        frame_idx, obj_id = self._check_prompt(state, frame_idx, obj_id)
        interactive, _ = self.frame_features(state, frame_idx)
        low, _, score, pointer = self.interactive.predict(interactive.image, interactive.high_res,
                                                         coords.to(self.dtype), point_labels,
                                                         self.tracker.no_obj_ptr_linear)
        size = self.config.image_size
        high = F.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)
        return self._store_prompt(state, frame_idx, obj_id, PromptOutput(low, high, score, pointer))

    @torch.inference_mode()
    def add_new_mask(self, state: Multiplex31State, frame_idx: int, obj_id: int, mask) -> VideoFrameResult:
        """A mask (H', W', resized to the video if needed) for one object; returns every prompted
        object's mask on the frame."""
        model_mask, _ = mask_prompt(mask, state.height, state.width, self.input_mask_size, self.device)
        frame_idx, obj_id = self._check_prompt(state, frame_idx, obj_id)
        interactive, _ = self.frame_features(state, frame_idx)
        logits, score, pointer = self.interactive.mask_as_output(interactive.image, interactive.high_res,
                                                                 model_mask, self.tracker.no_obj_ptr_linear)
        low = F.interpolate(logits, size=(self.config.low_res_size,) * 2, mode="bilinear", align_corners=False,
                            antialias=True)
        size = self.config.image_size
        high = F.interpolate(logits, size=(size, size), mode="bilinear", align_corners=False)
        return self._store_prompt(state, frame_idx, obj_id, PromptOutput(low, high, score, pointer))

    def _video_masks(self, state: Multiplex31State, logits: torch.Tensor) -> torch.Tensor:
        """(N, 1, h, w) logits -> (N, H, W) bool at the video's resolution."""
        masks = F.interpolate(logits.float(), size=(state.height, state.width), mode="bilinear", align_corners=False)
        return masks[:, 0] > 0

    # ---- propagation ----
    def _layout(self, num_objects: int) -> SlotAssignment:
        slots, per_bucket = self.config.multiplex_count, self.objects_per_bucket
        buckets = [list(range(start, min(start + per_bucket, num_objects))) for start in range(0, num_objects, per_bucket)]
        return SlotAssignment([bucket + [EMPTY] * (slots - len(bucket)) for bucket in buckets], slots)

    def _preflight(self, state: Multiplex31State) -> None:
        """Pack the objects into buckets and encode the prompted frame's memory, all objects
        marked as conditioning objects."""
        if state.started:
            return
        if not state.obj_ids:
            raise InvalidInputError("no objects to track: add points, a box or a mask first")
        count = len(state.obj_ids)
        slots = self._layout(count)
        prompts = [state.prompts[i] for i in range(count)]
        high = torch.cat([p.for_memory for p in prompts])
        scores = torch.cat([p.score for p in prompts])
        pointers = torch.cat([p.pointer for p in prompts])
        _, propagation = self.frame_features(state, state.prompt_frame)
        memory, _ = self.tracker.encode_memory(propagation.image, high.to(self.dtype), scores, slots,
                                               conditioning=torch.ones(count, dtype=torch.bool, device=self.device))
        low = torch.cat([p.low_res for p in prompts])
        state.frames[state.prompt_frame] = StoredFrame(low, scores, memory.to(self.memory_dtype), propagation.image,
                                                       propagation.pos, slots.mux(pointers))
        state.slots = slots

    def _memories(self, state: Multiplex31State, frame_idx: int, reverse: bool
                  ) -> tuple[list[SpatialMemory], list[PointerMemory]]:
        """The prompted frame plus the previous ``num_maskmem - 1`` tracked frames (spatial), and
        it plus up to ``max_obj_ptrs_in_encoder - 1`` tracked frames (pointers), oldest first."""
        config, cond = self.config, state.prompt_frame
        step = 1 if reverse else -1
        stored = state.frames[cond]
        # how far the prompted frame lies in the past of this propagation (<= 0: ahead of it)
        behind = (cond - frame_idx) * step
        spatial = [SpatialMemory(stored.memory, stored.image, stored.image_pos,
                                 spatial_tpos_row(behind, True, config.num_maskmem))]
        for back in range(config.num_maskmem - 1, 0, -1):
            t = frame_idx + step * back
            if t != cond and t in state.frames:
                past = state.frames[t]
                spatial.append(SpatialMemory(past.memory, past.image, past.image_pos,
                                             spatial_tpos_row(back, False, config.num_maskmem)))
        # a prompted frame ahead of the propagation lends its memory but not its pointers (official rule)
        pointers = [PointerMemory(stored.pointers, behind)] if behind >= 0 else []
        for back in range(1, min(state.num_frames, config.max_obj_ptrs_in_encoder)):
            t = frame_idx + step * back
            if t != cond and t in state.frames:
                pointers.append(PointerMemory(state.frames[t].pointers, back))
        return spatial, pointers

    @torch.inference_mode()
    def propagate_in_video(self, state: Multiplex31State, start_frame_idx: int | None = None,
                           max_frame_num_to_track: int | None = None,
                           reverse: bool = False) -> Iterator[VideoFrameResult]:
        """Track every object from ``start_frame_idx`` (default: the prompted frame) forward, or
        backward with ``reverse``, over at most ``max_frame_num_to_track`` more frames; frames
        already processed give their stored result."""
        self._preflight(state)
        start = state.prompt_frame if start_frame_idx is None else state.video.check_index(start_frame_idx)
        for frame_idx in processing_order(start, max_frame_num_to_track, reverse, state.num_frames):
            stored = state.frames.get(frame_idx)
            if stored is None:
                stored = self._track(state, frame_idx, reverse)
            yield VideoFrameResult(frame_idx, list(state.obj_ids), self._video_masks(state, stored.masks).cpu(),
                                   stored.scores[:, 0].float().cpu(), stored.masks[:, 0].cpu())

    def _track(self, state: Multiplex31State, frame_idx: int, reverse: bool) -> StoredFrame:
        _, features = self.frame_features(state, frame_idx)
        spatial, pointers = self._memories(state, frame_idx, reverse)
        out = propagate(self.tracker, features, state.slots, spatial, pointers, state.num_frames)
        stored = StoredFrame(out.low_res_masks, out.object_score_logits, out.memory_features.to(self.memory_dtype),
                             features.image, features.pos, state.slots.mux(out.obj_ptr))
        state.frames[frame_idx] = stored
        return stored
