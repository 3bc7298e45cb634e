"""Identity through a full occlusion in concept video tracking, on synthetic clips.

Every synthetic clip (opensam3.synth.clip) has a "passer": a small object whose path runs
straight behind a large occluder, so it is fully hidden for a few frames mid-clip and then comes
back. Its own four-word phrase ("small striped red star") is the text prompt on frame 0; a
look-alike bouncer answers the same phrase in half the clips, so only motion tells them apart.
On each frame the output mask covering the passer at IoU >= 0.5 gives its id there.
"""

from __future__ import annotations

import numpy as np

IOU_FOUND = 0.5


def passer_ids(predictor, clip, passer: int) -> dict[int, int | None]:
    """Frame -> id of the output covering the passer at IoU >= 0.5 (None where none does), from
    a :class:`~opensam3.predictor.video_session.Sam3VideoPredictor` prompted with its phrase."""
    from opensam3.synth.phrases import concept_of

    phrase = concept_of(clip.objects[passer], ("size", "pattern", "color")).phrase
    session = predictor.handle_request({"type": "start_session", "resource_path": clip.frames})["session_id"]
    try:
        predictor.handle_request({"type": "add_prompt", "session_id": session, "frame_index": 0, "text": phrase})
        ids: dict[int, int | None] = {}
        for item in predictor.handle_stream_request({"type": "propagate_in_video", "session_id": session,
                                                     "propagation_direction": "forward"}):
            truth = clip.masks[item["frame_index"], passer]
            best_iou, best_id = IOU_FOUND, None
            for obj_id, mask in zip(item["outputs"]["out_obj_ids"], item["outputs"]["out_binary_masks"]):
                union = (mask | truth).sum()
                iou = (mask & truth).sum() / union if union else 0.0
                if iou >= best_iou:
                    best_iou, best_id = iou, int(obj_id)
            ids[item["frame_index"]] = best_id
    finally:
        predictor.handle_request({"type": "close_session", "session_id": session})
    return ids


def before_and_after(clip, passer: int, ids: dict[int, int | None]) -> tuple[int | None, list[int | None]]:
    """The passer's last id before it is first hidden, and its ids (None: not found) on the
    frames where it is visible after its last hidden frame."""
    hidden = np.nonzero(~clip.present()[:, passer])[0]
    if not len(hidden):
        return None, []
    before = [ids[t] for t in range(int(hidden[0])) if ids.get(t) is not None]
    after = [ids.get(t) for t in range(int(hidden[-1]) + 1, clip.num_frames) if clip.present()[t, passer]]
    return (before[-1] if before else None), after


def evaluate_identity_through_occlusion(sam, seed: int | None = None, num_clips: int = 20, **predictor_options) -> dict:
    """Over ``num_clips`` held-out clips (seed 21 by default, as the tracking evaluation): of the
    frames where the passer is visible again after its occlusion, how many show it at all
    (``found``) and how many under the id it had before (``same_id``); and of the clips where
    it was found both before and after, in how many every found frame keeps that id."""
    from opensam3.synth.clip import clip_stream
    from opensam3.train.memory import EVAL_SEED

    predictor = sam.video_predictor(**predictor_options)
    stream = clip_stream(EVAL_SEED if seed is None else seed, size=sam.model.config.image_size)
    frames = found = same = clips_scored = clips_kept = 0
    for _ in range(num_clips):
        clip = next(stream)
        passer = next(i for i, role in clip.roles.items() if role == "passer")
        before, after = before_and_after(clip, passer, passer_ids(predictor, clip, passer))
        seen_after = [obj_id for obj_id in after if obj_id is not None]
        frames += len(after)
        found += len(seen_after)
        same += sum(obj_id == before for obj_id in seen_after) if before is not None else 0
        if before is not None and seen_after:
            clips_scored += 1
            clips_kept += all(obj_id == before for obj_id in seen_after)
    return {"clips": num_clips, "frames_after": frames, "found": found, "same_id": same,
            "clips_found_before_and_after": clips_scored, "clips_keeping_id": clips_kept}
