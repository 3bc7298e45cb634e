"""Interactive video object tracking (the SAM 2 task on SAM 3): prompt objects with clicks, boxes
or masks on any frame, propagate them through the video, correct and propagate again.

    tracker = load_video_tracker("sam3.pt")
    state = tracker.init_state("clip.mp4")                    # or a folder of frames
    tracker.add_new_points_or_box(state, 0, obj_id=1, points=[[210, 350]], labels=[1])
    tracker.add_new_points_or_box(state, 0, obj_id=2, box=[300, 0, 500, 400])
    for out in tracker.propagate_in_video(state):
        out.frame_idx, out.obj_ids, out.masks                 # masks: (N, H, W) bool

The semantics are those of the official ``Sam3TrackerPredictor`` (as built by ``build_tracker``):
prompts on a frame not yet tracked start an object from scratch; prompts on a tracked frame
correct it (fed with its previous logits) and make it a conditioning frame; memories of a
prompted frame are encoded for all objects together when propagation starts; tracked frames
store their memories in bf16. Coordinates are pixels of the original video.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from ..data.image_io import preprocess
from ..data.video_io import open_video
from ..errors import InvalidInputError
from ..model.tracker.heads import TrackerHeads
from ..model.tracker.memory_bank import MemoryBank
from ..model.tracker.multiplex import (DEFAULT_BUCKET_SIZE, check_bucket_size, encode_in_buckets,
                                       track_step_in_buckets)
from ..model.tracker.tracker_memory import TrackerMemory
from ..model.tracker.tracking import NO_OBJ_SCORE, FrameFeatures, memory_score, track_step
from .video_prompts import apply_non_overlap, fill_holes_in_mask_scores, mask_prompt, point_prompt
from .video_state import (COND, NON_COND, FrameRecord, MemoryView, TrackerVideoState, VideoFrameResult,
                          processing_order, recent_frames_cache)

logger = logging.getLogger(__name__)


def video_frame_trunk(image_model, video, frame_idx: int) -> torch.Tensor:
    """The ViT trunk output (1, D, g, g) of one video frame, on the trunk's device and dtype."""
    config = image_model.config
    trunk = image_model.backbone.vision_backbone.trunk
    weight = next(trunk.parameters())
    # a writable copy: cached frames are read-only
    pixels = preprocess([np.array(video.frame(frame_idx))], config.image_size, config.pixel_mean,
                        config.pixel_std, weight.device, weight.dtype)
    return trunk(pixels)


