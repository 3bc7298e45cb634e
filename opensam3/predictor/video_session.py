"""The official SAM 3 video predictor protocol: requests as dicts, sessions by id.

    predictor = build_sam3_video_predictor(checkpoint_path="sam3.pt")
    sid = predictor.handle_request({"type": "start_session", "resource_path": "clip.mp4"})["session_id"]
    predictor.handle_request({"type": "add_prompt", "session_id": sid, "frame_index": 0, "text": "a dog"})
    for item in predictor.handle_stream_request({"type": "propagate_in_video", "session_id": sid}):
        item["frame_index"], item["outputs"]["out_obj_ids"], item["outputs"]["out_binary_masks"]
    predictor.handle_request({"type": "close_session", "session_id": sid})

Request and response keys, coordinates (relative to the frame, boxes as x, y, w, h) and output
arrays are those of the official ``Sam3VideoPredictor``: ``out_obj_ids`` (N,) int64,
``out_probs`` (N,) float32, ``out_boxes_xywh`` (N, 4) float32 normalised, ``out_binary_masks``
(N, H, W) bool at the video's resolution. Malformed requests raise :class:`InvalidInputError`
naming the problem (the official raises RuntimeError / AssertionError).
"""

from __future__ import annotations

import dataclasses
import gc
import os
import uuid
from collections.abc import Iterator

import torch

from ..errors import InvalidInputError
from ..model.tracker.multiplex import DEFAULT_BUCKET_SIZE
from .video_concept_prompts import ConceptVideoPredictor
from .video_concept_rules import ConceptVideoConfig

REQUEST_TYPES = ("start_session", "add_prompt", "remove_object", "reset_session", "close_session")
STREAM_REQUEST_TYPES = ("propagate_in_video",)
DIRECTIONS = ("both", "forward", "backward")


class Sam3VideoPredictor:
    """Sessions of concept video tracking on one model (each session: one video, its prompts,
    masklets and results; sessions are independent)."""

    def __init__(self, model: ConceptVideoPredictor):
        self.model = model
        self._sessions: dict[str, dict] = {}

    # ---- dispatch ----
    def handle_request(self, request: dict) -> dict:
        kind = self._kind(request, REQUEST_TYPES, "handle_request")
        with torch.inference_mode():
            if kind == "start_session":
                return self.start_session(self._field(request, "resource_path"), request.get("session_id"))
            if kind == "add_prompt":
                return self.add_prompt(self._field(request, "session_id"), self._field(request, "frame_index"),
                                       text=request.get("text"), points=request.get("points"),
                                       point_labels=request.get("point_labels"),
                                       bounding_boxes=request.get("bounding_boxes"),
                                       bounding_box_labels=request.get("bounding_box_labels"),
                                       obj_id=request.get("obj_id"))
            if kind == "remove_object":
                return self.remove_object(self._field(request, "session_id"), self._field(request, "obj_id"),
                                          request.get("is_user_action", True))
            if kind == "reset_session":
                return self.reset_session(self._field(request, "session_id"))
            return self.close_session(self._field(request, "session_id"))

    def handle_stream_request(self, request: dict) -> Iterator[dict]:
        kind = self._kind(request, STREAM_REQUEST_TYPES, "handle_stream_request")
        assert kind == "propagate_in_video"
        session_id = self._field(request, "session_id")
        direction = request.get("propagation_direction", "both")
        if direction not in DIRECTIONS:
            raise InvalidInputError(f"invalid propagation_direction {direction!r}; use one of {DIRECTIONS}")
        # checked now, so a bad request fails at the call rather than at the first next()
        self._session(session_id)
        return self._propagate(session_id, direction, request.get("start_frame_index"),
                               request.get("max_frame_num_to_track"))

    @staticmethod
    def _kind(request, allowed, method: str) -> str:
        if not isinstance(request, dict):
            raise InvalidInputError(f"a request is a dict with a 'type'; got {type(request).__name__}")
        kind = request.get("type")
        if kind not in allowed:
            hint = " (propagate_in_video goes to handle_stream_request)" if kind in STREAM_REQUEST_TYPES else ""
            raise InvalidInputError(f"invalid request type {kind!r} for {method}; use one of {allowed}{hint}")
        return kind

    @staticmethod
    def _field(request: dict, key: str):
        if key not in request:
            raise InvalidInputError(f"{request['type']} request needs {key!r}")
        return request[key]

    def _session(self, session_id) -> dict:
        session = self._sessions.get(session_id)
        if session is None:
            raise InvalidInputError(f"unknown session id {session_id!r}: it was never started or is closed "
                                    f"(live sessions: {sorted(self._sessions)})")
        return session

    # ---- requests ----
    def start_session(self, resource_path, session_id: str | None = None) -> dict:
        if isinstance(resource_path, (str, os.PathLike)) and not os.path.exists(resource_path):
            raise InvalidInputError(f"resource_path {str(resource_path)!r} does not exist (give a video file, a "
                                    "folder of frames or an image)")
        if session_id and session_id in self._sessions:
            raise InvalidInputError(f"session id {session_id!r} is already in use")
        state = self.model.init_state(resource_path)
        session_id = session_id or str(uuid.uuid4())
        self._sessions[session_id] = {"state": state, "session_id": session_id}
        return {"session_id": session_id}

    def add_prompt(self, session_id, frame_index, text=None, points=None, point_labels=None, bounding_boxes=None,
                   bounding_box_labels=None, obj_id=None) -> dict:
        state = self._session(session_id)["state"]
        frame_index, outputs = self.model.add_prompt(state, frame_index, text=text, boxes_xywh=bounding_boxes,
                                                     box_labels=bounding_box_labels, points=points,
                                                     point_labels=point_labels, obj_id=obj_id)
        return {"frame_index": frame_index, "outputs": outputs}

    def remove_object(self, session_id, obj_id, is_user_action: bool = True) -> dict:
        state = self._session(session_id)["state"]
        self.model.remove_object(state, obj_id, is_user_action=is_user_action)
        return {"is_success": True}

    def reset_session(self, session_id) -> dict:
        self.model.reset_state(self._session(session_id)["state"])
        return {"is_success": True}

    def close_session(self, session_id) -> dict:
        """Free the session (idempotent, as the official)."""
        session = self._sessions.pop(session_id, None)
        if session is not None:
            session["state"].reset()
            session["state"].video.close()
            del session
            gc.collect()
        return {"is_success": True}

    # (the decorator, unlike a with-block, does not leak inference mode to the caller between frames)
    @torch.inference_mode()
    def _propagate(self, session_id, direction: str, start_frame_index, max_frame_num_to_track) -> Iterator[dict]:
        state = self._session(session_id)["state"]
        if direction in ("both", "forward"):
            for frame_index, outputs in self.model.propagate_in_video(state, start_frame_index,
                                                                      max_frame_num_to_track, reverse=False):
                yield {"frame_index": frame_index, "outputs": outputs}
        if direction in ("both", "backward"):
            for frame_index, outputs in self.model.propagate_in_video(state, start_frame_index,
                                                                      max_frame_num_to_track, reverse=True):
                yield {"frame_index": frame_index, "outputs": outputs}

    @property
    def session_ids(self) -> list[str]:
        return list(self._sessions)

    def shutdown(self) -> None:
        for session_id in list(self._sessions):
            self.close_session(session_id)


