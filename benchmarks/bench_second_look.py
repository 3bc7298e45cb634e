"""What the embedded model's second looks cost: clicks with and without the zoom on small objects
(``predict(zoom=...)``) and the feedback pass (each candidate decoded again from its own logits,
``InteractivePredictor.feedback``), and concept segmentation with and without the masks re-drawn from the
boxes (``refine_masks``), on the same held-out synthetic scenes in one run.

    .venv/bin/python benchmarks/bench_second_look.py [--scenes 30] [--threads 2] [--checkpoint embedded]

Per click: one click at each object's most interior point, the scene encoded once (its
set_image time is shared by the clicks and counted). Per image: set_image plus one phrase.
Ratios are against the plain path measured in the same run.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenes", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--checkpoint", default="embedded")
    parser.add_argument("--phrase", default="star")
    args = parser.parse_args()

    import torch

    sys.path.insert(0, str(ROOT))
    import opensam3
    from opensam3.synth import scene_stream
    from opensam3.train.interactive_prompts import farthest_interior_point

    torch.set_num_threads(args.threads)
    model = opensam3.load(args.checkpoint)
    stream = scene_stream(12345, size=model.model.config.image_size)
    scenes = [next(stream) for _ in range(args.scenes)]
    clicks = [[p for p in map(farthest_interior_point, scene.masks) if p is not None] for scene in scenes]

    feedback = model.interactive.feedback

    def per_click(zoom: bool, fed_back: bool = False) -> float:
        model.interactive.feedback = fed_back
        start = time.perf_counter()
        for scene, points in zip(scenes, clicks):
            state = model.set_image(scene.image)
            for point in points:
                model.predict(state, points=[point], point_labels=[1], zoom=zoom)
        return (time.perf_counter() - start) / sum(map(len, clicks))

    def per_image(refine: bool) -> float:
        model.refine_masks = refine
        start = time.perf_counter()
        for scene in scenes:
            model.segment(scene.image, text=args.phrase)
        return (time.perf_counter() - start) / len(scenes)

    per_click(False)  # warm-up
    clicks_rows = [("click, plain", per_click(False)), ("click, zoom on small objects", per_click(True)),
                   ("click, zoom + feedback", per_click(True, True))]
    model.interactive.feedback = feedback
    image_rows = [("segment, detector masks", per_image(False)), ("segment, masks refined from boxes", per_image(True))]
    print(f"{args.scenes} scenes, {sum(map(len, clicks))} clicks, {args.threads} threads; "
          f"the checkpoint's config: feedback {'on' if feedback else 'off'}")
    print(f"{'path':<36} {'ms':>8} {'x plain':>8}")
    for rows in (clicks_rows, image_rows):
        for name, seconds in rows:
            print(f"{name:<36} {1000 * seconds:8.1f} {seconds / rows[0][1]:8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