class VideoTracker:
    """Tracks objects through a video with a SAM 3 image model's backbone (ViT trunk + tracker
    neck), the tracker heads and the tracker memory. Options as in the official ``build_tracker``:

    non_overlap_masks: keep only the highest-scoring object at each output pixel;
    fill_hole_area: fill background holes / remove foreground specks up to this area in outputs;
    clear_non_cond_mem_around_input: after a correction, forget the per-object tracked outputs
    of nearby frames (single-object tracking only unless clear_non_cond_mem_for_multi_obj);
    max_points_in_prompt: keep the first and last halves of longer click lists;
    use_prev_mem_frame: condition corrections on the memory bank (the official default is not to);
    always_start_from_first_ann_frame: ignore ``start_frame_idx`` of propagation;
    multiplex: track the objects of a frame together, in buckets of up to ``bucket_size`` objects
    (None: all in one bucket), one batched pass per bucket; ``multiplex=False`` runs one pass per
    object. Both give the same results (see opensam3.model.tracker.multiplex).
    """

    def __init__(self, image_model, heads: TrackerHeads, memory: TrackerMemory, non_overlap_masks: bool = False,
                 fill_hole_area: int = 0, clear_non_cond_mem_around_input: bool = True,
                 clear_non_cond_mem_for_multi_obj: bool = False, max_points_in_prompt: int = 16,
                 use_prev_mem_frame: bool = False, always_start_from_first_ann_frame: bool = False,
                 memory_dtype: torch.dtype = torch.bfloat16, feature_cache_frames: int = 2, multiplex: bool = True,
                 bucket_size: int | None = DEFAULT_BUCKET_SIZE):
        if image_model.backbone.vision_backbone.sam2_convs is None:
            raise InvalidInputError("this model was built without the tracker neck, so it cannot track objects; "
                                    "load a checkpoint with tracker weights (the official sam3.pt has them)")
        self.image_model = image_model.eval()
        self.heads = heads.eval()
        self.memory = memory.eval()
        self.non_overlap_masks = non_overlap_masks
        self.fill_hole_area = fill_hole_area
        self.clear_non_cond_mem_around_input = clear_non_cond_mem_around_input
        self.clear_non_cond_mem_for_multi_obj = clear_non_cond_mem_for_multi_obj
        self.max_points_in_prompt = max_points_in_prompt
        self.use_prev_mem_frame = use_prev_mem_frame
        self.always_start_from_first_ann_frame = always_start_from_first_ann_frame
        self.memory_dtype = memory_dtype
        self.feature_cache_frames = feature_cache_frames
        self.multiplex = multiplex
        try:
            self.bucket_size = check_bucket_size(bucket_size)
        except ValueError as error:
            raise InvalidInputError(str(error)) from None
        config = heads.config
        self.image_size = config.image_size
        self.low_res_size = config.low_res_size
        self.input_mask_size = 4 * config.low_res_size

    @property
    def objects_per_pass(self) -> int | None:
        """How many objects one tracker pass takes (None: all of them)."""
        return self.bucket_size if self.multiplex else 1

    @property
    def device(self) -> torch.device:
        return next(self.heads.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.heads.parameters()).dtype

    # ---- state ----
    def init_state(self, video, cache_frames: int | None = None) -> TrackerVideoState:
        """A new tracking session on ``video``: a file, a folder of frames, an array or a Video."""
        video = open_video(video)
        return TrackerVideoState(video, len(video), video.height, video.width,
                                 cache_frames=cache_frames or self.feature_cache_frames)

    def reset_state(self, state: TrackerVideoState) -> None:
        """Remove every object, prompt and result (frame features stay cached)."""
        state.reset()

    def frame_trunk(self, video, frame_idx: int) -> torch.Tensor:
        """The ViT trunk output (1, D, g, g) of one video frame, in the trunk's dtype."""
        return video_frame_trunk(self.image_model, video, frame_idx)

    def features_from_trunk(self, trunk: torch.Tensor, via_bfloat16: bool = False) -> FrameFeatures:
        """The tracker's frame features from a trunk output. ``via_bfloat16``: round the neck's
        output through bf16 first, as the official detector does when it hands frames to the tracker."""
        neck = self.image_model.backbone.vision_backbone
        # the coarsest level is dropped, as for the detector (official scalp=1)
        levels, positions = neck.tracker_levels(trunk, count=self.image_model.config.vision.used_levels)
        if via_bfloat16:
            levels = [level.to(torch.bfloat16) for level in levels]
        # the backbone may run in bf16 while the tracker runs in its own dtype (float32 by default);
        # channels-last like the official neck output (see TrackerHeads.embed_image)
        level0, level1, level2 = (level.to(self.dtype).contiguous(memory_format=torch.channels_last)
                                  for level in levels)
        s0, s1 = self.heads.sam_mask_decoder.project_high_res(level0, level1)
        return FrameFeatures(level2, (s0, s1), positions[-1].to(self.dtype))

    @torch.inference_mode()
    def frame_features(self, state: TrackerVideoState, frame_idx: int) -> FrameFeatures:
        """Tracker features of one frame, (1, ...) each; the last few frames are cached."""
        return recent_frames_cache(state.features, frame_idx, state.cache_frames,
                                   lambda: self.features_from_trunk(self.frame_trunk(state.video, frame_idx)))

    def _track(self, state: TrackerVideoState, frame_idx: int, batch: int, bank: MemoryBank | None,
               is_init_cond_frame: bool, reverse: bool, run_mem_encoder: bool, coords=None, labels=None,
               mask_input=None, prev_mask_logits=None) -> FrameRecord:
        """Official ``_run_single_frame_inference``: one tracking step for ``batch`` objects."""
        base = self.frame_features(state, frame_idx)
        if batch > 1:
            # only propagation tracks several objects at once (prompts concern one object)
            if is_init_cond_frame or coords is not None or mask_input is not None or prev_mask_logits is not None:
                raise ValueError("prompts are tracked one object at a time")
            out = track_step_in_buckets(self.heads, self.memory, base, frame_idx, bank, state.num_frames, batch,
                                        self.objects_per_pass, reverse, run_mem_encoder)
        else:
            out = track_step(self.heads, self.memory, base, frame_idx, bank if bank is not None else MemoryBank(),
                             state.num_frames, is_init_cond_frame, coords, labels, mask_input, prev_mask_logits,
                             reverse, run_mem_encoder)
        memory_features = None if out.memory_features is None else out.memory_features.to(self.memory_dtype)
        memory_pos = None if out.memory_pos is None else out.memory_pos[:1]
        return FrameRecord(out.low_res_masks.float(), out.obj_ptr, out.object_score_logits, memory_features,
                           memory_pos, out.ious.max(-1).values, float(out.score))

    @staticmethod
    def _bank(records: dict[str, dict[int, FrameRecord]]) -> MemoryBank:
        return MemoryBank(MemoryView(records[COND]), MemoryView(records[NON_COND]))

    def _object_index(self, state: TrackerVideoState, obj_id, create: bool) -> int:
        if isinstance(obj_id, (bool, np.bool_)) or not isinstance(obj_id, (int, np.integer)):
            raise InvalidInputError(f"object ids are integers; got {obj_id!r}")
        obj_id = int(obj_id)
        index = state.obj_index(obj_id)
        if index is not None:
            return index
        if not create:
            raise InvalidInputError(f"unknown object id {obj_id}; the objects in this video are {state.obj_ids}")
        if state.tracking_started:
            raise InvalidInputError(f"cannot add the new object id {obj_id} after tracking has started (objects: "
                                    f"{state.obj_ids}); call reset_state() and prompt every object before "
                                    "propagating")
        return state.add_object(obj_id)

    def _check_frame(self, state: TrackerVideoState, frame_idx) -> int:
        return state.video.check_index(frame_idx)

    # ---- prompts ----
    @torch.inference_mode()
    def add_new_points_or_box(self, state: TrackerVideoState, frame_idx: int, obj_id: int, points=None, labels=None,
                              box=None, clear_old_points: bool = True) -> VideoFrameResult:
        """Clicks (points (N, 2) x, y pixels, labels 1 object / 0 background) and/or a box
        (x0, y0, x1, y1 pixels) for one object on one frame. ``clear_old_points=False`` adds the
        clicks to the object's earlier clicks on that frame. Returns every object's mask on the frame."""
        frame_idx = self._check_frame(state, frame_idx)
        if box is not None and not clear_old_points:
            raise InvalidInputError("a box must come before any clicks: add it with clear_old_points=True")
        coords, point_labels = point_prompt(points, labels, box, state.width, state.height, self.image_size,
                                            self.device)
        index = self._object_index(state, obj_id, create=True)
        old = None if clear_old_points else state.point_inputs[index].get(frame_idx)
        if old is not None:
            coords, point_labels = torch.cat((old[0], coords), dim=1), torch.cat((old[1], point_labels), dim=1)
        limit = self.max_points_in_prompt
        if coords.shape[1] > limit > 0:
            first, last = limit // 2, limit - limit // 2
            logger.warning("%d clicks on frame %d: only the first %d and the last %d are used", coords.shape[1],
                           frame_idx, first, last)
            coords = torch.cat((coords[:, :first], coords[:, -last:]), dim=1)
            point_labels = torch.cat((point_labels[:, :first], point_labels[:, -last:]), dim=1)
        state.point_inputs[index][frame_idx] = (coords, point_labels)
        state.mask_inputs[index].pop(frame_idx, None)
        is_init = frame_idx not in state.frames_tracked
        reverse = False if is_init else state.frames_tracked[frame_idx]
        # feed the object's latest logits on this frame back with the clicks
        prev = state.temp[index][COND].get(frame_idx)
        if prev is None:
            prev = state.obj_outputs[index][COND].get(frame_idx)
        if prev is None:
            prev = state.obj_outputs[index][NON_COND].get(frame_idx)
        prev_logits = None if prev is None or prev.pred_masks is None else prev.pred_masks.clamp(-32.0, 32.0)
        with_memory = self.use_prev_mem_frame and not is_init
        record = self._track(state, frame_idx, 1, self._bank(state.obj_outputs[index]) if with_memory else None,
                             is_init_cond_frame=not with_memory, reverse=reverse, run_mem_encoder=False,
                             coords=coords, labels=point_labels, prev_mask_logits=prev_logits)
        # every prompted frame becomes a conditioning frame (add_all_frames_to_correct_as_cond)
        state.temp[index][COND][frame_idx] = record
        return self._frame_result(state, frame_idx, is_cond=True)

    @torch.inference_mode()
    def add_new_mask(self, state: TrackerVideoState, frame_idx: int, obj_id: int, mask) -> VideoFrameResult:
        """A mask (H', W') for one object on one frame; resized to the video if needed. Returns
        every object's mask on the frame (the new mask as given, other objects cut out of it)."""
        frame_idx = self._check_frame(state, frame_idx)
        model_mask, video_mask = mask_prompt(mask, state.height, state.width, self.input_mask_size, self.device)
        index = self._object_index(state, obj_id, create=True)
        state.mask_inputs[index][frame_idx] = video_mask
        state.point_inputs[index].pop(frame_idx, None)
        is_init = frame_idx not in state.frames_tracked
        reverse = False if is_init else state.frames_tracked[frame_idx]
        record = self._track(state, frame_idx, 1, None, is_init, reverse, run_mem_encoder=False,
                             mask_input=model_mask)
        # the output is the mask itself at the video's resolution, so brushing is shown as drawn
        record.pred_masks = None
        record.video_masks = torch.where(video_mask, -NO_OBJ_SCORE, NO_OBJ_SCORE)[None, None]
        state.temp[index][COND][frame_idx] = record
        for other, temp in enumerate(state.temp):
            earlier = temp[COND].get(frame_idx)
            if other != index and earlier is not None and earlier.video_masks is not None:
                earlier.video_masks = torch.where(video_mask, NO_OBJ_SCORE, earlier.video_masks)
        return self._frame_result(state, frame_idx, is_cond=True)

    def _frame_result(self, state: TrackerVideoState, frame_idx: int, is_cond: bool) -> VideoFrameResult:
        consolidated = self._consolidate(state, frame_idx, is_cond, run_mem_encoder=False, at_video_res=True)
        masks = self._video_res(state, consolidated.video_masks)
        return VideoFrameResult(frame_idx, list(state.obj_ids), (masks[:, 0] > 0).cpu())

    # ---- merging per-object outputs ----
    def _consolidate(self, state: TrackerVideoState, frame_idx: int, is_cond: bool, run_mem_encoder: bool,
                     at_video_res: bool = False) -> FrameRecord:
        """Official ``_consolidate_temp_output_across_obj``: one record for all objects on a frame,
        from the new prompt outputs, else the stored outputs; memories re-encoded if asked."""
        key = COND if is_cond else NON_COND
        batch = state.num_objects
        size = (state.height, state.width) if at_video_res else (self.low_res_size, self.low_res_size)
        device = self.device
        masks = torch.full((batch, 1, *size), NO_OBJ_SCORE, dtype=torch.float32, device=device)
        obj_ptr = torch.full((batch, self.heads.config.dim), NO_OBJ_SCORE, dtype=torch.float32, device=device)
        # objects without any output count as present (as the decoder's default)
        scores = torch.full((batch, 1), 10.0, dtype=torch.float32, device=device)
        ious = torch.zeros(batch, dtype=torch.float32, device=device)
        for index in range(batch):
            out = state.temp[index][key].get(frame_idx)
            if out is None:
                out = state.obj_outputs[index][COND].get(frame_idx)
            if out is None:
                out = state.obj_outputs[index][NON_COND].get(frame_idx)
            if out is None:
                if run_mem_encoder:
                    # the pointer of an empty mask prompt is exactly the learned no-object pointer
                    obj_ptr[index] = self.memory.no_obj_ptr[0].float()
                continue
            mask = out.video_masks if out.video_masks is not None else out.pred_masks
            if tuple(mask.shape[-2:]) != size:
                mask = F.interpolate(mask.float(), size=size, mode="bilinear", align_corners=False,
                                     antialias=out.video_masks is not None)
            masks[index:index + 1] = mask
            obj_ptr[index:index + 1] = out.obj_ptr
            scores[index:index + 1] = out.object_score_logits
            if out.iou_score is not None:
                ious[index:index + 1] = out.iou_score.reshape(-1)
        record = FrameRecord(None if at_video_res else masks, obj_ptr.to(self.dtype), scores, iou_score=ious,
                             video_masks=masks if at_video_res else None)
        if run_mem_encoder:
            high = F.interpolate(masks, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
            high = apply_non_overlap(high)
            image = self.frame_features(state, frame_idx).image
            features, pos = encode_in_buckets(self.memory, image, high.to(image.dtype), scores.to(image.dtype),
                                              self.objects_per_pass, from_points=True)
            record.memory_features = features.to(self.memory_dtype)
            record.memory_pos = pos[:1]
        return record

    def _video_res(self, state: TrackerVideoState, masks: torch.Tensor) -> torch.Tensor:
        """Official ``_get_orig_video_res_output``: logits at the video's resolution, optionally
        made non-overlapping and hole-filled."""
        if tuple(masks.shape[-2:]) != (state.height, state.width):
            masks = F.interpolate(masks.float(), size=(state.height, state.width), mode="bilinear",
                                  align_corners=False)
        if self.non_overlap_masks:
            masks = apply_non_overlap(masks)
        if self.fill_hole_area > 0:
            masks = fill_holes_in_mask_scores(masks, self.fill_hole_area)
        return masks

    def _clear_non_cond_mem_around(self, state: TrackerVideoState, frame_idx: int) -> None:
        """Forget per-object tracked outputs within num_maskmem frames of a corrected frame."""
        span = self.memory.config.memory_temporal_stride * self.memory.config.num_maskmem
        for per_object in state.obj_outputs:
            for t in range(frame_idx - span, frame_idx + span + 1):
                per_object[NON_COND].pop(t, None)

    def _preflight(self, state: TrackerVideoState) -> None:
        """Official ``propagate_in_video_preflight``: merge new prompt outputs into the video's
        outputs, encoding their memories for all objects together."""
        state.tracking_started = True
        clear = self.clear_non_cond_mem_around_input and (self.clear_non_cond_mem_for_multi_obj
                                                          or state.num_objects <= 1)
        for key in (NON_COND, COND):
            frames = set()
            for temp in state.temp:
                frames.update(temp[key])
            state.consolidated[key].update(frames)
            for frame_idx in sorted(frames):
                record = self._consolidate(state, frame_idx, key == COND, run_mem_encoder=True)
                state.outputs[key][frame_idx] = record
                state.add_output_per_object(frame_idx, record, key)
                if clear:
                    self._clear_non_cond_mem_around(state, frame_idx)
            for temp in state.temp:
                temp[key].clear()
        for frame_idx in state.outputs[COND]:
            state.outputs[NON_COND].pop(frame_idx, None)
        for per_object in state.obj_outputs:
            for frame_idx in per_object[COND]:
                per_object[NON_COND].pop(frame_idx, None)
        state.consolidated[NON_COND] -= state.consolidated[COND]
        if state.first_ann_frame_idx is None:
            state.first_ann_frame_idx = min(state.input_frames(), default=None)
        if state.first_ann_frame_idx not in state.outputs[COND]:
            state.first_ann_frame_idx = min(state.outputs[COND], default=None)

    # ---- propagation ----
    @torch.inference_mode()
    def propagate_in_video(self, state: TrackerVideoState, start_frame_idx: int | None = None,
                           max_frame_num_to_track: int | None = None,
                           reverse: bool = False) -> Iterator[VideoFrameResult]:
        """Track every object from ``start_frame_idx`` (default: the first prompted frame) forward,
        or backward with ``reverse``, over at most ``max_frame_num_to_track`` more frames; yields
        one result per frame. Prompted frames give their stored outputs."""
        if not state.obj_ids:
            raise InvalidInputError("no objects to track: add points, a box or a mask first")
        self._preflight(state)
        if not state.outputs[COND]:
            raise InvalidInputError("no prompts left to track from: add points, a box or a mask first")
        start = state.first_ann_frame_idx if self.always_start_from_first_ann_frame else start_frame_idx
        start = min(state.outputs[COND]) if start is None else self._check_frame(state, start)
        order = processing_order(start, max_frame_num_to_track, reverse, state.num_frames)
        bank = self._bank(state.outputs)
        for frame_idx in order:
            record = self._propagate_one_frame(state, frame_idx, reverse, bank)
            masks = self._video_res(state, record.pred_masks)
            yield VideoFrameResult(frame_idx, list(state.obj_ids), (masks[:, 0] > 0).cpu(),
                                   record.object_score_logits[:, 0].float().cpu(), record.pred_masks[:, 0].cpu())

    def _propagate_one_frame(self, state: TrackerVideoState, frame_idx: int, reverse: bool,
                             bank: MemoryBank | None = None, run_mem_encoder: bool = True) -> FrameRecord:
        """One frame of propagation: a prompted frame gives its stored output (and, if so
        configured, clears the tracked memories around it), an already tracked frame its stored
        one, any other frame is tracked now. The result is recorded per object."""
        batch = state.num_objects
        clear = self.clear_non_cond_mem_around_input and (self.clear_non_cond_mem_for_multi_obj or batch <= 1)
        if frame_idx in state.consolidated[COND]:
            key, record = COND, state.outputs[COND][frame_idx]
            if clear:
                self._clear_non_cond_mem_around(state, frame_idx)
        elif frame_idx in state.consolidated[NON_COND]:
            key, record = NON_COND, state.outputs[NON_COND][frame_idx]
        else:
            key = NON_COND
            bank = bank if bank is not None else self._bank(state.outputs)
            record = self._track(state, frame_idx, batch, bank, False, reverse, run_mem_encoder)
            state.outputs[NON_COND][frame_idx] = record
        state.add_output_per_object(frame_idx, record, key)
        state.frames_tracked[frame_idx] = reverse
        return record

    # ---- removing prompts and objects ----
    @torch.inference_mode()
    def clear_all_points_in_frame(self, state: TrackerVideoState, frame_idx: int, obj_id: int,
                                  need_output: bool = True) -> VideoFrameResult | None:
        """Remove one object's prompts on one frame; a frame left without prompts stops being a
        conditioning frame (its output is kept as a tracked frame)."""
        frame_idx = self._check_frame(state, frame_idx)
        index = self._object_index(state, obj_id, create=False)
        state.point_inputs[index].pop(frame_idx, None)
        state.mask_inputs[index].pop(frame_idx, None)
        state.temp[index][COND].pop(frame_idx, None)
        state.temp[index][NON_COND].pop(frame_idx, None)
        if frame_idx not in state.input_frames():
            for key in (COND, NON_COND):
                state.consolidated[key].discard(frame_idx)
            record = state.outputs[COND].pop(frame_idx, None)
            if record is not None:
                state.outputs[NON_COND][frame_idx] = record
                state.frames_tracked.pop(frame_idx, None)
            for per_object in state.obj_outputs:
                record = per_object[COND].pop(frame_idx, None)
                if record is not None:
                    per_object[NON_COND][frame_idx] = record
            if not state.outputs[COND]:
                state.reset_tracking()
        if not need_output:
            return None
        is_cond = any(frame_idx in temp[COND] for temp in state.temp)
        return self._frame_result(state, frame_idx, is_cond)

    @torch.inference_mode()
    def remove_object(self, state: TrackerVideoState, obj_id: int,
                      need_output: bool = True) -> tuple[list[int], list[VideoFrameResult]]:
        """Stop tracking an object. Returns the remaining object ids and the updated masks of the
        frames the object had prompts on."""
        index = self._object_index(state, obj_id, create=False)
        if state.num_objects == 1:
            state.reset()
            return [], []
        input_frames = sorted(set(state.point_inputs[index]) | set(state.mask_inputs[index]))
        for frame_idx in input_frames:
            self.clear_all_points_in_frame(state, frame_idx, state.obj_ids[index], need_output=False)
        keep = [i for i in range(state.num_objects) if i != index]
        state.drop_object(index)
        for key in (COND, NON_COND):
            for frame_idx, record in list(state.outputs[key].items()):
                kept = record.rows(keep)
                if record.iou_score is not None:
                    ious = kept.iou_score.reshape(len(keep), -1)
                    kept = kept.with_score(float(memory_score(kept.object_score_logits, ious)))
                state.outputs[key][frame_idx] = kept
                state.add_output_per_object(frame_idx, kept, key)
        updated = []
        if need_output:
            for frame_idx in input_frames:
                is_cond = any(frame_idx in temp[COND] for temp in state.temp)
                updated.append(self._frame_result(state, frame_idx, is_cond))
        return list(state.obj_ids), updated
