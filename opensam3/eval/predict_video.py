"""Concept-tracking predictions for an SA-Co/VEval-style video dataset, through the official
session protocol (``Sam3VideoPredictor.handle_request``): every video-phrase pair is a text
prompt on frame 0 propagated forward; every object id the predictor outputs becomes one masklet.

A masklet's score is the mean of the predictor's per-frame probabilities over the frames where it
is output (the evaluator keeps masklets scoring >= 0.5, as SA-Co does).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from opensam3.data import rle
from opensam3.eval.saco_io import load_video_ground_truth


def _video_pairs(gt) -> list[tuple[Any, Any, str]]:
    """(video id, category id, phrase) of every pair to prompt."""
    names = {}
    for masklet in gt.masklets:
        names.setdefault(masklet["category_id"], masklet.get("noun_phrase"))
    if gt.video_np_pairs is not None:
        return [(p["video_id"], p["category_id"], p.get("noun_phrase") or names[p["category_id"]])
                for p in gt.video_np_pairs]
    return sorted({(m["video_id"], m["category_id"], names[m["category_id"]]) for m in gt.masklets}, key=str)


def predict_video_dataset(sam, gt_path: str | Path, media_dir: str | Path, progress: bool = False,
                          **predictor_options) -> list[dict]:
    """Masklet predictions (``video_id``, ``category_id``, per-frame ``segmentations`` RLE or None,
    ``bboxes`` xywh pixels or None, ``score``) for every video-phrase pair of ``gt_path``; frames
    are read from ``media_dir/<video_name>`` (a frame folder or a video file)."""
    gt = load_video_ground_truth(gt_path)
    predictor = sam.video_predictor(**predictor_options)
    pairs = _video_pairs(gt)
    by_video: dict[Any, list[tuple[Any, str]]] = {}
    for video_id, category_id, phrase in pairs:
        by_video.setdefault(video_id, []).append((category_id, phrase))
    iterator = list(by_video.items())
    if progress:
        from tqdm import tqdm

        iterator = tqdm(iterator, desc="predict-videos", dynamic_ncols=True)
    predictions = []
    for video_id, prompts in iterator:
        video = gt.videos[video_id]
        session = predictor.handle_request({"type": "start_session",
                                            "resource_path": str(Path(media_dir) / video["video_name"])})["session_id"]
        try:
            num_frames = int(video.get("length") or len(video["file_names"]))
            for category_id, phrase in prompts:
                predictor.handle_request({"type": "reset_session", "session_id": session})
                predictor.handle_request({"type": "add_prompt", "session_id": session, "frame_index": 0, "text": phrase})
                tracks: dict[int, dict] = {}
                for item in predictor.handle_stream_request({"type": "propagate_in_video", "session_id": session,
                                                             "propagation_direction": "forward"}):
                    t, outputs = item["frame_index"], item["outputs"]
                    for obj_id, prob, mask in zip(outputs["out_obj_ids"], outputs["out_probs"],
                                                  outputs["out_binary_masks"]):
                        track = tracks.setdefault(int(obj_id), {"masks": {}, "probs": []})
                        mask = np.asarray(mask, dtype=bool)
                        if mask.any():
                            track["masks"][t] = rle.encode(mask)
                            track["probs"].append(float(prob))
                for track in tracks.values():
                    if not track["probs"]:
                        continue
                    segmentations = [track["masks"].get(t) for t in range(num_frames)]
                    predictions.append({
                        "video_id": video_id, "category_id": category_id, "segmentations": segmentations,
                        "bboxes": [rle.to_bbox(s) if s is not None else None for s in segmentations],
                        "score": float(np.mean(track["probs"])),
                    })
        finally:
            predictor.handle_request({"type": "close_session", "session_id": session})
    return predictions
