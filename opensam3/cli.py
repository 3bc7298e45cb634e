"""Command line: ``opensam3 segment IMAGE... --text PHRASE`` and friends."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from .errors import InvalidInputError, OpenSam3Error


def _parse_tagged_numbers(flag: str, spec: str, count: int, what: str) -> tuple[list[float], bool]:
    """'a,b,...' or 'a,b,...:neg' -> (numbers, is_positive); a clear error names the flag."""
    body, _, tag = spec.partition(":")
    if tag not in ("", "pos", "neg"):
        raise InvalidInputError(f"{flag} {spec!r}: the suffix must be ':pos' or ':neg'")
    try:
        values = [float(v) for v in body.split(",")]
    except ValueError:
        values = []
    if len(values) != count:
        raise InvalidInputError(f"{flag} {spec!r}: expected {what}")
    return values, tag != "neg"


def parse_box(spec: str) -> tuple[list[float], bool]:
    """'cx,cy,w,h' or 'cx,cy,w,h:neg' (normalised to [0, 1]) -> (box, is_positive)."""
    return _parse_tagged_numbers("--box", spec, 4, "four numbers cx,cy,w,h")


def parse_point(spec: str) -> tuple[list[float], int]:
    """'x,y' or 'x,y:neg' (pixels) -> (point, label 1 or 0)."""
    point, positive = _parse_tagged_numbers("--point", spec, 2, "two numbers x,y (pixels)")
    return point, int(positive)


def _add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", help="sam3.pt / .safetensors file, or 'facebook/sam3' to download "
                        "(default: $OPENSAM3_CHECKPOINT, else the embedded model)")
    parser.add_argument("--config", help="model config name when the checkpoint does not say (sam3, tiny)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu, cuda:0, mps (default cpu)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                        help="float32 is exact; bfloat16 is the fast path on CPUs with bf16 arithmetic "
                             "(AVX-512 BF16, AMX) and GPUs, and much slower elsewhere (a warning says so)")


def _load_model(args):
    import torch

    from .api import load

    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]
    return load(args.checkpoint, config=args.config, device=args.device, dtype=dtype,
                nms_iou=getattr(args, "nms_iou", None), refine_masks=getattr(args, "refine_masks", None))


def _add_detection_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--nms-iou", type=float, metavar="IOU",
                        help="drop a detection whose mask overlaps a higher-scoring one above this IoU (default: "
                             "the model's setting, off for the official weights; 1 = off)")
    parser.add_argument("--refine-masks", action=argparse.BooleanOptionalAction, default=None,
                        help="re-draw each detection's mask with the click / box head from its box (default: the "
                             "model's setting, off for the official weights, on for the embedded model)")


def _segment(args) -> int:
    from tqdm import tqdm

    if not args.text and not args.box:
        raise InvalidInputError("give --text PHRASE and/or --box cx,cy,w,h")
    for phrase in args.text or []:
        if not phrase.strip():
            raise InvalidInputError("--text is empty; give a short noun phrase such as 'a red car'")
    boxes = [parse_box(b) for b in args.box or []]
    for box, _ in boxes:
        # validated here too so a bad box fails before the model loads
        from .predictor.image import normalize_boxes

        normalize_boxes(box, (1, 1), "cxcywh_norm")
    for image in args.images:
        if not Path(image).is_file():
            raise InvalidInputError(f"image file not found: {image}")
    model = _load_model(args)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    phrases = args.text or [None]
    rows = []
    progress = tqdm(args.images, desc="segment", unit="img", disable=len(args.images) < 2 or args.quiet, file=sys.stderr)
    for image_path in progress:
        start = time.perf_counter()
        state = model.set_image(image_path)
        results = model.segment(
            state,
            text=phrases if args.text else None,
            boxes=[b for b, _ in boxes] or None,
            box_labels=[p for _, p in boxes] or None,
            box_format="cxcywh_norm",
            threshold=args.threshold,
        )
        results = results if isinstance(results, list) else [results]
        elapsed = time.perf_counter() - start
        stem = Path(image_path).stem
        records = []
        for phrase, result in zip(phrases, results):
            for det in result.to_coco_rle():
                records.append({"file_name": str(image_path), "prompt": phrase, **det})
            rows.append((Path(image_path).name, phrase or "(boxes)", len(result),
                         float(result.scores[0]) if len(result) else 0.0, result.presence, elapsed))
        overlay = _combined_overlay(results, phrases)
        overlay.save(out_dir / f"{stem}.png")
        if args.overlay_per_prompt and len(results) > 1:
            for index, (phrase, result) in enumerate(zip(phrases, results)):
                _combined_overlay([result], [phrase]).save(out_dir / f"{stem}_{index}_{_slug(phrase)}.png")
        (out_dir / f"{stem}.json").write_text(json.dumps({
            "image": str(image_path), "height": state.size[0], "width": state.size[1], "detections": records,
        }))
    _print_table(rows)
    print(f"wrote overlays and COCO-RLE JSON to {out_dir}/")
    return 0


def _click(args) -> int:
    import torch

    from .data.overlay import draw_overlay
    from .data.rle import encode

    points = [parse_point(p) for p in args.point or []]
    box = None
    if args.box:
        box, _ = _parse_tagged_numbers("--box", args.box, 4, "four numbers x0,y0,x1,y1 (pixels)")
    if not points and box is None:
        raise InvalidInputError("give at least one --point x,y[:neg] or a --box x0,y0,x1,y1")
    if not Path(args.image).is_file():
        raise InvalidInputError(f"image file not found: {args.image}")
    model = _load_model(args)
    state = model.set_image(args.image)
    masks, scores, _ = model.predict(
        state,
        points=[p for p, _ in points] or None,
        point_labels=[label for _, label in points] or None,
        box=box,
        multimask_output=not args.single,
        zoom=args.zoom,
        box_clip=args.box_clip,
    )
    order = torch.argsort(scores, descending=True)
    best = int(order[0])
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = Path(args.image).stem
    picture = draw_overlay(state.image, masks[best:best + 1].numpy(), None)
    from PIL import ImageDraw

    draw = ImageDraw.Draw(picture)
    for (x, y), label in points:
        colour = (0, 255, 0) if label else (255, 0, 0)
        draw.ellipse([x - 5, y - 5, x + 5, y + 5], fill=colour, outline=(0, 0, 0))
    if box is not None:
        draw.rectangle(box, outline=(255, 255, 255), width=2)
    picture.save(out_dir / f"{stem}_click.png")
    records = [{"segmentation": encode(masks[i].numpy()), "iou_score": float(scores[i]), "best": i == best}
               for i in order.tolist()]
    (out_dir / f"{stem}_click.json").write_text(json.dumps({
        "image": str(args.image), "points": [p for p, _ in points], "point_labels": [lab for _, lab in points],
        "box": box, "masks": records}))
    print("mask  iou_score  area")
    for rank, i in enumerate(order.tolist()):
        print(f"{rank:<5} {float(scores[i]):<10.3f} {int(masks[i].sum())}{'  (best)' if i == best else ''}")
    print(f"wrote {out_dir / (stem + '_click.png')} and {stem}_click.json")
    return 0


def _combined_overlay(results, phrases):
    """One picture for all prompts on an image: instances of every prompt, labelled by prompt."""
    import numpy as np
    import torch

    from .data.overlay import draw_overlay

    base = results[0].image
    masks = [r.masks for r in results if len(r)]
    if not masks:
        return draw_overlay(base, np.zeros((0,) + base.shape[:2], dtype=bool))
    labels = [f"{p or 'object'} {float(s):.2f}" for p, r in zip(phrases, results) for s in r.scores]
    boxes = torch.cat([r.boxes for r in results if len(r)]).numpy()
    return draw_overlay(base, torch.cat(masks).numpy(), boxes, labels)


def _slug(phrase: str | None) -> str:
    """A file-name-safe form of a prompt: 'a red car' -> 'a-red-car'."""
    import re

    return re.sub(r"[^a-z0-9]+", "-", (phrase or "boxes").lower()).strip("-")[:40] or "prompt"


def _print_table(rows) -> None:
    header = ("image", "prompt", "found", "best", "presence", "seconds")
    table = [header] + [(a, b, str(c), f"{d:.3f}", f"{e:.3f}", f"{f:.2f}") for a, b, c, d, e, f in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    for i, row in enumerate(table):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)))
        if i == 0:
            print("  ".join("-" * w for w in widths))


def _convert(args) -> int:
    import torch

    from .checkpoint import convert_checkpoint

    dtype = getattr(torch, args.dtype) if args.dtype else None
    count = convert_checkpoint(args.checkpoint, args.out, dtype)
    print(f"wrote {count} tensors to {args.out}" + (f" ({args.dtype})" if args.dtype else ""))
    return 0


def _calibrate(args) -> int:
    import os
    import tempfile

    import torch

    from .api import load
    from .checkpoint import convert_checkpoint
    from .train.calibrate import DEFAULT_QUERY_OFFSETS, calibrate_presence
    from .train.data import find_images_dir

    source, target, gt = Path(args.checkpoint), Path(args.out), Path(args.gt)
    if target.suffix != ".safetensors":
        raise InvalidInputError(f"the calibrated model is written as safetensors: --out must end in .safetensors, "
                                f"got {target}")
    if source.exists() and target.exists() and source.resolve() == target.resolve():
        raise InvalidInputError(f"--out {target} is the checkpoint being calibrated; write to another file, so the "
                                "original stays as it was")
    if not gt.is_file():  # before the model is read
        raise InvalidInputError(f"calibration ground truth not found: {gt} (check --gt)")
    sam = load(args.checkpoint)
    images = Path(args.images) if args.images else find_images_dir(gt)
    result = calibrate_presence(sam.model, gt, images, query_offsets=DEFAULT_QUERY_OFFSETS)
    metrics = result.metrics
    print(f"presence offset {result.offset:+.2f}, query-logit offset {result.query_offset:+.2f}: cgF1 "
          f"{100 * metrics['cgF1']:.2f}, IL_MCC {metrics['IL_MCC']:.3f}, pmF1 {metrics['pmF1']:.3f} on {gt}")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        written = Path(scratch) / "float32.safetensors"
        sam.save(written)
        if args.dtype:
            convert_checkpoint(written, target, getattr(torch, args.dtype))
        else:
            os.replace(written, target)
    print(f"wrote {target}" + (f" ({args.dtype})" if args.dtype else ""))
    return 0


def _average(args) -> int:
    import torch

    from .checkpoint import average_checkpoints

    weights = None
    if args.weights:
        try:
            weights = [float(w) for w in args.weights.split(",")]
        except ValueError:
            raise InvalidInputError(f"--weights takes comma-separated numbers, one per checkpoint; got {args.weights!r}") from None
    dtype = getattr(torch, args.dtype) if args.dtype else None
    count = average_checkpoints(args.checkpoints, args.out, weights, dtype)
    print(f"wrote the average of {len(args.checkpoints)} checkpoints ({count} tensors) to {args.out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="opensam3", description="SAM 3: segment anything with concepts")
    sub = parser.add_subparsers(dest="command", required=True)

    seg = sub.add_parser("segment", help="find and segment every instance of a concept in images")
    seg.add_argument("images", nargs="+", metavar="IMAGE")
    seg.add_argument("--text", action="append", metavar="PHRASE", help="noun phrase; repeat for several")
    seg.add_argument("--box", action="append", metavar="cx,cy,w,h[:neg]",
                     help="exemplar box, normalised centre/size in [0, 1]; ':neg' marks a negative")
    seg.add_argument("--threshold", type=float, default=0.5, help="score threshold (default 0.5)")
    seg.add_argument("--out", default="opensam3_out", help="output directory (default opensam3_out)")
    seg.add_argument("--quiet", action="store_true", help="no progress bar")
    seg.add_argument("--overlay-per-prompt", action="store_true",
                     help="with several --text, also write one overlay per prompt (<image>_<k>_<prompt>.png)")
    _add_model_args(seg)
    _add_detection_args(seg)
    seg.set_defaults(func=_segment)

    click = sub.add_parser("click", help="segment one object from clicks and/or a box (interactive, SAM 1/2 task)")
    click.add_argument("image", metavar="IMAGE")
    click.add_argument("--point", action="append", metavar="x,y[:neg]", help="click in pixels; ':neg' = background")
    click.add_argument("--box", metavar="x0,y0,x1,y1", help="box around the object, pixels")
    click.add_argument("--single", action="store_true", help="one mask instead of three candidates")
    click.add_argument("--zoom", action=argparse.BooleanOptionalAction, default=None,
                       help="look again at a small object on a window cut around it (default: the model config's; "
                            "on for the embedded model, off for official weights)")
    click.add_argument("--box-clip", action=argparse.BooleanOptionalAction, default=None,
                       help="keep the mask inside --box (default: the model config's; on for the embedded model, "
                            "off for official weights)")
    click.add_argument("--out", default="opensam3_out", help="output directory (default opensam3_out)")
    _add_model_args(click)
    click.set_defaults(func=_click)

    convert = sub.add_parser("convert", help="rewrite a checkpoint (sam3.pt) as safetensors, optionally in bfloat16")
    convert.add_argument("checkpoint", metavar="CHECKPOINT", help="sam3.pt, a state dict or a .safetensors file")
    convert.add_argument("out", metavar="OUT.safetensors")
    convert.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], help="cast floating tensors (default: keep them)")
    convert.set_defaults(func=_convert)

    average = sub.add_parser("average", help="average the weights of fine-tunes of one model (a model soup)",
                             description="Write the weighted mean of checkpoints of one model, e.g. two fine-tunes "
                                         "of the same start; the embedded model ships as such an average.")
    average.add_argument("checkpoints", nargs="+", metavar="CHECKPOINT", help="two or more files of one model")
    average.add_argument("--out", required=True, metavar="OUT.safetensors")
    average.add_argument("--weights", metavar="W1,W2,...", help="one weight per checkpoint (default: equal)")
    average.add_argument("--dtype", choices=["float32", "bfloat16", "float16"],
                         help="store floating tensors in this dtype (default: the first file's)")
    average.set_defaults(func=_average)

    calibrate = sub.add_parser("calibrate", help="fit the score offsets that make the 0.5 threshold fit a model",
                               description="Fit the presence and query-logit offsets (train/calibrate.py) that give "
                                           "the best cgF1 on a calibration split (SA-Co image ground truth that "
                                           "is neither training nor evaluation data) and write the model with "
                                           "them; e.g. after averaging fine-tunes.")
    calibrate.add_argument("checkpoint", metavar="CHECKPOINT")
    calibrate.add_argument("--gt", required=True, metavar="CALIB.json", help="the calibration split's ground truth")
    calibrate.add_argument("--images", metavar="DIR", help="its images (default: images/ next to the JSON)")
    calibrate.add_argument("--out", required=True, metavar="OUT.safetensors")
    calibrate.add_argument("--dtype", choices=["float32", "bfloat16", "float16"],
                           help="store floating tensors in this dtype (default float32)")
    calibrate.set_defaults(func=_calibrate)

    from .eval import cli as eval_cli
    from .predictor.track_cli import add_track_parser
    from .synth import cli as synth_cli
    from .train import cli as train_cli

    add_track_parser(sub)
    eval_cli.add_eval_parser(sub)
    eval_cli.add_predict_dataset_parser(sub)
    synth_cli.add_synth_parser(sub)
    train_cli.add_train_parser(sub)
    from .train.interactive import add_train_interactive_parser
    from .train.memory import add_train_memory_parser

    add_train_interactive_parser(sub)
    add_train_memory_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except OpenSam3Error as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
