"""``opensam3 track VIDEO --text PHRASE [--point x,y[:neg] --frame N --obj-id K]... --out DIR``:
concept tracking through a video (every instance of the phrase), optionally with clicks that add
or refine objects, written as per-frame COCO-RLE JSON and an overlay MP4.

The run follows the official predictor protocol: the text prompt on ``--text-frame``, propagation
through the whole video (both directions), then each group of clicks (same frame and object) and
a propagation of the clicked objects. With a SAM 3.1 checkpoint the same protocol runs on its
multiplex tracker (``ConceptMultiplex31Predictor``); clicks without ``--text`` go to the
multiplex tracker alone (``Multiplex31VideoTracker``), each group followed by a propagation both
ways from its frame.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from ..errors import InvalidInputError


def add_track_parser(subparsers) -> argparse.ArgumentParser:
    from ..cli import _add_model_args

    track = subparsers.add_parser("track", help="track every instance of a concept through a video "
                                  "(text prompt, optional clicks); per-frame COCO-RLE JSON + overlay MP4")
    track.add_argument("video", metavar="VIDEO", help="video file (MP4, MOV, ...) or a folder of frames")
    track.add_argument("--text", metavar="PHRASE", help="noun phrase to find and track")
    track.add_argument("--text-frame", type=int, default=0, metavar="N", help="frame of the text prompt (default 0)")
    track.add_argument("--point", action="append", metavar="x,y[:neg]",
                       help="click in pixels of the frame; ':neg' = background; repeat for several")
    track.add_argument("--frame", action="append", type=int, metavar="N",
                       help="frame of the clicks: once for all, or once per --point (default 0)")
    track.add_argument("--obj-id", action="append", type=int, metavar="K",
                       help="object the clicks add or refine: once for all, or once per --point (default 1000)")
    track.add_argument("--reidentify", action=argparse.BooleanOptionalAction, default=None,
                       help="re-activate a lost object's id when a detection turns up where its motion puts it "
                            "(default: as the model's config says; on for the embedded model, off for official "
                            "weights, as the official code)")
    track.add_argument("--out", default="opensam3_track", help="output directory (default opensam3_track)")
    track.add_argument("--no-video", action="store_true", help="skip the overlay MP4")
    track.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_model_args(track)
    track.set_defaults(func=run_track)
    return track


def _per_point(values, count: int, flag: str, default: int) -> list[int]:
    if not values:
        return [default] * count
    if len(values) == 1:
        return values * count
    if len(values) != count:
        raise InvalidInputError(f"{flag} is given {len(values)} times for {count} --point; give it once or once per "
                                "--point")
    return list(values)


def _click_groups(args) -> list[tuple[int, int, list, list]]:
    """--point/--frame/--obj-id -> [(frame, obj_id, points (pixels), labels)] in first-seen order."""
    from ..cli import parse_point

    points = [parse_point(spec) for spec in args.point or []]
    frames = _per_point(args.frame, len(points), "--frame", 0)
    obj_ids = _per_point(args.obj_id, len(points), "--obj-id", 1000)
    groups: dict[tuple[int, int], tuple[list, list]] = {}
    for (xy, label), frame, obj_id in zip(points, frames, obj_ids):
        pts, labels = groups.setdefault((frame, obj_id), ([], []))
        pts.append(xy)
        labels.append(label)
    return [(frame, obj_id, pts, labels) for (frame, obj_id), (pts, labels) in groups.items()]


def run_track(args) -> int:
    import torch

    from ..api import load
    from ..data.video_io import open_video
    from .video_build import is_multiplex31_checkpoint

    if not args.text and not args.point:
        raise InvalidInputError("give --text PHRASE and/or --point x,y (with --frame and --obj-id)")
    if args.frame and not args.point or args.obj_id and not args.point:
        raise InvalidInputError("--frame and --obj-id go with --point")
    source = Path(args.video)
    if not source.exists():
        raise InvalidInputError(f"video not found: {args.video}")
    groups = _click_groups(args)
    video = open_video(source)
    height, width, num_frames = video.height, video.width, len(video)
    for frame, obj_id, pts, _ in groups:
        if not 0 <= frame < num_frames:
            raise InvalidInputError(f"--frame {frame} is out of range: the video has {num_frames} frames")
        for x, y in pts:
            if not (0 <= x <= width and 0 <= y <= height):
                raise InvalidInputError(f"--point {x:g},{y:g} lies outside the {width}x{height} frame (pixels)")
    if args.text and not 0 <= args.text_frame < num_frames:
        raise InvalidInputError(f"--text-frame {args.text_frame} is out of range: the video has {num_frames} frames")

    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]
    if is_multiplex31_checkpoint(args.checkpoint):
        if args.text:
            from .video_build import load_multiplex_tracker
            from .video_concept_multiplex31 import ConceptMultiplex31Predictor
            from .video_concept_rules import ConceptVideoConfig

            tracker = load_multiplex_tracker(args.checkpoint, config=args.config, device=args.device, dtype=dtype)
            config = ConceptVideoConfig(reidentify_lost=bool(args.reidentify))
            results = _track_with_session(args, ConceptMultiplex31Predictor(tracker, config=config), source, groups,
                                          width, height, num_frames)
        else:
            results = _track_clicks_multiplex31(args, video, groups, dtype)
    else:
        from .video_concept_prompts import ConceptVideoPredictor
        from .video_session import concept_video_config

        sam = load(args.checkpoint, config=args.config, device=args.device, dtype=dtype, tracker_dtype=torch.float32)
        if sam.memory is None:
            raise InvalidInputError("this checkpoint has no tracker weights, so it cannot track objects in video; use "
                                    "the official sam3.pt")
        config = concept_video_config(sam.model.config)
        if args.reidentify is not None:
            config = dataclasses.replace(config, reidentify_lost=args.reidentify)
        results = _track_with_session(args, ConceptVideoPredictor(sam.video_tracker(), config=config), source, groups,
                                      width, height, num_frames)
    _write_outputs(args, source, video, results)
    return 0


def _progress(args, passes: int, num_frames: int):
    from tqdm import tqdm

    return tqdm(total=passes * num_frames, desc="track", unit="frame", disable=args.quiet, file=sys.stderr)


def _track_with_session(args, concept, source: Path, groups, width: int, height: int,
                        num_frames: int) -> dict[int, dict]:
    """The official session protocol on a concept video predictor: the text prompt and a
    propagation both ways, then each group of clicks and a propagation of the clicked objects."""
    from .video_session import Sam3VideoPredictor

    predictor = Sam3VideoPredictor(concept)
    session = predictor.handle_request({"type": "start_session", "resource_path": str(source)})["session_id"]
    results: dict[int, dict] = {}
    progress = _progress(args, (1 if args.text else 0) + len(groups), num_frames)

    def propagate():
        for item in predictor.handle_stream_request({"type": "propagate_in_video", "session_id": session,
                                                     "propagation_direction": "both"}):
            results[item["frame_index"]] = item["outputs"]
            progress.update(1)

    try:
        if args.text:
            out = predictor.handle_request({"type": "add_prompt", "session_id": session,
                                            "frame_index": args.text_frame, "text": args.text})
            results[out["frame_index"]] = out["outputs"]
            propagate()
        for frame, obj_id, pts, labels in groups:
            rel = [[x / width, y / height] for x, y in pts]
            out = predictor.handle_request({"type": "add_prompt", "session_id": session, "frame_index": frame,
                                            "points": rel, "point_labels": labels, "obj_id": obj_id})
            results[out["frame_index"]] = out["outputs"]
            propagate()
    finally:
        progress.close()
        predictor.handle_request({"type": "close_session", "session_id": session})
    return results


def _track_clicks_multiplex31(args, video, groups, dtype) -> dict[int, dict]:
    """SAM 3.1 weights: each group of clicks goes to the multiplex tracker (a new object, or a
    correction of one), followed by a propagation both ways from its frame."""
    import torch

    from .video_build import load_multiplex_tracker
    from .video_concept_rules import frame_outputs

    tracker = load_multiplex_tracker(args.checkpoint, config=args.config, device=args.device, dtype=dtype)
    state = tracker.init_state(video)
    results: dict[int, dict] = {}

    def record(result) -> None:
        logits = result.object_score_logits
        probs = [1.0] * len(result.obj_ids) if logits is None else torch.sigmoid(logits).tolist()
        masks = {obj_id: result.masks[row:row + 1] for row, obj_id in enumerate(result.obj_ids)}
        scores = dict(zip(result.obj_ids, probs))
        results[result.frame_idx] = frame_outputs(masks, scores, scores, state.height, state.width)

    progress = _progress(args, len(groups), state.num_frames)
    try:
        for frame, obj_id, pts, labels in groups:
            record(tracker.add_new_points_or_box(state, frame, obj_id, points=pts, labels=labels))
            for reverse in (False, True):
                for result in tracker.propagate_in_video(state, start_frame_idx=frame, reverse=reverse):
                    record(result)
                    progress.update(0.5 if result.frame_idx == frame else 1)
    finally:
        progress.close()
    return results


def _write_outputs(args, source: Path, video, results: dict[int, dict]) -> None:
    """Per-frame COCO-RLE JSON, the overlay MP4 and a summary of the objects found."""
    from ..data.rle import encode
    from ..data.video_io import write_overlay_video

    height, width, num_frames = video.height, video.width, len(video)
    out_dir = Path(args.out)
    (out_dir / "frames").mkdir(parents=True, exist_ok=True)
    overlay_masks, seen = {}, {}
    for frame in range(num_frames):
        outputs = results.get(frame)
        objects = []
        if outputs is not None:
            overlay_masks[frame] = {}
            for obj_id, prob, box, mask in zip(outputs["out_obj_ids"], outputs["out_probs"],
                                               outputs["out_boxes_xywh"], outputs["out_binary_masks"]):
                objects.append({"obj_id": int(obj_id), "score": float(prob), "bbox_xywh": [float(v) for v in box],
                                "area": int(mask.sum()), "segmentation": encode(mask)})
                overlay_masks[frame][int(obj_id)] = mask
                seen[int(obj_id)] = seen.get(int(obj_id), 0) + 1
        record = {"video": str(source), "frame_index": frame, "height": height, "width": width, "text": args.text,
                  "objects": objects}
        (out_dir / "frames" / f"{frame:05d}.json").write_text(json.dumps(record))
    if not args.no_video:
        write_overlay_video(out_dir / "overlay.mp4", video, overlay_masks)
    video.close()
    print("obj_id  frames")
    for obj_id in sorted(seen):
        print(f"{obj_id:<7} {seen[obj_id]}")
    print(f"{len(seen)} objects over {num_frames} frames; wrote {out_dir}/frames/*.json"
          + ("" if args.no_video else f" and {out_dir}/overlay.mp4"))
