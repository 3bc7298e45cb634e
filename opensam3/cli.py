"""Command line: ``opensam3 segment IMAGE... --text PHRASE`` and friends."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from .errors import InvalidInputError, OpenSam3Error


def parse_box(spec: str) -> tuple[list[float], bool]:
    """'cx,cy,w,h' or 'cx,cy,w,h:neg' (normalised to [0, 1]) -> (box, is_positive)."""
    body, _, tag = spec.partition(":")
    if tag not in ("", "pos", "neg"):
        raise InvalidInputError(f"--box {spec!r}: the suffix must be ':pos' or ':neg'")
    try:
        values = [float(v) for v in body.split(",")]
    except ValueError:
        raise InvalidInputError(f"--box {spec!r}: expected four numbers cx,cy,w,h") from None
    if len(values) != 4:
        raise InvalidInputError(f"--box {spec!r}: expected four numbers cx,cy,w,h, got {len(values)}")
    return values, tag != "neg"


def _add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", help="sam3.pt / .safetensors file, or 'facebook/sam3' to download "
                        "(default: $OPENSAM3_CHECKPOINT, else the embedded model)")
    parser.add_argument("--config", help="model config name when the checkpoint does not say (sam3, tiny)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu, cuda:0, mps (default cpu)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                        help="float32 is exact; bfloat16 is the fast path")


def _load_model(args):
    import torch

    from .api import load

    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]
    return load(args.checkpoint, config=args.config, device=args.device, dtype=dtype)


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
        (out_dir / f"{stem}.json").write_text(json.dumps({
            "image": str(image_path), "height": state.size[0], "width": state.size[1], "detections": records,
        }))
    _print_table(rows)
    print(f"wrote overlays and COCO-RLE JSON to {out_dir}/")
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


def _print_table(rows) -> None:
    header = ("image", "prompt", "found", "best", "presence", "seconds")
    table = [header] + [(a, b, str(c), f"{d:.3f}", f"{e:.3f}", f"{f:.2f}") for a, b, c, d, e, f in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    for i, row in enumerate(table):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)))
        if i == 0:
            print("  ".join("-" * w for w in widths))


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
    _add_model_args(seg)
    seg.set_defaults(func=_segment)

    try:
        from .eval import cli as eval_cli
    except ImportError:  # evaluation package not installed in this build
        eval_cli = None
    if eval_cli is not None:
        eval_cli.add_eval_parser(sub)
        eval_cli.add_predict_dataset_parser(sub)
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
