"""The rules of concept video tracking (SAM 3 "PCS" on video), as pure functions and one metadata
record: detection-to-masklet association (after the score + mask-NMS filter of ops/masks.py),
hot-start removal of unmatched or duplicate masklets, suppression of overlapping masklets by
recent occlusion, and the per-frame output format.

Values and rules are those of the official ``Sam3VideoBase`` as ``build_sam3_video_model`` builds
it (see :class:`ConceptVideoConfig`); the engine that applies them is video_concept.py.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from ..ops.masks import mask_iou

NEVER_OCCLUDED = -1
ALWAYS_OCCLUDED = 100000  # later than any frame: a masklet removed by hot-start
HIGH_CONF = 0.8  # detection score and mask IoU above which a detection may re-condition a masklet
NO_OBJ_LOGIT = -10.0


@dataclass(frozen=True)
class ConceptVideoConfig:
    """Official ``build_sam3_video_model`` defaults (apply_temporal_disambiguation=True)."""

    score_threshold_detection: float = 0.5  # detections kept (and NMS pre-filter)
    det_nms_thresh: float = 0.1  # mask IoU for detection NMS
    assoc_iou_thresh: float = 0.1  # a detection matches a masklet at this mask IoU
    trk_assoc_iou_thresh: float = 0.5  # a masklet counts as matched at this IoU
    new_det_thresh: float = 0.7  # an unmatched detection starts a masklet above this score
    hotstart_delay: int = 15  # outputs are held back this many frames
    hotstart_unmatch_thresh: int = 8  # remove a young masklet unmatched this many frames
    hotstart_dup_thresh: int = 8  # remove a young masklet duplicating an older one this many frames
    suppress_unmatched_only_within_hotstart: bool = True
    init_trk_keep_alive: int = 30
    max_trk_keep_alive: int = 30
    min_trk_keep_alive: int = -1
    occlusion_suppress_iou: float = 0.7  # suppress_overlapping_based_on_recent_occlusion_threshold
    fill_hole_area: int = 16
    recondition_every_nth_frame: int = 16
    max_num_objects: int = 10000  # official "no limit"
    refinement_cond_frame_window: int = 16  # refinement_detector_cond_frame_removal_window
    # opensam3 extension (video_concept_reid.py), off as in the official code: a detection that
    # overlaps no masklet, scores at least reid_min_score and lands within reid_gate object sizes
    # of where a lost (empty) masklet's motion puts it, at most reid_max_gap frames after it was
    # last fully seen, re-activates that masklet instead of starting a new id.
    reidentify_lost: bool = False
    reid_min_score: float = 0.5
    reid_gate: float = 2.0
    reid_max_gap: int = 30

    @classmethod
    def without_heuristics(cls) -> ConceptVideoConfig:
        """The official ablation (apply_temporal_disambiguation=False)."""
        return cls(hotstart_delay=0, hotstart_unmatch_thresh=0, hotstart_dup_thresh=0, recondition_every_nth_frame=0)


@dataclass
class TrackMetadata:
    """What the official keeps in ``tracker_metadata`` (one process: no per-GPU split)."""

    obj_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    max_obj_id: int = -1
    obj_id_to_score: dict = field(default_factory=dict)
    tracker_scores: defaultdict = field(default_factory=lambda: defaultdict(dict))  # frame -> {obj: prob}
    last_occluded: dict = field(default_factory=dict)  # obj -> (1,) long tensor
    first_frame: dict = field(default_factory=dict)
    unmatched_frames: defaultdict = field(default_factory=lambda: defaultdict(list))
    keep_alive: defaultdict = field(default_factory=lambda: defaultdict(int))
    overlap_pairs: defaultdict = field(default_factory=lambda: defaultdict(list))
    removed: set = field(default_factory=set)
    suppressed: defaultdict = field(default_factory=lambda: defaultdict(set))  # frame -> obj ids
    motion: dict = field(default_factory=dict)  # obj -> recent observations (reidentify_lost only)


def joint_logits(logits: torch.Tensor, presence_logits: torch.Tensor) -> torch.Tensor:
    """(B, Q) query logits and (B,) presence logits -> the video detector's score logits: the
    joint score goes through a logit round trip with eps 1e-3 and a clamp to [-10, 10] (official
    ``supervise_joint_box_scores``): the logits of probabilities kept within [0.001, 0.999]."""
    joint = (logits.float().sigmoid() * presence_logits.float().sigmoid()[:, None]).clamp(0, 1)
    logit = torch.log(joint.clamp(min=1e-3) / (1 - joint).clamp(min=1e-3)).clamp(-10.0, 10.0)
    return logit


@dataclass
class Association:
    new_det: np.ndarray  # detection indices that start masklets
    unmatched_trk: np.ndarray  # masklet ids (non-empty) not matched by any detection
    det_to_trk: dict  # detection index -> matched masklet ids
    trk_to_det: dict  # masklet id -> its high-confidence, high-IoU detection
    empty_trk: np.ndarray  # masklet ids with an empty mask


def associate(det_masks: torch.Tensor, det_scores: np.ndarray, trk_masks: torch.Tensor, trk_ids: np.ndarray,
              config: ConceptVideoConfig) -> Association:
    """Official ``_associate_det_trk``: detections (N, h, w) and masklets (M, H, W) as logits;
    compared at the smaller of the two sizes."""
    empty = np.zeros(0, np.int64)
    if trk_masks.shape[0] == 0:
        return Association(np.arange(det_masks.shape[0]), empty, {}, {}, empty)
    if det_masks.shape[0] == 0:
        nonempty = (trk_masks > 0).any(dim=(1, 2)).numpy()
        return Association(empty, trk_ids[nonempty], {}, {}, trk_ids[~nonempty])
    if det_masks.shape[-2:] != trk_masks.shape[-2:]:
        if np.prod(det_masks.shape[-2:]) < np.prod(trk_masks.shape[-2:]):
            trk_masks = F.interpolate(trk_masks[:, None], size=det_masks.shape[-2:], mode="bilinear",
                                      align_corners=False)[:, 0]
        else:
            det_masks = F.interpolate(det_masks[:, None], size=trk_masks.shape[-2:], mode="bilinear",
                                      align_corners=False)[:, 0]
    trk_binary = trk_masks > 0
    ious = mask_iou(det_masks > 0, trk_binary).numpy()
    trk_matched = (ious >= config.trk_assoc_iou_thresh).any(axis=0)
    nonempty = trk_binary.any(dim=(1, 2)).numpy()
    unmatched = trk_ids[nonempty & ~trk_matched]
    is_new = (det_scores >= config.new_det_thresh) & ~(ious >= config.assoc_iou_thresh).any(axis=1)
    best_trk = np.argmax(ious, axis=1)
    strong = set(np.nonzero((det_scores >= HIGH_CONF) & ~is_new & (ious.max(axis=1) >= HIGH_CONF))[0])
    det_to_trk, trk_to_det = {}, {}
    for d in range(det_masks.shape[0]):
        det_to_trk[d] = trk_ids[ious[d] >= config.assoc_iou_thresh]
        if d in strong:
            trk_to_det[int(trk_ids[best_trk[d]])] = d
    return Association(np.nonzero(is_new)[0], unmatched, det_to_trk, trk_to_det, trk_ids[~nonempty])


def process_hotstart(meta: TrackMetadata, frame_idx: int, reverse: bool, assoc: Association,
                     new_obj_ids: np.ndarray, config: ConceptVideoConfig) -> set:
    """Official ``_process_hotstart``: keep-alive counters; young masklets (first seen within
    ``hotstart_delay`` frames) unmatched or duplicating an older masklet too often are removed.
    Returns the ids removed on this frame (also added to ``meta.removed``)."""
    removed_now: set = set()
    suppressed = meta.suppressed[frame_idx]
    horizon = frame_idx + config.hotstart_delay if reverse else frame_idx - config.hotstart_delay

    def young(obj_id) -> bool:
        first = meta.first_frame[obj_id]
        return first < horizon if reverse else first > horizon

    for obj_id in new_obj_ids:
        meta.first_frame.setdefault(obj_id, frame_idx)
        meta.keep_alive[obj_id] = config.init_trk_keep_alive
    matched = set()
    for ids in assoc.det_to_trk.values():
        matched.update(ids)
    for obj_id in matched:
        meta.keep_alive[obj_id] = min(config.max_trk_keep_alive, meta.keep_alive[obj_id] + 1)
    for obj_id in assoc.unmatched_trk:
        meta.unmatched_frames[obj_id].append(frame_idx)
        meta.keep_alive[obj_id] = max(config.min_trk_keep_alive, meta.keep_alive[obj_id] - 1)
    for obj_id, frames in meta.unmatched_frames.items():
        if obj_id in meta.removed or obj_id in removed_now:
            continue
        if len(frames) >= config.hotstart_unmatch_thresh and young(obj_id):
            removed_now.add(obj_id)
        if (meta.keep_alive[obj_id] <= 0 and not config.suppress_unmatched_only_within_hotstart
                and obj_id not in meta.removed and obj_id not in removed_now):
            suppressed.add(obj_id)
    for ids in assoc.det_to_trk.values():
        if len(ids) < 2:
            continue
        pick = max if reverse else min
        first = pick(ids, key=lambda x: meta.first_frame[x])
        for obj_id in ids:
            if obj_id != first:
                meta.overlap_pairs[(first, obj_id)].append(frame_idx)
    for (_, obj_id), frames in meta.overlap_pairs.items():
        if obj_id in meta.removed or obj_id in removed_now:
            continue
        if young(obj_id) and len(frames) >= config.hotstart_dup_thresh:
            removed_now.add(obj_id)
    meta.removed.update(removed_now)
    return removed_now


def suppress_by_recent_occlusion(masks: torch.Tensor, obj_ids: np.ndarray, meta: TrackMetadata, frame_idx: int,
                                 removed_now: set, reverse: bool, threshold: float) -> dict:
    """Official ``_suppress_overlapping_based_on_recent_occlusion``: of two masklets overlapping
    above ``threshold`` the one occluded more recently is pushed to the no-object logit (in place).
    Returns the new {obj_id: last occluded frame} record."""
    binary = masks > 0
    last = torch.cat([meta.last_occluded.get(
        int(obj_id), torch.full((1,), ALWAYS_OCCLUDED if obj_id in removed_now else NEVER_OCCLUDED,
                                dtype=torch.long)) for obj_id in obj_ids])
    suppress = torch.zeros(len(obj_ids), dtype=torch.bool)
    if len(obj_ids) > 1:
        pairs = torch.triu(mask_iou(binary, binary) >= threshold, diagonal=1)
        later = torch.gt if not reverse else torch.lt
        li, lj = last[:, None], last[None, :]
        suppress_i = pairs & later(li, lj) & (lj > -1)
        suppress_j = pairs & later(lj, li) & (li > -1)
        suppress = suppress_i.any(dim=1) | suppress_j.any(dim=0)
    occluded = ~binary.any(dim=(-1, -2)) | suppress
    new_last = last.clone()
    new_last[occluded] = frame_idx
    masks[suppress] = NO_OBJ_LOGIT
    return {int(obj_id): new_last[i:i + 1] for i, obj_id in enumerate(obj_ids)}


def non_overlap(masks: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) scores: only the highest-scoring object keeps each pixel (others clamped to -10)."""
    if masks.shape[0] == 1:
        return masks
    winner = masks.argmax(dim=0, keepdim=True)
    keep = winner == torch.arange(masks.shape[0])[:, None, None, None]
    return torch.where(keep, masks, masks.clamp(max=NO_OBJ_LOGIT))


