"""Concept video tracking (SAM 3 PCS on video): a text prompt (and/or an exemplar box) finds every
instance on each frame with the detector; masklets are propagated with the tracker's memory;
detections are associated to masklets by mask IoU, new masklets start from unmatched confident
detections, young masklets that stay unmatched or duplicate an older one are removed (hot-start),
masklets are re-conditioned on matching detections periodically, and clicks can add or refine
objects on any frame. Optionally (off in the official configs) a lost masklet is re-activated by
a detection where its motion puts it (video_concept_reid.py).

This is the official ``Sam3VideoInferenceWithInstanceInteractivity`` (single process) on our
modules: one ViT pass per frame feeds both the detector and the tracker (the tracker's neck
features rounded to bf16, as the official hands them over), and every masklet group is a
:class:`~opensam3.predictor.video_state.TrackerVideoState` driven by :class:`VideoTracker`.
Rules and defaults: video_concept_rules.py. Outputs per frame: the official dict
(``out_obj_ids``, ``out_probs``, ``out_boxes_xywh`` normalised, ``out_binary_masks`` (N, H, W)).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from ..data.video_io import Video, open_video
from ..errors import InvalidInputError
from ..model.sam3 import ImageFeatures
from ..model.tracker.multiplex import encode_in_buckets
from ..model.tracker.tracking import FrameFeatures
from ..ops.masks import nms_keep
from .image import VISUAL_ONLY_PHRASE
from .video_concept_reid import match_lost, record_motion
from .video_concept_rules import (
    NO_OBJ_LOGIT,
    ConceptVideoConfig,
    TrackMetadata,
    associate,
    frame_outputs,
    joint_logits,
    process_hotstart,
    suppress_by_recent_occlusion,
    suppress_shrunk,
)
from .video_prompts import fill_holes_in_mask_scores
from .video_state import COND, NON_COND, TrackerVideoState
from .video_tracker import VideoTracker


@dataclass
class Detections:
    masks: torch.Tensor  # (N, h, w) low-res mask logits
    scores: np.ndarray  # (N,) float32 probabilities


@dataclass
class ConceptVideoState:
    """One video session of the concept tracker (official ``inference_state``)."""

    video: Video
    num_frames: int
    height: int
    width: int
    text: str | None = None
    # frame -> (boxes (1, N, 4) cxcywh normalised, labels (1, N) bool): the exemplar of that frame
    geometric_prompt: dict = field(default_factory=dict)
    frames_with_outputs: set = field(default_factory=set)
    tracker_states: list = field(default_factory=list)
    meta: TrackMetadata | None = None
    features: OrderedDict = field(default_factory=OrderedDict)  # frame -> FrameFeatures (shared by masklets)
    detector_features: OrderedDict = field(default_factory=OrderedDict)  # frame -> ImageFeatures
    cached_outputs: dict = field(default_factory=dict)  # frame -> {obj_id: (1, H, W) bool}
    action_history: list = field(default_factory=list)

    def reset(self) -> None:
        self.text = None
        self.geometric_prompt.clear()
        self.frames_with_outputs.clear()
        self.tracker_states.clear()
        self.meta = None
        self.features.clear()
        self.detector_features.clear()
        self.cached_outputs.clear()
        self.action_history.clear()

    @property
    def obj_ids(self) -> list[int]:
        return [] if self.meta is None else [int(i) for i in self.meta.obj_ids]


class ConceptVideoTracker:
    """Detector (a :class:`~opensam3.model.sam3.Sam3ImageModel`) + interactive tracker
    (:class:`VideoTracker` on the same image model) + the official heuristics."""

    def __init__(self, tracker: VideoTracker, config: ConceptVideoConfig | None = None, cache_frames: int = 2):
        self.tracker = tracker
        self.model = tracker.image_model
        self.config = config or ConceptVideoConfig()
        self.cache_frames = cache_frames

    @property
    def device(self) -> torch.device:
        return self.tracker.device

    # ---- session ----
    def init_state(self, video) -> ConceptVideoState:
        video = open_video(video)
        return ConceptVideoState(video, len(video), video.height, video.width)

    def reset_state(self, state: ConceptVideoState) -> None:
        state.reset()

    def _metadata(self, state: ConceptVideoState) -> TrackMetadata:
        if state.meta is None:
            state.meta = TrackMetadata()
        return state.meta

    def _new_tracker_state(self, state: ConceptVideoState) -> TrackerVideoState:
        # every masklet group reads the session's shared per-frame features
        return TrackerVideoState(state.video, state.num_frames, state.height, state.width, cache_frames=10 ** 9,
                                 features=state.features)

    # ---- per-frame features and detections ----
    @torch.inference_mode()
    def encode_frame(self, state: ConceptVideoState, frame_idx: int) -> ImageFeatures:
        """One ViT pass for the frame: detector levels (returned) and the tracker's frame features
        (stored for every masklet group). The last ``cache_frames`` frames are kept."""
        cached = state.detector_features.get(frame_idx)
        if cached is not None:
            return cached
        trunk = self.tracker.frame_trunk(state.video, frame_idx)
        fpn, fpn_pos = self.model.backbone.vision_backbone.detector_levels(
            trunk, self.model.config.vision.used_levels)
        state.features[frame_idx] = self.tracker.features_from_trunk(trunk, via_bfloat16=True)
        features = ImageFeatures(fpn, fpn_pos)
        state.detector_features[frame_idx] = features
        for cache in (state.features, state.detector_features):
            while len(cache) > max(1, self.cache_frames):
                cache.popitem(last=False)
        return features

    def _detect(self, state: ConceptVideoState, frame_idx: int, allow_new: bool) -> Detections:
        features = self.encode_frame(state, frame_idx)
        size = features.fpn[0].shape[-1]
        geometric = state.geometric_prompt.get(frame_idx)
        if not allow_new:
            return Detections(torch.zeros((0, size, size)), np.zeros(0, np.float32))
        phrase = state.text if state.text is not None else VISUAL_ONLY_PHRASE
        text = self.model.encode_text([phrase])
        device = self.device
        if geometric is None:
            boxes = torch.zeros((1, 0, 4), device=device)
            labels = torch.zeros((1, 0), dtype=torch.bool, device=device)
        else:
            boxes, labels = geometric[0].to(device), geometric[1].to(device)
        padding = torch.zeros(labels.shape, dtype=torch.bool, device=device)
        out = self.model.ground(features, text, boxes, labels, padding)
        logits = joint_logits(out.logits, out.presence_logits)[0]
        masks = out.masks[0].float().cpu()
        cfg = self.config
        if cfg.det_nms_thresh > 0:
            keep = nms_keep(logits.sigmoid().cpu(), masks, cfg.score_threshold_detection, cfg.det_nms_thresh)
            logits = logits - 1e4 * (~keep).float().to(logits.device)
        probs = logits.sigmoid().cpu()
        pos = torch.nonzero(probs > cfg.score_threshold_detection).flatten()
        return Detections(masks[pos], probs[pos].float().numpy())

    # ---- tracker steps ----
    def _track_one(self, ts: TrackerVideoState, frame_idx: int, reverse: bool, run_mem_encoder: bool):
        """One frame of the official tracker ``propagate_in_video`` (start = end = frame_idx)."""
        if not ts.outputs[COND]:
            raise InvalidInputError("a masklet group has no prompted frame to track from")
        return self.tracker._propagate_one_frame(ts, frame_idx, reverse, run_mem_encoder=run_mem_encoder)

    def _propagate_states(self, state: ConceptVideoState, states, frame_idx: int, reverse: bool,
                          run_mem_encoder: bool):
        """Official ``_propogate_tracker_one_frame_local_gpu``: ids, hole-filled low-res logits
        (N, L, L) and object score logits (N,) of every masklet in ``states``."""
        ids, masks, scores = [], [], []
        for ts in states:
            if ts.num_objects == 0:
                continue
            record = self._track_one(ts, frame_idx, reverse, run_mem_encoder)
            ids.extend(ts.obj_ids)
            masks.append(record.pred_masks[:, 0].float())
            scores.append(record.object_score_logits[:, 0].float())
        size = self.tracker.low_res_size
        if not masks:
            return [], torch.zeros((0, size, size)), torch.zeros(0)
        low_res = fill_holes_in_mask_scores(torch.cat(masks)[:, None], self.config.fill_hole_area)[:, 0]
        return ids, low_res.cpu(), torch.cat(scores).cpu()

    def _update_memories(self, state: ConceptVideoState, frame_idx: int, low_res: torch.Tensor) -> None:
        """Official ``_tracker_update_memories``: encode every masklet's memory of this frame from
        its final mask (objects losing most of their area to overlaps suppressed; presence from
        the mask area)."""
        if not state.tracker_states:
            return
        size = self.tracker.memory.maskmem_backbone.mask_downsampler.input_size
        high = F.interpolate(low_res[:, None], size=(size, size), mode="bilinear", align_corners=False)
        high = suppress_shrunk(high)
        scores = torch.where((high > 0).any(dim=(-1, -2)), 10.0, -10.0)
        start = 0
        for ts in state.tracker_states:
            count = ts.num_objects
            if count == 0:
                continue
            image = self.tracker.frame_features(ts, frame_idx).image
            features, pos = encode_in_buckets(self.tracker.memory, image,
                                              high[start:start + count].to(image.device, image.dtype),
                                              scores[start:start + count].to(image.device, image.dtype),
                                              self.tracker.objects_per_pass, from_points=False)
            for key in (COND, NON_COND):
                record = ts.outputs[key].get(frame_idx)
                if record is None:
                    continue
                record.memory_features = features.to(self.tracker.memory_dtype)
                record.memory_pos = pos[:1]
                record._memory = None
                ts.add_output_per_object(frame_idx, record, key)
            start += count

    def _mask_input(self, masks: torch.Tensor) -> torch.Tensor:
        size = self.tracker.input_mask_size
        return F.interpolate(masks[:, None].float(), size=(size, size), mode="bilinear", align_corners=False)[:, 0] > 0

    def _recondition(self, state, frame_idx, det: Detections, trk_to_det: dict, prev_ids, obj_scores) -> None:
        for obj_id, det_idx in trk_to_det.items():
            mask = self._mask_input(det.masks[det_idx:det_idx + 1])[0]
            score = obj_scores[int(np.nonzero(prev_ids == obj_id)[0].item())]
            touched = [ts for ts in state.tracker_states if obj_id in ts.obj_ids and score > 0.8]
            for ts in touched:
                self.tracker.add_new_mask(ts, frame_idx, int(obj_id), mask)
            for ts in touched:
                self.tracker._preflight(ts)

    def _lost_found(self, meta: TrackMetadata, frame_idx: int, det: Detections, assoc) -> dict[int, int]:
        """Lost masklet id -> the detection that re-activates it (video_concept_reid.py)."""
        cfg = self.config
        if not len(assoc.empty_trk) or not len(det.scores):
            return {}
        candidates = [d for d in range(len(det.scores))
                      if not len(assoc.det_to_trk.get(d, ())) and det.scores[d] >= cfg.reid_min_score]
        return match_lost(meta.motion, frame_idx, assoc.empty_trk, det.masks, candidates, cfg.reid_gate,
                          cfg.reid_max_gap)

    def _reactivate(self, state, frame_idx: int, det: Detections, found: dict, prev_ids, low_res: torch.Tensor,
                    obj_scores: torch.Tensor) -> None:
        """Each re-found masklet takes its detection's mask as a new mask input on this frame (as
        re-conditioning does), and as this frame's mask and score (in place)."""
        rows = [int(np.nonzero(prev_ids == obj_id)[0].item()) for obj_id in found]
        confident = obj_scores.clone()
        confident[rows] = -NO_OBJ_LOGIT  # _recondition only takes masklets it is confident about
        self._recondition(state, frame_idx, det, found, prev_ids, confident)
        masks = det.masks[torch.as_tensor(list(found.values()))][:, None]
        masks = fill_holes_in_mask_scores(masks, self.config.fill_hole_area)
        low_res[rows] = F.interpolate(masks, size=low_res.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
        scores = torch.as_tensor(det.scores[list(found.values())], dtype=torch.float32)
        obj_scores[rows] = torch.logit(scores.clamp(1e-3, 1 - 1e-3)).to(obj_scores.dtype)

    def _add_objects(self, state, frame_idx: int, obj_ids, masks: torch.Tensor) -> None:
        ts = self._new_tracker_state(state)
        for obj_id, mask in zip(obj_ids, self._mask_input(masks)):
            self.tracker.add_new_mask(ts, frame_idx, int(obj_id), mask)
        self.tracker._preflight(ts)
        state.tracker_states.append(ts)

    def _remove_from_trackers(self, state, obj_id: int) -> None:
        kept = []
        for ts in state.tracker_states:
            if obj_id in ts.obj_ids:
                self.tracker.remove_object(ts, obj_id, need_output=False)
            if ts.num_objects > 0:
                kept.append(ts)
        state.tracker_states[:] = kept

    def _video_res(self, state, low_res: torch.Tensor) -> torch.Tensor:
        return F.interpolate(low_res[:, None].float(), size=(state.height, state.width), mode="bilinear",
                             align_corners=False) > 0

    # ---- one frame of detection + tracking ----
    @torch.inference_mode()
    def run_frame(self, state: ConceptVideoState, frame_idx: int, reverse: bool) -> dict:
        """Official ``_run_single_frame_inference`` / ``_det_track_one_frame``."""
        cfg = self.config
        meta = self._metadata(state)
        allow_new = state.text is not None or frame_idx in state.geometric_prompt
        det = self._detect(state, frame_idx, allow_new)
        prev_ids = meta.obj_ids.copy()
        _, low_res, obj_scores = self._propagate_states(state, state.tracker_states, frame_idx, reverse, False)
        assoc = associate(det.masks, det.scores, low_res, prev_ids, cfg)
        new_det = assoc.new_det
        reactivated = self._lost_found(meta, frame_idx, det, assoc) if cfg.reidentify_lost else {}
        if reactivated:
            new_det = new_det[~np.isin(new_det, list(reactivated.values()))]
        room = cfg.max_num_objects - len(prev_ids)
        dropped = max(0, len(new_det) - room)
        if dropped:
            new_det = new_det[np.argsort(det.scores[new_det])[::-1][:room]]
        new_ids = meta.max_obj_id + 1 + np.arange(len(new_det), dtype=np.int64)
        removed_now = process_hotstart(meta, frame_idx, reverse, assoc, new_ids, cfg)
        if (cfg.recondition_every_nth_frame > 0 and frame_idx % cfg.recondition_every_nth_frame == 0
                and assoc.trk_to_det):
            self._recondition(state, frame_idx, det, assoc.trk_to_det, prev_ids, obj_scores)
        if reactivated:
            self._reactivate(state, frame_idx, det, reactivated, prev_ids, low_res, obj_scores)
        last_occluded = {}
        if low_res.shape[0] > 0:
            if cfg.occlusion_suppress_iou > 0:
                last_occluded = suppress_by_recent_occlusion(low_res, prev_ids, meta, frame_idx, removed_now, reverse,
                                                             cfg.occlusion_suppress_iou)
            self._update_memories(state, frame_idx, low_res)
        ids = np.concatenate([prev_ids, new_ids])
        if removed_now:
            ids = ids[~np.isin(ids, list(removed_now))]
        meta.obj_ids = ids
        frame_scores = meta.tracker_scores[frame_idx]
        for obj_id, d in zip(new_ids, new_det):
            meta.obj_id_to_score[int(obj_id)] = det.scores[d]
            frame_scores[int(obj_id)] = det.scores[d]
        if len(new_ids):
            meta.max_obj_id = max(meta.max_obj_id, int(new_ids.max()))
        meta.last_occluded = last_occluded
        for obj_id in removed_now:
            meta.obj_id_to_score[int(obj_id)] = -1e4
            frame_scores[int(obj_id)] = -1e4
            meta.last_occluded.pop(int(obj_id), None)
        if len(new_det):
            self._add_objects(state, frame_idx, new_ids, det.masks[torch.as_tensor(new_det)])
        for obj_id in removed_now:
            self._remove_from_trackers(state, int(obj_id))
        if cfg.reidentify_lost:
            confirmed = ~np.isin(prev_ids, assoc.unmatched_trk) & ~np.isin(prev_ids, assoc.empty_trk)
            confirmed[np.isin(prev_ids, list(reactivated))] = True
            record_motion(meta.motion, frame_idx, prev_ids, low_res, confirmed)
            record_motion(meta.motion, frame_idx, new_ids, det.masks[torch.as_tensor(new_det, dtype=torch.long)])
            for obj_id in removed_now:  # a removed masklet is never lost, so its record would only pile up
                meta.motion.pop(int(obj_id), None)
        # outputs: propagated masklets (after suppression), then the new detections hole-filled
        obj_id_to_mask = {}
        if len(prev_ids):
            for obj_id, mask in zip(prev_ids, self._video_res(state, low_res)):
                obj_id_to_mask[int(obj_id)] = mask
        if len(new_det):
            filled = fill_holes_in_mask_scores(det.masks[torch.as_tensor(new_det)][:, None], cfg.fill_hole_area)
            for obj_id, mask in zip(new_ids, self._video_res(state, filled[:, 0])):
                obj_id_to_mask[int(obj_id)] = mask
        if obj_scores.numel():
            frame_scores.update({int(i): s for i, s in zip(prev_ids, obj_scores.sigmoid().tolist())})
        state.frames_with_outputs.add(frame_idx)
        state.cached_outputs[frame_idx] = dict(obj_id_to_mask)
        return {"obj_id_to_mask": obj_id_to_mask, "obj_id_to_score": dict(meta.obj_id_to_score),
                "obj_id_to_tracker_score": frame_scores, "removed_obj_ids": set(meta.removed),
                "suppressed_obj_ids": set(meta.suppressed[frame_idx]),
                "frame_stats": {"num_obj_tracked": len(meta.obj_ids), "num_obj_dropped": int(dropped)}}

    def postprocess(self, state: ConceptVideoState, out: dict, hidden=()) -> dict:
        outputs = frame_outputs(out["obj_id_to_mask"], out["obj_id_to_score"], out["obj_id_to_tracker_score"],
                                state.height, state.width, hidden)
        outputs["frame_stats"] = out.get("frame_stats")
        return outputs

    def cache_outputs(self, state: ConceptVideoState, frame_idx: int, obj_id_to_mask: dict, hidden=()) -> None:
        hidden = set(hidden)
        state.cached_outputs[frame_idx] = {k: v for k, v in obj_id_to_mask.items() if k not in hidden}
