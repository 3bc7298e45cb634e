"""Prompts and propagation of the concept video tracker: a text / exemplar-box prompt (which
restarts the session), clicks that add or refine one object on any frame, removing objects, and
propagation that decides from the action history what to run (the official
``Sam3VideoInferenceWithInstanceInteractivity``): everything again after a concept prompt, only
the clicked objects after clicks ("partial"), or the stored results ("fetch")."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from ..errors import InvalidInputError
from .video_concept import ConceptVideoState, ConceptVideoTracker
from .inputs import finite_numbers
from .video_prompts import fill_holes_in_mask_scores

FULL, PARTIAL, FETCH = "propagation_full", "propagation_partial", "propagation_fetch"


def _check_frame(state: ConceptVideoState, frame_idx) -> int:
    if isinstance(frame_idx, (bool, np.bool_)) or not isinstance(frame_idx, (int, np.integer)):
        raise InvalidInputError(f"frame_index must be an integer; got {frame_idx!r}")
    if not 0 <= int(frame_idx) < state.num_frames:
        raise InvalidInputError(f"frame_index {int(frame_idx)} is out of range: the video has {state.num_frames} "
                                f"frames (0..{state.num_frames - 1})")
    return int(frame_idx)


def _labels(values, count: int, name: str) -> list[int]:
    raw = np.asarray(values).reshape(-1).tolist()
    if len(raw) != count:
        raise InvalidInputError(f"got {count} {name.split('_')[0]}es/points but {len(raw)} {name}")
    if any(isinstance(v, float) and not v.is_integer() for v in raw) or any(v not in (0, 1) for v in raw):
        raise InvalidInputError(f"{name} must be 1 (positive) or 0 (negative); got {raw}")
    return [int(v) for v in raw]


class ConceptVideoPredictor(ConceptVideoTracker):
    """The concept tracker with the official prompt and propagation API (coordinates are
    relative to the frame, in [0, 1])."""

    # ---- prompts ----
    @torch.inference_mode()
    def add_prompt(self, state: ConceptVideoState, frame_idx: int, text: str | None = None, boxes_xywh=None,
                   box_labels=None, points=None, point_labels=None, obj_id=None) -> tuple[int, dict]:
        """Text and/or one exemplar box (normalised xywh) start the session over and return the
        frame's detections; points (normalised x, y) with labels add or refine ``obj_id``."""
        frame_idx = _check_frame(state, frame_idx)
        if points is not None:
            if text is not None or boxes_xywh is not None:
                raise InvalidInputError("give points alone: a text or box prompt cannot be combined with points")
            if obj_id is None:
                raise InvalidInputError("points refine or add one object: give its obj_id")
            return self.add_points(state, frame_idx, obj_id, points, point_labels)
        if text is None and boxes_xywh is None:
            raise InvalidInputError("add_prompt needs text, bounding_boxes or points")
        if text is not None and (not isinstance(text, str) or not text.strip()):
            raise InvalidInputError(f"text must be a non-empty string; got {text!r}")
        geometric = None
        if boxes_xywh is not None:
            if box_labels is None:
                raise InvalidInputError("give bounding_box_labels with bounding_boxes (1 positive, 0 negative)")
            boxes = finite_numbers(boxes_xywh, "bounding_boxes", "[[x, y, w, h], ...] relative to the frame")
            if boxes.ndim != 2 or boxes.shape[1] != 4 or boxes.shape[0] == 0:
                raise InvalidInputError(f"bounding_boxes must be a list of [x, y, w, h]; got shape {boxes.shape}")
            labels = _labels(box_labels, boxes.shape[0], "bounding_box_labels")
            if boxes.shape[0] != 1:
                raise InvalidInputError(f"an exemplar prompt takes one box; got {boxes.shape[0]}")
            cxcywh = np.concatenate([boxes[:, :2] + boxes[:, 2:] / 2, boxes[:, 2:]], axis=1)
            if (boxes < 0).any() or (boxes > 1).any() or (cxcywh < 0).any() or (cxcywh > 1).any():
                raise InvalidInputError("bounding_boxes are relative to the frame: x, y, w, h must lie in [0, 1]")
            geometric = (torch.from_numpy(cxcywh)[None], torch.tensor([[bool(labels[0])]]))
        self.reset_state(state)
        state.text = text if text is not None and text != "visual" else None
        if geometric is not None:
            state.geometric_prompt[frame_idx] = geometric
        out = self.run_frame(state, frame_idx, reverse=False)
        return frame_idx, self.postprocess(state, out)

    def _has_been_refined(self, state, obj_id: int) -> bool:
        return any(a["type"] in ("add", "refine") and a.get("obj_ids") and obj_id in a["obj_ids"]
                   for a in state.action_history)

    @torch.inference_mode()
    def add_points(self, state: ConceptVideoState, frame_idx: int, obj_id, points, point_labels) -> tuple[int, dict]:
        """Official ``add_tracker_new_points``: a new object gets its own masklet group; an existing
        one is corrected on this frame (detector-made conditioning frames nearby are dropped)."""
        if isinstance(obj_id, (bool, np.bool_)) or not isinstance(obj_id, (int, np.integer)):
            raise InvalidInputError(f"obj_id must be an integer; got {obj_id!r}")
        obj_id = int(obj_id)
        xy = finite_numbers(points, "points", "[[x, y], ...] relative to the frame")
        if xy.ndim == 1 and xy.size == 2:
            xy = xy[None]
        if xy.ndim != 2 or xy.shape[1] != 2 or xy.shape[0] == 0:
            raise InvalidInputError(f"points must be a list of [x, y] (relative to the frame); got shape {xy.shape}")
        if (xy < 0).any() or (xy > 1).any():
            raise InvalidInputError("points are relative to the frame: x and y must lie in [0, 1]")
        if point_labels is None:
            raise InvalidInputError("give point_labels with points (1 positive, 0 negative)")
        labels = _labels(point_labels, xy.shape[0], "point_labels")
        meta = self._metadata(state)
        self.encode_frame(state, frame_idx)
        if any(obj_id in ts.obj_ids for ts in state.tracker_states):
            state.action_history.append({"type": "refine", "frame_idx": frame_idx, "obj_ids": [obj_id]})
        else:
            if len(meta.obj_ids) >= self.config.max_num_objects:
                raise InvalidInputError(f"cannot add object {obj_id}: already tracking {len(meta.obj_ids)} objects "
                                        f"(the limit is {self.config.max_num_objects})")
            meta.obj_ids = np.concatenate([meta.obj_ids, np.array([obj_id], np.int64)])
            meta.max_obj_id = max(meta.max_obj_id, obj_id)
            state.action_history.append({"type": "add", "frame_idx": frame_idx, "obj_ids": [obj_id]})
        meta.obj_id_to_score[obj_id] = 1.0
        meta.tracker_scores[frame_idx][obj_id] = 1.0
        meta.removed.discard(obj_id)
        for suppressed in meta.suppressed.values():
            suppressed.discard(obj_id)
        pixels = xy * np.array([state.width, state.height], np.float32)
        new_mask = self._apply_clicks(state, frame_idx, obj_id, pixels, labels)
        # (the official asserts the frame went through detection or propagation before; any frame works here)
        state.frames_with_outputs.add(frame_idx)
        obj_id_to_mask = dict(state.cached_outputs.get(frame_idx, {}))
        obj_id_to_mask[obj_id] = new_mask
        suppressed = meta.suppressed[frame_idx]
        out = {"obj_id_to_mask": obj_id_to_mask, "obj_id_to_score": dict(meta.obj_id_to_score),
               "obj_id_to_tracker_score": meta.tracker_scores[frame_idx]}
        self.cache_outputs(state, frame_idx, obj_id_to_mask, suppressed)
        return frame_idx, self.postprocess(state, out, hidden=suppressed)

    def _apply_clicks(self, state: ConceptVideoState, frame_idx: int, obj_id: int, pixels: np.ndarray,
                      labels: list[int]) -> torch.Tensor:
        """The clicks (pixels) given to the object's masklet group (a new object: a new group);
        returns its (1, H, W) mask on the frame."""
        groups = [ts for ts in state.tracker_states if obj_id in ts.obj_ids]
        if groups:
            ts = groups[0]
        else:
            ts = self._new_tracker_state(state)
            state.tracker_states.append(ts)
        self.tracker.add_new_points_or_box(ts, frame_idx, obj_id, points=pixels, labels=labels, clear_old_points=True)
        consolidated = self.tracker._consolidate(ts, frame_idx, True, run_mem_encoder=False, at_video_res=True)
        logits = self.tracker._video_res(ts, consolidated.video_masks)
        logits = fill_holes_in_mask_scores(logits, self.config.fill_hole_area)
        self.tracker._preflight(ts)
        self._clear_detector_cond_frames(ts, obj_id, frame_idx)
        return (logits[ts.obj_ids.index(obj_id)] > 0).cpu()

    def _prepare_groups(self, groups) -> None:
        """Before a partial propagation: prompts not yet consolidated get their memory."""
        for ts in groups:
            self.tracker._preflight(ts)

    def _clear_detector_cond_frames(self, ts, obj_id: int, frame_idx: int) -> None:
        index = ts.obj_index(obj_id)
        window = self.config.refinement_cond_frame_window
        frames = [t for t in ts.mask_inputs[index] if t not in ts.point_inputs[index] and abs(t - frame_idx) <= window]
        for t in frames:
            for other in list(ts.obj_ids):
                self.tracker.clear_all_points_in_frame(ts, t, other, need_output=False)

    @torch.inference_mode()
    def remove_object(self, state: ConceptVideoState, obj_id, is_user_action: bool = True) -> None:
        meta = state.meta
        if isinstance(obj_id, (bool, np.bool_)) or not isinstance(obj_id, (int, np.integer)):
            raise InvalidInputError(f"obj_id must be an integer; got {obj_id!r}")
        obj_id = int(obj_id)
        if meta is None or obj_id not in meta.obj_ids:
            raise InvalidInputError(f"unknown object id {obj_id}; the objects in this session are {state.obj_ids}")
        self._remove_from_trackers(state, obj_id)
        if is_user_action:
            state.action_history.append({"type": "remove", "frame_idx": None, "obj_ids": [obj_id]})
        meta.obj_ids = meta.obj_ids[meta.obj_ids != obj_id]
        meta.obj_id_to_score.pop(obj_id, None)
        meta.motion.pop(obj_id, None)  # a later object under this id starts a motion record of its own
        for frame_cache in state.cached_outputs.values():
            frame_cache.pop(obj_id, None)

    # ---- propagation ----
    def _plan(self, state: ConceptVideoState) -> tuple[str, list | None]:
        """Official ``parse_action_history_for_propagation``."""
        history = state.action_history
        if not history:
            return FULL, None
        last = history[-1]
        if "propagation" in last["type"]:
            if last["type"] == FETCH:
                return FETCH, None
            if (len(history) > 1 and history[-2]["type"] in (PARTIAL, FULL)) or \
                    last["frame_idx"] in (0, state.num_frames - 1):
                return FETCH, None
            return last["type"], last["obj_ids"]
        obj_ids = []
        for action in reversed(history):
            if "propagation" in action["type"]:
                break
            if action["type"] in ("add", "refine"):
                obj_ids.extend(action["obj_ids"])
        return (PARTIAL, list(set(obj_ids))) if obj_ids else (FETCH, None)

    def _order(self, state, start, max_frames, reverse):
        """Official ``Sam3VideoInference._get_processing_order`` (backward starts before ``start``)."""
        if start is None:
            if not state.frames_with_outputs:
                raise InvalidInputError("no prompts yet: add a text, box or point prompt before propagating")
            start = min(state.frames_with_outputs)
        else:
            start = _check_frame(state, start)
        if max_frames is None:
            max_frames = state.num_frames
        if isinstance(max_frames, (bool, np.bool_)) or not isinstance(max_frames, (int, np.integer)) or max_frames < 0:
            raise InvalidInputError(f"max_frame_num_to_track must be a non-negative integer; got {max_frames!r}")
        if reverse:
            end = max(start - int(max_frames), 0)
            return range(start - 1, end - 1, -1), end
        end = min(start + int(max_frames), state.num_frames - 1)
        return range(start, end + 1), end

    @torch.inference_mode()
    def propagate_in_video(self, state: ConceptVideoState, start_frame_idx: int | None = None,
                           max_frame_num_to_track: int | None = None,
                           reverse: bool = False) -> Iterator[tuple[int, dict]]:
        kind, obj_ids = self._plan(state)
        order, end = self._order(state, start_frame_idx, max_frame_num_to_track, reverse)
        state.action_history.append({"type": kind, "frame_idx": start_frame_idx, "obj_ids": obj_ids})
        if kind == FULL:
            yield from self._propagate_full(state, order, end, reverse)
        elif kind == FETCH:
            meta = self._metadata(state)
            for frame_idx in order:
                out = {"obj_id_to_mask": state.cached_outputs.get(frame_idx, {}),
                       "obj_id_to_score": meta.obj_id_to_score,
                       "obj_id_to_tracker_score": meta.tracker_scores[frame_idx]}
                yield frame_idx, self.postprocess(state, out, hidden=meta.suppressed[frame_idx])
        else:
            yield from self._propagate_partial(state, order, reverse, obj_ids)

    def _propagate_full(self, state, order, end: int, reverse: bool):
        delay = self.config.hotstart_delay
        buffer, removed = [], set()
        for frame_idx in order:
            out = self.run_frame(state, frame_idx, reverse)
            if delay > 0:
                buffer.append((frame_idx, out))
                removed.update(out["removed_obj_ids"])
                if frame_idx == end:
                    ready, buffer = buffer, []
                elif len(buffer) >= delay:
                    ready, buffer = buffer[:1], buffer[1:]
                else:
                    ready = []
            else:
                ready = [(frame_idx, out)]
            for t, item in ready:
                hidden = set(item["suppressed_obj_ids"]) | removed
                outputs = self.postprocess(state, item, hidden=hidden)
                self.cache_outputs(state, t, item["obj_id_to_mask"], hidden)
                yield t, outputs

    def _propagate_partial(self, state, order, reverse: bool, obj_ids: list):
        meta = self._metadata(state)
        groups = [ts for ts in state.tracker_states if set(obj_ids) & set(ts.obj_ids)]
        self._prepare_groups(groups)
        for frame_idx in order:
            self.encode_frame(state, frame_idx)
            ids, low_res, scores = self._propagate_states(state, groups, frame_idx, reverse, run_mem_encoder=True)
            refined = {}
            for obj_id in obj_ids:
                if obj_id in ids:
                    row = ids.index(obj_id)
                    meta.tracker_scores[frame_idx][obj_id] = scores[row].item()
                    refined[obj_id] = self._video_res(state, low_res[row:row + 1])[0]
            obj_id_to_mask = dict(state.cached_outputs.get(frame_idx, {}))
            obj_id_to_mask.update(refined)
            suppressed = meta.suppressed[frame_idx]
            out = {"obj_id_to_mask": obj_id_to_mask, "obj_id_to_score": meta.obj_id_to_score,
                   "obj_id_to_tracker_score": meta.tracker_scores[frame_idx]}
            self.cache_outputs(state, frame_idx, obj_id_to_mask, suppressed)
            yield frame_idx, self.postprocess(state, out, hidden=suppressed)