def build_concept_video_model(sam, config: ConceptVideoConfig | None = None, **tracker_options) -> ConceptVideoPredictor:
    """The concept video model on a loaded :class:`~opensam3.Sam3` (detector + tracker weights);
    by default the official rules, with re-identification as the model's config says."""
    config = config or concept_video_config(sam.model.config)
    return ConceptVideoPredictor(sam.video_tracker(**tracker_options), config=config)


def concept_video_config(model_config, apply_temporal_disambiguation: bool = True) -> ConceptVideoConfig:
    """The official rules (or their ablation without the temporal heuristics), plus the model
    config's opensam3 extensions."""
    config = ConceptVideoConfig() if apply_temporal_disambiguation else ConceptVideoConfig.without_heuristics()
    return dataclasses.replace(config, reidentify_lost=model_config.video_reidentify)


def build_sam3_video_predictor(checkpoint_path: str | os.PathLike | None = None, device: torch.device | str = "cpu",
                               dtype: torch.dtype = torch.float32, apply_temporal_disambiguation: bool = True,
                               multiplex: bool = True, bucket_size: int | None = DEFAULT_BUCKET_SIZE,
                               **kwargs) -> Sam3VideoPredictor:
    """The official ``build_sam3_video_predictor``: a :class:`Sam3VideoPredictor` on ``checkpoint_path``
    (the official sam3.pt, an opensam3 safetensors file, 'facebook/sam3', or None for the default).
    ``apply_temporal_disambiguation=False`` turns the hot-start and re-conditioning heuristics off,
    as the official. ``multiplex`` / ``bucket_size``: how the tracked objects share tracker passes
    (see :class:`~opensam3.predictor.video_tracker.VideoTracker`). Other official keyword arguments
    (bpe_path, async_loading_frames, ...) are accepted and ignored."""
    from ..api import load  # late: api imports the predictors
    from .video_build import is_multiplex31_checkpoint

    if is_multiplex31_checkpoint(checkpoint_path):  # a SAM 3.1 file: its tracker is the multiplex one
        return build_sam3_multiplex_video_predictor(checkpoint_path, device=device, dtype=dtype,
                                                    apply_temporal_disambiguation=apply_temporal_disambiguation)
    sam = load(checkpoint_path, device=device, dtype=dtype, tracker_dtype=torch.float32)
    config = concept_video_config(sam.model.config, apply_temporal_disambiguation)
    return Sam3VideoPredictor(build_concept_video_model(sam, config, multiplex=multiplex, bucket_size=bucket_size))


def build_sam3_multiplex_video_predictor(checkpoint_path: str | os.PathLike, device: torch.device | str = "cpu",
                                         dtype: torch.dtype = torch.float32, apply_temporal_disambiguation: bool = True,
                                         objects_per_bucket: int | None = None, **kwargs) -> Sam3VideoPredictor:
    """The official SAM 3.1 builder of that name: concept tracking with the multiplex tracker
    (``sam3.1_multiplex.pt`` or an opensam3 file of that layout), the same session protocol as
    :func:`build_sam3_video_predictor`. ``objects_per_bucket=1``: the per-object
    baseline of the same weights. Other official keyword arguments are accepted and ignored."""
    from .video_build import load_multiplex_tracker
    from .video_concept_multiplex31 import ConceptMultiplex31Predictor

    tracker = load_multiplex_tracker(checkpoint_path, device=device, dtype=dtype, objects_per_bucket=objects_per_bucket)
    config = ConceptVideoConfig() if apply_temporal_disambiguation else ConceptVideoConfig.without_heuristics()
    return Sam3VideoPredictor(ConceptMultiplex31Predictor(tracker, config=config))
