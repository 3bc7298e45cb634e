"""`opensam3 synth`: write the synthetic concept world to disk (wired in by opensam3.cli).

    opensam3 synth --out DIR --seed S --images N [--size 256] [--videos M --frames F]
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from opensam3.synth.world import SynthConfigError


def add_synth_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "synth", help="write a synthetic SA-Co-style dataset (shapes, colours, patterns; images and clips)",
        description="Render a procedural concept world: images with phrase pairs (SA-Co image layout) and "
                    "short clips with masklets (SA-Co/VEval layout). The same seed writes identical files.")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (created if missing)")
    parser.add_argument("--seed", type=int, default=0, help="random seed, a non-negative integer (default 0)")
    parser.add_argument("--images", type=int, default=0, metavar="N", help="number of images (default 0)")
    parser.add_argument("--size", type=int, default=256, help="image side in pixels (default 256)")
    parser.add_argument("--videos", type=int, default=0, metavar="M", help="number of clips (default 0)")
    parser.add_argument("--frames", type=int, default=16, metavar="F", help="frames per clip (default 16)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run_synth)
    return parser


def _progress(quiet: bool, what: str):
    if quiet:
        return None
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm is a dependency, but the generator must not need it
        return None
    return lambda items: tqdm(items, desc=what, unit=what.rstrip("s"), file=sys.stderr)


def run_synth(args: argparse.Namespace) -> int:
    from opensam3.synth.dataset import write_image_dataset, write_video_dataset

    try:
        if args.images == 0 and args.videos == 0:
            raise SynthConfigError("nothing to write: pass --images N and/or --videos M (positive counts)")
        for name in ("images", "videos"):
            if getattr(args, name) < 0:
                raise SynthConfigError(f"--{name} must be a non-negative integer, got {getattr(args, name)}")
        summaries = []
        start = time.perf_counter()
        if args.images:
            summaries.append(("images", write_image_dataset(
                args.out, args.images, args.seed, args.size, progress=_progress(args.quiet, "images"))))
        if args.videos:
            summaries.append(("videos", write_video_dataset(
                args.out, args.videos, args.seed, args.size, args.frames, progress=_progress(args.quiet, "videos"))))
    except SynthConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for kind, summary in summaries:
        print(f"{kind}: {summary.items} -> {summary.gt_path} ({summary.pairs} phrase pairs, "
              f"{summary.negative_ratio:.0%} negative, {summary.instances} "
              f"{'masks' if kind == 'images' else 'masklets'}; media in {summary.media_dir})")
    print(f"done in {time.perf_counter() - start:.1f} s")
    return 0
