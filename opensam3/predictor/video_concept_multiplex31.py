"""SAM 3.1 concept video tracking: the official dense pipeline (``Sam3MultiplexBase``) on our
modules. Detection, association, hot-start, re-conditioning, occlusion suppression and the
outputs are those of :mod:`.video_concept` (same rules, same defaults); what changes is where the
masklets live: in multiplex groups (one official "inference state" each) whose objects share
buckets of ``multiplex_count`` slots, so one memory-attention + decoder + memory-encoder pass
serves a whole bucket (docs/sam31_multiplex_notes.md, section 4.2).

Per frame:
1. one ViT pass: detector levels, and the interactive and propagation features rounded through
   bf16 (as the official hands them to the tracker);
2. every group is propagated one frame, without encoding memory; masks re-sorted into the
   session's object order;
3. association and heuristics; re-conditioned objects get the detection's mask as a mask input
   (their output, pointer and conditioning flag on that frame);
4. memories: every object's low-res mask upsampled to the memory encoder's input size, objects
   that lose most of their area to overlaps suppressed, presence from emptiness (+-10), one
   encoder pass per group with its conditioning objects flagged;
5. new detections join the group with the fewest free slots that still holds all of them (the
   frame's memory of that group is encoded again with them, flagged as conditioning), else open
   a new group whose frame is a conditioning frame.

Clicks (``add_prompt`` with points and an ``obj_id``) add an object or refine one: the
interactive head decodes them; a refined object leaves its shared group first (its outputs and
pointers go with it, not the shared bucket memories), as in
:class:`~opensam3.predictor.video_multiplex31.Multiplex31VideoTracker`; the partial propagation
that follows re-tracks its group only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from ..model.tracker.tracking import FrameFeatures
from .video_concept import ConceptVideoState, Detections
from .video_concept_prompts import ConceptVideoPredictor
from .video_concept_rules import suppress_shrunk
from .video_multiplex31_state import ObjectGroup, PromptOutput, StoredFrame
from .video_prompts import fill_holes_in_mask_scores, point_prompt

__all__ = ["ConceptMultiplex31Predictor", "ConceptGroup"]


@dataclass
class ConceptGroup(ObjectGroup):
    """A multiplex group of the concept pipeline. ``cond_objects``: per frame, the objects whose
    mask there came from a detection (the memory encoder's conditioning channel);
    ``clicked``: the frames where its object was clicked (a clicked object is alone in its
    group); ``memory_input``: the last encoded frame's (frame, masks (n, 1, S, S), scores (n, 1)), kept
    so that objects joining the group on that frame can be encoded with their bucket-mates."""

    cond_objects: dict[int, set[int]] = field(default_factory=dict)
    clicked: set[int] = field(default_factory=set)  # frames where the object was clicked
    memory_input: tuple[int, torch.Tensor, torch.Tensor] | None = None

    def drop(self, obj_id: int) -> None:
        super().drop(obj_id)
        for objects in self.cond_objects.values():
            objects.discard(obj_id)
        self.memory_input = None


class ConceptMultiplex31Predictor(ConceptVideoPredictor):
    """Concept tracking in video with SAM 3.1's multiplex tracker (official session API through
    :class:`~opensam3.predictor.video_session.Sam3VideoPredictor`):
    ``ConceptMultiplex31Predictor(Multiplex31VideoTracker(...), config=ConceptVideoConfig())``."""

    @property
    def _slots_per_bucket(self) -> int:
        return self.tracker.objects_per_bucket

    def _frame_features(self, state: ConceptVideoState, frame_idx: int) -> tuple[FrameFeatures, FrameFeatures]:
        self.encode_frame(state, frame_idx)  # cached for the frame being processed
        return state.features[frame_idx]

    def _decode_masks(self, state: ConceptVideoState, frame_idx: int, masks: torch.Tensor) -> PromptOutput:
        """Detection mask logits (n, h, w) as mask prompts on the frame (one batch)."""
        interactive, _ = self._frame_features(state, frame_idx)
        return self.tracker.decode_masks(interactive, self._mask_input(masks)[:, None].to(self.device))

    # ---- tracker steps (the hooks of ConceptVideoTracker) ----
    def _propagate_states(self, state: ConceptVideoState, groups, frame_idx: int, reverse: bool,
                          run_mem_encoder: bool):
        """Every group one frame on: ids in session order, hole-filled low-res logits (N, L, L) and
        object score logits (N,). A group's conditioning frame gives its stored output."""
        ids, masks, scores = [], [], []
        for group in groups:
            if not group.obj_ids:
                continue
            stored = group.frames.get(frame_idx)
            if frame_idx not in group.cond or stored is None or stored.masks.shape[0] != len(group.obj_ids):
                stored = self._track_group(state, group, frame_idx, reverse, run_mem_encoder)
            ids.extend(group.obj_ids)
            masks.append(stored.masks[:, 0].float())
            scores.append(stored.scores[:, 0].float())
        size = self.tracker.config.low_res_size
        if not masks:
            return [], torch.zeros((0, size, size)), torch.zeros(0)
        # the official re-sorts the states' objects; rows follow the session's object list
        row = {obj_id: i for i, obj_id in enumerate(ids)}
        ordered = self._in_session_order(state, ids)
        index = torch.tensor([row[obj_id] for obj_id in ordered])
        low_res = fill_holes_in_mask_scores(torch.cat(masks)[index][:, None], self.config.fill_hole_area)[:, 0]
        return ordered, low_res.cpu(), torch.cat(scores)[index].cpu()

    @staticmethod
    def _in_session_order(state: ConceptVideoState, ids: list[int]) -> list[int]:
        """``ids`` in the order of the session's object list, which run_frame's rows follow
        (ascending, unless a click added an id below an existing one)."""
        known = {} if state.meta is None else {int(obj_id): k for k, obj_id in enumerate(state.meta.obj_ids)}
        return sorted(ids, key=lambda obj_id: (known.get(obj_id, len(known)), obj_id))

    def _track_group(self, state: ConceptVideoState, group: ConceptGroup, frame_idx: int, reverse: bool,
                     run_mem_encoder: bool) -> StoredFrame:
        _, features = self._frame_features(state, frame_idx)
        return self.tracker.track_group(state, group, features, frame_idx, reverse, run_mem_encoder,
                                        self._conditioning(group, frame_idx))

    def _conditioning(self, group: ConceptGroup, frame_idx: int) -> torch.Tensor:
        flagged = group.cond_objects.get(frame_idx, set())
        return torch.tensor([obj_id in flagged for obj_id in group.obj_ids], dtype=torch.bool, device=self.device)

    def _encode_group_memory(self, state: ConceptVideoState, group: ConceptGroup, frame_idx: int,
                             masks: torch.Tensor, scores: torch.Tensor) -> None:
        tracker = self.tracker
        _, features = self._frame_features(state, frame_idx)
        memory, _ = tracker.tracker.encode_memory(features.image, masks.to(self.device, tracker.dtype),
                                                  scores.to(self.device, tracker.dtype), group.slots,
                                                  conditioning=self._conditioning(group, frame_idx))
        group.frames[frame_idx].memory = memory.to(tracker.memory_dtype)
        # kept only while newcomers could still join (a full-size mask is 5 MB an object)
        group.memory_input = (frame_idx, masks, scores) if group.slots.free_slots else None

    def _update_memories(self, state: ConceptVideoState, frame_idx: int, low_res: torch.Tensor) -> None:
        """Official ``_tracker_update_memories`` for multiplex groups: one encoder pass per group."""
        groups = [group for group in state.tracker_states if group.obj_ids]
        if not groups:
            return
        size = self.tracker.config.mask_input_size
        high = F.interpolate(low_res[:, None], size=(size, size), mode="bilinear", align_corners=False)
        high = suppress_shrunk(high)
        scores = torch.where((high > 0).any(dim=(-1, -2)), 10.0, -10.0)
        # low_res rows are in the order _propagate_states returned them
        ordered = self._in_session_order(state, [obj_id for group in groups for obj_id in group.obj_ids])
        row_of = {obj_id: i for i, obj_id in enumerate(ordered)}
        for group in groups:
            rows = torch.tensor([row_of[obj_id] for obj_id in group.obj_ids])
            self._encode_group_memory(state, group, frame_idx, high[rows], scores[rows])

    def _recondition(self, state, frame_idx, det: Detections, trk_to_det: dict, prev_ids, obj_scores) -> None:
        """Confident masklets matched by a confident detection take its mask as a new mask input
        on this frame (output, pointer, conditioning flag); memories follow in _update_memories."""
        chosen = {obj_id: det_idx for obj_id, det_idx in trk_to_det.items()
                  if obj_scores[int(np.nonzero(prev_ids == obj_id)[0].item())] > 0.8}
        for group in state.tracker_states:
            mine = [obj_id for obj_id in group.obj_ids if obj_id in chosen]
            if not mine:
                continue
            decoded = self._decode_masks(state, frame_idx, det.masks[torch.tensor([chosen[o] for o in mine])])
            low, scores, pointers = decoded.low_res, decoded.score, decoded.pointer
            stored = group.frames[frame_idx]
            rows = torch.tensor([group.row(obj_id) for obj_id in mine])
            masks, object_scores = stored.masks.clone(), stored.scores.clone()
            masks[rows], object_scores[rows] = low.to(masks.dtype), scores.to(object_scores.dtype)
            data_pointers = group.slots.demux(stored.pointers).clone()
            data_pointers[rows] = pointers.to(data_pointers.dtype)
            stored.masks, stored.scores, stored.pointers = masks, object_scores, group.slots.mux(data_pointers)
            group.cond.add(frame_idx)
            group.cond_objects.setdefault(frame_idx, set()).update(mine)

    def _add_objects(self, state, frame_idx: int, obj_ids, masks: torch.Tensor) -> None:
        """New detections: into the group with the fewest free slots that holds them all (official
        placement), else a new group."""
        tracker = self.tracker
        obj_ids = [int(obj_id) for obj_id in obj_ids]
        decoded = self._decode_masks(state, frame_idx, masks)
        low, for_memory, scores, pointers = decoded.low_res, decoded.for_memory, decoded.score, decoded.pointer
        count = len(obj_ids)
        joinable = [group for group in state.tracker_states
                    if self._slots_per_bucket == tracker.config.multiplex_count and group.slots.free_slots >= count
                    and group.memory_input is not None and group.memory_input[0] == frame_idx]
        if joinable:
            group = min(joinable, key=lambda g: g.slots.free_slots)
            stored = group.frames[frame_idx]
            data_pointers = group.slots.demux(stored.pointers)
            group.slots.add_objects(count)
            group.obj_ids.extend(obj_ids)
            stored.masks = torch.cat([stored.masks, low.to(stored.masks.dtype)])
            stored.scores = torch.cat([stored.scores, scores.to(stored.scores.dtype)])
            stored.pointers = group.slots.mux(torch.cat([data_pointers, pointers.to(data_pointers.dtype)]))
            _, old_masks, old_scores = group.memory_input
            mask_size = old_masks.shape[-1]
            new_masks = F.interpolate(for_memory.float(), size=(mask_size, mask_size), mode="bilinear",
                                      align_corners=False)
            group.cond_objects.setdefault(frame_idx, set()).update(obj_ids)
            self._encode_group_memory(state, group, frame_idx,
                                      torch.cat([old_masks, new_masks.to(old_masks.device, old_masks.dtype)]),
                                      torch.cat([old_scores, scores.to(old_scores.device, old_scores.dtype)]))
            return
        group = ConceptGroup(frame_idx, obj_ids, slots=tracker._layout(count), cond={frame_idx})
        group.cond_objects[frame_idx] = set(obj_ids)
        _, features = self._frame_features(state, frame_idx)
        group.frames[frame_idx] = StoredFrame(low, scores, None, features.image, features.pos,
                                              group.slots.mux(pointers))
        self._encode_group_memory(state, group, frame_idx, for_memory, scores)
        state.tracker_states.append(group)

    def _remove_from_trackers(self, state, obj_id: int) -> None:
        for group in state.tracker_states:
            if obj_id in group.obj_ids:
                group.drop(obj_id)
        state.tracker_states[:] = [group for group in state.tracker_states if group.obj_ids]

    # ---- clicks ----
    def _apply_clicks(self, state: ConceptVideoState, frame_idx: int, obj_id: int, pixels: np.ndarray,
                      labels: list[int]) -> torch.Tensor:
        """Clicks decoded by the interactive head alone. A new object opens a group of its own; an
        object sharing a group first moves out of it (keeping its outputs and pointers, not the
        shared bucket memories), as in :class:`Multiplex31VideoTracker`. The clicked frame becomes
        a conditioning frame, and detector-made conditioning frames nearby stop conditioning it."""
        tracker = self.tracker
        interactive, propagation = self._frame_features(state, frame_idx)
        coords, point_labels = point_prompt(pixels, labels, None, state.width, state.height, tracker.config.image_size,
                                            self.device)
        decoded = tracker.decode_points(interactive, coords, point_labels)
        low, score = decoded.low_res, decoded.score
        group = next((g for g in state.tracker_states if obj_id in g.obj_ids), None)
        if group is None:
            group = ConceptGroup(frame_idx, [obj_id], slots=tracker._layout(1))
            state.tracker_states.append(group)
        elif len(group.obj_ids) > 1:
            group = group.extract(obj_id, tracker.config.multiplex_count)
            state.tracker_states.append(group)
        group.clicked.add(frame_idx)
        window = self.config.refinement_cond_frame_window
        group.cond = {t for t in group.cond if t in group.clicked or abs(t - frame_idx) > window}
        group.cond.add(frame_idx)
        group.cond_objects[frame_idx] = {obj_id}
        group.frames[frame_idx] = StoredFrame(low, score, None, propagation.image, propagation.pos,
                                              group.slots.mux(decoded.pointer))
        self._encode_group_memory(state, group, frame_idx, decoded.for_memory, score)
        filled = fill_holes_in_mask_scores(low.float(), self.config.fill_hole_area)
        return self._video_res(state, filled[:, 0])[0].cpu()

    def _prepare_groups(self, groups) -> None:
        """Nothing to do: a multiplex group's memory is encoded when its prompt arrives."""
