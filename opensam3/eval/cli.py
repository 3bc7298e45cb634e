"""`opensam3 eval` and `opensam3 predict-dataset` sub-commands (wired in by opensam3.cli)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from opensam3.eval.errors import EvalInputError


def add_eval_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "eval", help="score predictions on SA-Co (cgF1, IL_MCC, pmF1, mAP; video: pHOTA too)",
        description="Evaluate SA-Co predictions like the official SAM 3 evaluators.")
    parser.add_argument("--gt", action="append", required=True, metavar="GT.json",
                        help="ground-truth file; repeat for the oracle over several annotations (SA-Co/Gold)")
    parser.add_argument("--pred", required=True, metavar="PRED.json", help="predictions (official result format)")
    parser.add_argument("--iou-type", choices=("segm", "bbox"), default=None,
                        help="mask or box IoU (images: default segm; videos: default both)")
    parser.add_argument("--video", action="store_true", help="SA-Co/VEval video files")
    parser.add_argument("--no-map", action="store_true", help="images: skip COCO mAP")
    parser.add_argument("--out", metavar="RESULTS.json", help="also write the results as JSON")
    parser.set_defaults(func=run_eval)
    return parser


def run_eval(args: argparse.Namespace) -> int:
    from opensam3.eval.api import evaluate_images, evaluate_videos
    from opensam3.eval.report import format_table

    try:
        if args.video:
            if len(args.gt) != 1:
                raise EvalInputError("video evaluation takes exactly one --gt file")
            iou_types = (args.iou_type,) if args.iou_type else ("bbox", "segm")
            output: dict = evaluate_videos(args.gt[0], args.pred, iou_types=iou_types)
            table = output["dataset_results"]
        else:
            output = evaluate_images(args.gt, args.pred, iou_type=args.iou_type or "segm", with_map=not args.no_map)
            table = output
    except EvalInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_table(table, title=f"SA-Co evaluation of {args.pred}"))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        with open(args.out, "w", encoding="utf-8") as handle:
            json.dump(output, handle, indent=1)
        print(f"wrote {args.out}")
    return 0


def add_predict_dataset_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "predict-dataset", help="run a model over an SA-Co image or video dataset and write predictions",
        description="Segment every image-phrase pair of an SA-Co GT file (--images), or track every video-phrase "
                    "pair of an SA-Co/VEval file through the video session protocol (--videos: text prompt on "
                    "frame 0, propagated forward); the output feeds `opensam3 eval` (with --video for videos).")
    parser.add_argument("--gt", required=True, metavar="GT.json", help="SA-Co ground truth (pairs to run)")
    media = parser.add_mutually_exclusive_group(required=True)
    media.add_argument("--images", metavar="DIR", help="folder holding the images' file_name paths")
    media.add_argument("--videos", metavar="DIR", help="folder holding one frame folder (or video file) per video_name")
    parser.add_argument("--out", required=True, metavar="PRED.json", help="where to write the predictions")
    parser.add_argument("--limit", type=int, default=None, help="images: only the first N pairs (smoke tests)")
    from opensam3.cli import _add_model_args, _add_detection_args  # --checkpoint, --config, --device, --dtype like `segment`

    _add_model_args(parser)
    _add_detection_args(parser)
    parser.set_defaults(func=run_predict_dataset)
    return parser


def run_predict_dataset(args: argparse.Namespace, model: Any = None) -> int:
    """`model` lets tests and callers pass a ready model instead of loading --checkpoint."""
    from opensam3.eval.predict import predict_dataset

    try:
        if model is None:
            from opensam3.cli import _load_model

            model = _load_model(args)
        if getattr(args, "videos", None):
            from opensam3.eval.predict_video import predict_video_dataset

            predictions = predict_video_dataset(model, args.gt, args.videos, progress=True)
            Path(args.out).write_text(json.dumps(predictions))
        else:
            predictions = predict_dataset(model, args.gt, args.images, args.out, limit=args.limit)
    except EvalInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {len(predictions)} predictions to {args.out}")
    return 0