def suppress_shrunk(masks: torch.Tensor, threshold: float = 0.3) -> torch.Tensor:
    """Official ``_suppress_object_pw_area_shrinkage``: an object losing more than 70% of its area
    to the pixel-wise non-overlap rule is suppressed entirely (the others stay as they were)."""
    after = non_overlap(masks)
    before_area = (masks > 0).sum(dim=(-1, -2)).clamp(min=1)
    ratio = (after > 0).sum(dim=(-1, -2)) / before_area
    keep = (ratio >= threshold)[..., None, None].expand_as(masks)
    return torch.where(keep, masks, masks.clamp(max=NO_OBJ_LOGIT))


def frame_outputs(obj_id_to_mask: dict, obj_id_to_score: dict, obj_id_to_tracker_score: dict, height: int,
                  width: int, hidden=()) -> dict:
    """Official ``_postprocess_output``: objects sorted by id, empty or hidden ones dropped, boxes
    (normalised xywh of the mask's pixel extent) taken before the object-wise non-overlap rule
    (the pixel goes to the object with the higher tracker score)."""
    ids = sorted(obj_id_to_mask)
    if not ids:
        return {"out_obj_ids": np.zeros(0, np.int64), "out_probs": np.zeros(0, np.float32),
                "out_boxes_xywh": np.zeros((0, 4), np.float32),
                "out_binary_masks": np.zeros((0, height, width), bool)}
    obj_ids = torch.tensor(ids, dtype=torch.int64)
    probs = torch.tensor([float(obj_id_to_score[i]) for i in ids])
    trk_probs = torch.tensor([float(obj_id_to_tracker_score.get(i, 0.0)) for i in ids])
    masks = torch.cat([obj_id_to_mask[i] for i in ids], dim=0)
    keep = masks.any(dim=(1, 2))
    hidden = list(hidden)
    if hidden:
        keep &= ~torch.isin(obj_ids, torch.tensor(hidden, dtype=torch.int64))
    index = torch.nonzero(keep).flatten()
    obj_ids, probs, trk_probs, masks = obj_ids[index], probs[index], trk_probs[index], masks[index]
    boxes = torch.zeros((len(index), 4))
    for row, mask in enumerate(masks):
        ys, xs = torch.nonzero(mask, as_tuple=True)
        x0, y0, x1, y1 = xs.min().item(), ys.min().item(), xs.max().item(), ys.max().item()
        boxes[row] = torch.tensor([x0 / width, y0 / height, (x1 - x0) / width, (y1 - y0) / height])
    if masks.shape[0] > 1:
        scored = torch.where(masks[:, None], trk_probs[:, None, None, None], torch.zeros(()))
        masks = (non_overlap(scored)[:, 0] > 0) & masks
    return {"out_obj_ids": obj_ids.numpy(), "out_probs": probs.numpy(), "out_boxes_xywh": boxes.numpy(),
            "out_binary_masks": masks.numpy()}
