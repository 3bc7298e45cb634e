"""Video object tracking with SAM 3.1's "Object Multiplex" tracker: objects are packed into
buckets of ``multiplex_count`` slots, and one memory-attention + decoder + memory-encoder pass
serves a whole bucket (docs/sam31_multiplex_notes.md).

    tracker = Multiplex31VideoTracker(image_model, InteractiveHead(cfg), MultiplexTracker(cfg))
    state = tracker.init_state("clip.mp4")
    tracker.add_new_points_or_box(state, 0, obj_id=1, box=[40, 60, 200, 220])
    tracker.add_new_mask(state, 0, obj_id=2, mask=mask)
    for out in tracker.propagate_in_video(state):
        out.frame_idx, out.obj_ids, out.masks
    tracker.add_new_points_or_box(state, 30, obj_id=1, points=[[120, 80]], labels=[0])  # correct
    tracker.add_new_points_or_box(state, 30, obj_id=3, points=[[300, 200]], labels=[1])  # a new object
    for out in tracker.propagate_in_video(state, start_frame_idx=30): ...

Prompts go on any frame, before or after propagation (rules and where they differ from the
official pipeline: video_multiplex31_state.py): objects prompted on one frame are tracked
together, packed into buckets; an object added later starts a group of its own; a correction moves its object out of a
shared group (keeping its pointers, not the shared bucket memories) and makes the prompted frame
a conditioning frame. Propagation tracks again only the groups whose prompts changed; the others
keep their outputs.

* Frame features: with a SAM 3.1 backbone (``multiplex_necks``), the interactive head reads the
  interactive neck and the multiplex tracker the propagation neck, as the official
  ``Sam3TriViTDetNeck``; on a SAM 3 backbone its one tracker neck serves both. Official SAM 3.1
  weights load with :func:`opensam3.load_multiplex_tracker`.
* ``objects_per_bucket=1`` puts every object alone in slot 0 of its own bucket: the per-object
  baseline of the same weights. Objects sharing a bucket influence each other by design, so the
  two layouts do not give the same masks; buckets are independent of each other.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from ..data.video_io import Video, open_video
from ..errors import InvalidInputError
from ..model.tracker.memory_bank import select_closest_cond_frames
from ..model.tracker.multiplex31 import (EMPTY, InteractiveHead, MultiplexTracker, PointerMemory, SlotAssignment,
                                         SpatialMemory, propagate, spatial_tpos_row)
from ..model.tracker.tracking import FrameFeatures
from .video_multiplex31_state import Multiplex31State, ObjectGroup, PromptOutput, StoredFrame
from .video_prompts import apply_non_overlap, mask_prompt, point_prompt
from .video_state import VideoFrameResult, processing_order, recent_frames_cache
from .video_tracker import video_frame_trunk

__all__ = ["Multiplex31VideoTracker", "Multiplex31State", "PromptOutput", "StoredFrame"]


class Multiplex31VideoTracker:
    """SAM 3.1 multiplex tracking on an image model's backbone (SAM 3.1's, or SAM 3's tracker
    neck; see the module docstring).

    ``objects_per_bucket``: slots filled per bucket (default: all ``multiplex_count``; 1 = the
    per-object baseline). ``memory_dtype``: storage of bucket memories (bf16, as the official
    demo stores them). ``feature_cache_frames``: frames whose features are kept.
    ``non_overlap_masks``: where objects overlap in the returned masks, only the highest-scoring
    one keeps the pixel (the official demo's default; stored logits and memories are untouched).
    """

    def __init__(self, image_model, interactive: InteractiveHead, tracker: MultiplexTracker,
                 objects_per_bucket: int | None = None, memory_dtype: torch.dtype = torch.bfloat16,
                 feature_cache_frames: int = 2, non_overlap_masks: bool = True):
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
        self.non_overlap_masks = non_overlap_masks
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
        state.groups.clear()
        state.point_inputs.clear()

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
        return self.features_from_trunk(self.frame_trunk(video, frame_idx))

    def features_from_trunk(self, trunk: torch.Tensor, via_bfloat16: bool = False
                            ) -> tuple[FrameFeatures, FrameFeatures]:
        """(interactive, propagation) features from a trunk output. ``via_bfloat16``: round the
        necks' outputs through bf16 first, as the official detector hands frames to the tracker."""
        backbone = self.image_model.backbone.vision_backbone
        count = self.image_model.config.vision.used_levels
        if backbone.interactive_convs is not None:  # SAM 3.1's own necks
            necks = backbone.multiplex_levels(trunk, count=count)
        else:  # a SAM 3 backbone: its tracker neck serves both heads
            necks = (backbone.tracker_levels(trunk, count=count),) * 2
        out = []
        for (levels, positions), decoder in zip(necks, (self.interactive.sam_mask_decoder, self.tracker.sam_mask_decoder)):
            if via_bfloat16:
                levels = [level.to(torch.bfloat16) for level in levels]
            level0, level1, image = (level.to(self.dtype) for level in levels)
            out.append(FrameFeatures(image, decoder.project_high_res(level0, level1), positions[-1].to(self.dtype)))
        return out[0], out[1]

    # ---- prompts ----
    def _check_prompt(self, state: Multiplex31State, frame_idx, obj_id) -> tuple[int, int]:
        """Checked (frame index, object id) of a new prompt."""
        frame_idx = state.video.check_index(frame_idx)
        if isinstance(obj_id, (bool, np.bool_)) or not isinstance(obj_id, (int, np.integer)):
            raise InvalidInputError(f"object ids are integers; got {obj_id!r}")
        return frame_idx, int(obj_id)

    @torch.inference_mode()
    def add_new_points_or_box(self, state: Multiplex31State, frame_idx: int, obj_id: int, points=None, labels=None,
                              box=None, clear_old_points: bool = True) -> VideoFrameResult:
        """Clicks (x, y pixels; labels 1 object / 0 background) and/or a box (x0, y0, x1, y1
        pixels) for one object on one frame: a new object, or a correction of a tracked one.
        ``clear_old_points=False`` adds the clicks to the object's earlier clicks on this frame.
        Returns the masks of the objects that have an output on the frame."""
        coords, point_labels = point_prompt(points, labels, box, state.width, state.height, self.config.image_size,
                                            self.device)
        frame_idx, obj_id = self._check_prompt(state, frame_idx, obj_id)
        if box is not None and not clear_old_points:
            raise InvalidInputError("a box must come before any clicks: add it with clear_old_points=True")
        old = None if clear_old_points else state.point_inputs.get((obj_id, frame_idx))
        if old is not None:
            coords, point_labels = torch.cat([old[0], coords], dim=1), torch.cat([old[1], point_labels], dim=1)
        interactive, _ = self.frame_features(state, frame_idx)
        self._apply_prompt(state, frame_idx, obj_id, self.decode_points(interactive, coords, point_labels))
        state.point_inputs[(obj_id, frame_idx)] = (coords, point_labels)
        return self._frame_result(state, frame_idx)

    @torch.inference_mode()
    def add_new_mask(self, state: Multiplex31State, frame_idx: int, obj_id: int, mask) -> VideoFrameResult:
        """A mask (H', W', resized to the video if needed) for one object on one frame (a new
        object or a correction); returns the masks of the objects that have an output there."""
        model_mask, _ = mask_prompt(mask, state.height, state.width, self.input_mask_size, self.device)
        frame_idx, obj_id = self._check_prompt(state, frame_idx, obj_id)
        interactive, _ = self.frame_features(state, frame_idx)
        self._apply_prompt(state, frame_idx, obj_id, self.decode_masks(interactive, model_mask))
        state.point_inputs.pop((obj_id, frame_idx), None)
        return self._frame_result(state, frame_idx)

    def decode_points(self, interactive: FrameFeatures, coords: torch.Tensor, labels: torch.Tensor) -> PromptOutput:
        """Clicks (model coordinates (1, P, 2), labels (1, P)) decoded by the interactive head alone."""
        low, _, score, pointer = self.interactive.predict(interactive.image, interactive.high_res,
                                                         coords.to(self.dtype), labels,
                                                         self.tracker.no_obj_ptr_linear)
        size = self.config.image_size
        return PromptOutput(low, F.interpolate(low, size=(size, size), mode="bilinear", align_corners=False),
                            score, pointer)

    def decode_masks(self, interactive: FrameFeatures, masks: torch.Tensor) -> PromptOutput:
        """Mask prompts (B, 1, S, S) at the mask input size as outputs (``mask_as_output``)."""
        logits, score, pointer = self.interactive.mask_as_output(interactive.image, interactive.high_res, masks,
                                                                 self.tracker.no_obj_ptr_linear)
        low = F.interpolate(logits, size=(self.config.low_res_size,) * 2, mode="bilinear", align_corners=False,
                            antialias=True)
        size = self.config.image_size
        return PromptOutput(low, F.interpolate(logits, size=(size, size), mode="bilinear", align_corners=False),
                            score, pointer)

    def _apply_prompt(self, state: Multiplex31State, frame_idx: int, obj_id: int, output: PromptOutput) -> None:
        """Put a decoded prompt where it belongs (rules: video_multiplex31_state.py)."""
        group = state.group_of(obj_id)
        if group is None or (not group.packed and group.frame == frame_idx):
            if group is None:  # a new object joins the unpacked group of its frame
                group = state.open_group(frame_idx)
                group.obj_ids.append(obj_id)
                state.obj_ids.append(obj_id)
            group.prompts[obj_id] = output
            return
        # a correction (or a second prompted frame): the object's group must exist in buckets
        if not group.packed:
            self._pack(state, group)
        if len(group.obj_ids) > 1:
            alone = group.extract(obj_id, self.config.multiplex_count)
            state.groups.append(alone)
            group = alone
        _, propagation = self.frame_features(state, frame_idx)
        memory, _ = self.tracker.encode_memory(propagation.image, output.for_memory.to(self.dtype), output.score,
                                               group.slots, conditioning=torch.ones(1, dtype=torch.bool,
                                                                                    device=self.device))
        group.frames[frame_idx] = StoredFrame(output.low_res, output.score, memory.to(self.memory_dtype),
                                              propagation.image, propagation.pos, group.slots.mux(output.pointer))
        group.cond.add(frame_idx)
        group.fresh.clear()  # its other frames are tracked again from the new prompt

    @torch.inference_mode()
    def remove_object(self, state: Multiplex31State, obj_id: int) -> None:
        """Stop tracking one object: its slot is retired, buckets left empty are dropped, and its
        masks leave every stored frame; the other objects keep their outputs."""
        group = state.group_of(obj_id)
        if group is None:
            raise InvalidInputError(f"unknown object id {obj_id!r}; this session tracks {state.obj_ids}")
        group.drop(obj_id)
        if not group.obj_ids:
            state.groups.remove(group)
        state.obj_ids.remove(obj_id)
        for key in [key for key in state.point_inputs if key[0] == obj_id]:
            del state.point_inputs[key]

    def _frame_result(self, state: Multiplex31State, frame_idx: int, with_logits: bool = False) -> VideoFrameResult:
        """Masks of the objects (in the order they were first prompted) with an output on the frame."""
        ids, rows, scores = [], [], []
        for obj_id in state.obj_ids:
            group = state.group_of(obj_id)
            if group.packed:
                stored = group.frames.get(frame_idx)
                if stored is None:
                    continue
                row = group.row(obj_id)
                low, score = stored.masks[row:row + 1], stored.scores[row:row + 1]
            elif group.frame == frame_idx:
                low, score = group.prompts[obj_id].low_res, group.prompts[obj_id].score
            else:
                continue
            ids.append(obj_id)
            rows.append(low)
            scores.append(score)
        if not rows:
            size = self.config.low_res_size
            empty = torch.zeros(0, 1, size, size, device=self.device)
            return VideoFrameResult(frame_idx, [], self._video_masks(state, empty).cpu())
        low = torch.cat(rows)
        masks = self._video_masks(state, low).cpu()
        if not with_logits:
            return VideoFrameResult(frame_idx, ids, masks)
        return VideoFrameResult(frame_idx, ids, masks, torch.cat(scores)[:, 0].float().cpu(), low[:, 0].cpu())

    def _video_masks(self, state: Multiplex31State, logits: torch.Tensor) -> torch.Tensor:
        """(N, 1, h, w) logits -> (N, H, W) bool at the video's resolution."""
        masks = F.interpolate(logits.float(), size=(state.height, state.width), mode="bilinear", align_corners=False)
        if self.non_overlap_masks:
            masks = apply_non_overlap(masks)
        return masks[:, 0] > 0

    # ---- propagation ----
    def _layout(self, num_objects: int) -> SlotAssignment:
        slots, per_bucket = self.config.multiplex_count, self.objects_per_bucket
        buckets = [list(range(start, min(start + per_bucket, num_objects))) for start in range(0, num_objects, per_bucket)]
        return SlotAssignment([bucket + [EMPTY] * (slots - len(bucket)) for bucket in buckets], slots)

    def _pack(self, state: Multiplex31State, group: ObjectGroup) -> None:
        """Pack a group's objects into buckets and encode its prompted frame's memory, every
        object marked as a conditioning object."""
        count = len(group.obj_ids)
        slots = self._layout(count)
        prompts = [group.prompts[obj_id] for obj_id in group.obj_ids]
        high = torch.cat([p.for_memory for p in prompts])
        scores = torch.cat([p.score for p in prompts])
        pointers = torch.cat([p.pointer for p in prompts])
        _, propagation = self.frame_features(state, group.frame)
        memory, _ = self.tracker.encode_memory(propagation.image, high.to(self.dtype), scores, slots,
                                               conditioning=torch.ones(count, dtype=torch.bool, device=self.device))
        low = torch.cat([p.low_res for p in prompts])
        group.frames[group.frame] = StoredFrame(low, scores, memory.to(self.memory_dtype), propagation.image,
                                                propagation.pos, slots.mux(pointers))
        group.slots, group.cond, group.prompts = slots, {group.frame}, {}

    def _preflight(self, state: Multiplex31State) -> None:
        if not state.obj_ids:
            raise InvalidInputError("no objects to track: add points, a box or a mask first")
        for group in state.groups:
            if not group.packed:
                self._pack(state, group)

    def _memories(self, state: Multiplex31State, group: ObjectGroup, frame_idx: int, reverse: bool
                  ) -> tuple[list[SpatialMemory], list[PointerMemory]]:
        """What one group attends to on a frame (official evaluation rules): its closest
        ``max_cond_frames_in_attn`` conditioning frames and the previous ``num_maskmem - 1``
        frames (spatial memory, where the group has one), and the pointers of those conditioning
        frames that lie behind plus up to ``max_obj_ptrs_in_encoder - 1`` previous frames."""
        config = self.config
        step = 1 if reverse else -1
        selected, _ = select_closest_cond_frames(frame_idx, {t: group.frames[t] for t in sorted(group.cond)},
                                                 config.max_cond_frames_in_attn)
        # how far each conditioning frame lies in the past of this propagation (<= 0: ahead of it)
        behind = {t: (t - frame_idx) * step for t in selected}
        spatial = [SpatialMemory(stored.memory, stored.image, stored.image_pos,
                                 spatial_tpos_row(behind[t], True, config.num_maskmem))
                   for t, stored in selected.items() if stored.memory is not None]
        for back in range(config.num_maskmem - 1, 0, -1):
            stored = group.frames.get(frame_idx + step * back)
            if frame_idx + step * back not in selected and stored is not None and stored.memory is not None:
                spatial.append(SpatialMemory(stored.memory, stored.image, stored.image_pos,
                                             spatial_tpos_row(back, False, config.num_maskmem)))
        # a conditioning frame ahead of the propagation lends its memory but not its pointers (official rule)
        pointers = [PointerMemory(stored.pointers, behind[t]) for t, stored in selected.items() if behind[t] >= 0]
        for back in range(1, min(state.num_frames, config.max_obj_ptrs_in_encoder)):
            t = frame_idx + step * back
            if t not in selected and t in group.frames:
                pointers.append(PointerMemory(group.frames[t].pointers, back))
        return spatial, pointers

    @torch.inference_mode()
    def propagate_in_video(self, state: Multiplex31State, start_frame_idx: int | None = None,
                           max_frame_num_to_track: int | None = None,
                           reverse: bool = False) -> Iterator[VideoFrameResult]:
        """Track every object from ``start_frame_idx`` (default: the first prompted frame)
        forward, or backward with ``reverse``, over at most ``max_frame_num_to_track`` more
        frames. A group's prompted frames keep their prompt output; frames it tracked since its
        prompts last changed give their stored result; the rest are tracked."""
        self._preflight(state)
        if start_frame_idx is None:
            start = min(group.first_frame() for group in state.groups)
        else:
            start = state.video.check_index(start_frame_idx)
        for frame_idx in processing_order(start, max_frame_num_to_track, reverse, state.num_frames):
            for group in state.groups:
                if frame_idx not in group.cond and frame_idx not in group.fresh:
                    self._track(state, group, frame_idx, reverse)
            yield self._frame_result(state, frame_idx, with_logits=True)

    def _track(self, state: Multiplex31State, group: ObjectGroup, frame_idx: int, reverse: bool) -> None:
        _, features = self.frame_features(state, frame_idx)
        self.track_group(state, group, features, frame_idx, reverse)

    def track_group(self, state, group: ObjectGroup, features: FrameFeatures, frame_idx: int, reverse: bool,
                    run_mem_encoder: bool = True, conditioning: torch.Tensor | None = None) -> StoredFrame:
        """One frame of one group from the frame's propagation ``features``: stored and returned
        (memory None without ``run_mem_encoder``; ``conditioning``: per object flags for it)."""
        spatial, pointers = self._memories(state, group, frame_idx, reverse)
        out = propagate(self.tracker, features, group.slots, spatial, pointers, state.num_frames,
                        conditioning=conditioning, run_mem_encoder=run_mem_encoder)
        memory = None if out.memory_features is None else out.memory_features.to(self.memory_dtype)
        stored = StoredFrame(out.low_res_masks, out.object_score_logits, memory, features.image, features.pos,
                             group.slots.mux(out.obj_ptr))
        group.frames[frame_idx] = stored
        group.fresh.add(frame_idx)
        return stored
