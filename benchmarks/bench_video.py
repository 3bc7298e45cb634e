"""Video tracking benchmark: propagation speed with 1, 4 and 16 tracked objects, per object and
multiplexed, on a seeded clip, in four modes:

  sam3 per-object     SAM 3's tracker (the official Sam3TrackerPredictor's results), one pass per object
  sam3 buckets        the same tracker, objects batched 16 to a pass (same results; execution only)
  sam3.1 one/bucket   SAM 3.1's multiplex tracker with every object alone in its own bucket
  sam3.1 multiplex    SAM 3.1's multiplex tracker, 16 objects to a bucket: one memory-attention,
                      decoder and memory-encoder pass per bucket (opensam3/predictor/video_multiplex31.py)

    .venv/bin/python benchmarks/bench_video.py [--size tiny|full] [--frames N] [--objects 1,4,16]
                                               [--threads T] [--bucket-size 16] [--reference]
                                               [--dtype float32|bfloat16]

--size tiny: the tests' tiny tracker (336 px, ViT 128-d x 4, memory attention 2 layers) and a SAM
3.1 tracker of the same widths, 224x224 clip, 8 frames by default -- a few minutes on one CPU
thread. --size full: the "sam3" configuration at 1008 px on an official-layout seeded checkpoint
(built once under --cache-dir, 3.4 GB, shared with bench_image.py) and the SAM 3.1 release sizes
(seeded under the official tracker.model.* names: no SAM 3.1 weights or reference exist here),
480x640 clip, 3 frames by default.

Each object gets a box on frame 0; the timed part is propagation after frame 0 (frame 0 gives
the prompt's output and, before it, every object's prompt memory is encoded). The ViT trunk is
the same work in every mode, so it runs once per frame, is timed, and its median time is added
to each mode's tracker time: frames per second = 1 / (trunk + tracker seconds per frame).
--dtype is the image model's (the trunk and necks); the tracker heads, memory and SAM 3.1's
multiplex modules stay float32 either way, as ``opensam3 track --dtype bfloat16`` runs them. Seeded
weights would judge every object absent; the object-score heads are shifted as in the tests'
fixtures (weight_override) so that objects are present and masks are real.

--reference also times the official ``Sam3TrackerPredictor`` (sam3==0.1.4 through
../shared/reference/run.sh; see benchmarks/video_reference_worker.py) on the same clip, objects
and seeded weights, in its own process. Tiny: the tiny official tracker of
tools/parity/make_video_tracker_fixture.py (the tests' fixture model). Full: ``build_tracker`` with
the seeded checkpoint's weights. Its frames per second include its own backbone.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

# the fixtures' object-score shift (tools/parity/make_video_tracker_fixture.py), so objects are present
OBJ_SCORE_OVERRIDE = [["sam_mask_decoder.pred_obj_score_head.layers.2.weight", 50.0, 0.0],
                      ["sam_mask_decoder.pred_obj_score_head.layers.2.bias", 1.0, 10.5]]
SIZES = {"tiny": {"frames": 8, "height": 224, "width": 224}, "full": {"frames": 3, "height": 480, "width": 640}}


def bench_clip(num_frames: int, height: int, width: int) -> np.ndarray:
    """(T, H, W, 3) uint8: smooth random colour fields with two moving squares (the tests' clip,
    scaled to the frame size)."""
    g = torch.Generator().manual_seed(7)
    coarse = torch.randint(0, 256, (num_frames, 3, 14, 14), generator=g).float()
    frames = F.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)
    sy, sx = height / 224, width / 224
    for t in range(num_frames):
        y0, x0 = int(80 * sy), int((40 + 6 * t) * sx)
        frames[t, :, y0:y0 + int(60 * sy), x0:x0 + int(60 * sx)] = torch.tensor([250.0, 240.0, 30.0])[:, None, None]
        y0, x0 = int((60 + 4 * t) * sy), int(140 * sx)
        frames[t, :, y0:y0 + int(60 * sy), x0:x0 + int(50 * sx)] = torch.tensor([20.0, 60.0, 245.0])[:, None, None]
    return frames.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def object_boxes(count: int, height: int, width: int) -> list[list[float]]:
    """``count`` boxes (x0, y0, x1, y1 pixels) on a grid over the frame, a quarter cell inset."""
    cols = int(np.ceil(np.sqrt(count)))
    rows = int(np.ceil(count / cols))
    cw, ch = width / cols, height / rows
    boxes = []
    for i in range(count):
        r, c = divmod(i, cols)
        boxes.append([c * cw + cw / 4, r * ch + ch / 4, (c + 1) * cw - cw / 4, (r + 1) * ch - ch / 4])
    return boxes


def build_tracker(size: str, cache_dir: Path, dtype: torch.dtype = torch.float32):
    from opensam3.config import TINY
    from opensam3.model.sam3 import Sam3ImageModel
    from opensam3.model.tracker import (
        TrackerHeads,
        TrackerHeadsConfig,
        TrackerMemory,
        TrackerMemoryConfig,
    )
    from opensam3.predictor.video_build import load_video_tracker
    from opensam3.predictor.video_tracker import VideoTracker
    from opensam3.seeded import apply_weight_overrides, seed_module

    if size == "full":
        from bench_image import seeded_checkpoint

        tracker = load_video_tracker(seeded_checkpoint(cache_dir), config="sam3", dtype=dtype)
    else:
        # the tests' tiny tracker (tests/test_video_tracker_parity.py: build_tiny_tracker)
        config = TINY.replace(vision=dataclasses.replace(TINY.vision, tracker_neck=True))
        image_model = Sam3ImageModel(config).eval()
        seed_module(image_model.backbone.vision_backbone, prefix="backbone.vision_backbone.")
        image_model.to(dtype)
        heads = TrackerHeads(TrackerHeadsConfig.from_model_config(config)).eval()
        seed_module(heads, prefix="tracker.")
        memory = TrackerMemory(TrackerMemoryConfig(image_size=config.image_size, attention_layers=2, attention_ffn=512,
                                                   use_memory_selection=True)).eval()
        seed_module(memory, prefix="tracker.")
        tracker = VideoTracker(image_model, heads, memory)
    apply_weight_overrides({"": tracker.heads}, OBJ_SCORE_OVERRIDE)
    return tracker


def build_multiplex31(image_model, size: str):
    """SAM 3.1 multiplex tracker + interactive head (16 slots a bucket), seeded under the
    official ``tracker.model.*`` names, object scores shifted as for SAM 3; returns a factory
    ``objects_per_bucket -> Multiplex31VideoTracker`` on ``image_model``'s backbone."""
    from opensam3.model.tracker.multiplex31 import InteractiveHead, MultiplexTracker, MultiplexTrackerConfig
    from opensam3.predictor.video_multiplex31 import Multiplex31VideoTracker
    from opensam3.seeded import apply_weight_overrides, seed_module

    if size == "full":
        config = MultiplexTrackerConfig()
    else:  # the tiny SAM 3 tracker's sizes (memory attention 2 layers, FFN 512), 16 slots
        config = MultiplexTrackerConfig(image_size=image_model.config.image_size,
                                        dim=image_model.config.vision.neck_dim, decoder_mlp_dim=512,
                                        attention_layers=2, attention_ffn=512, mask_first_channels=1)
    tracker, interactive = MultiplexTracker(config).eval(), InteractiveHead(config).eval()
    seed_module(tracker, prefix="tracker.model.")
    seed_module(interactive, prefix="tracker.model.")
    apply_weight_overrides({"": tracker}, OBJ_SCORE_OVERRIDE)
    apply_weight_overrides({"": interactive}, [["interactive_" + key, scale, shift]
                                               for key, scale, shift in OBJ_SCORE_OVERRIDE])
    return lambda per_bucket: Multiplex31VideoTracker(image_model, interactive, tracker, objects_per_bucket=per_bucket)


class CachedTrunk:
    """The ViT trunk of every clip frame, computed once and timed: identical work in every mode,
    so each mode reads it from here and the measured seconds are added to its own."""

    def __init__(self, image_model, frames: np.ndarray):
        from opensam3.data.video_io import open_video
        from opensam3.predictor.video_tracker import video_frame_trunk

        video = open_video(frames)
        self.outputs, self.seconds = [], []
        for t in range(len(video)):
            start = time.perf_counter()
            self.outputs.append(video_frame_trunk(image_model, video, t))
            self.seconds.append(time.perf_counter() - start)

    def __call__(self, video, frame_idx: int) -> torch.Tensor:
        return self.outputs[frame_idx]


def time_propagation(tracker, frames: np.ndarray, num_objects: int) -> float:
    """Seconds per frame of propagation after the prompted frame 0 (trunk excluded if cached)."""
    state = tracker.init_state(frames)
    for obj_id, box in enumerate(object_boxes(num_objects, frames.shape[1], frames.shape[2]), start=1):
        tracker.add_new_points_or_box(state, 0, obj_id, box=box)
    results = tracker.propagate_in_video(state)
    next(results)  # frame 0: the prompt's output (after encoding the prompt memories)
    start = time.perf_counter()
    count = sum(1 for _ in results)
    return (time.perf_counter() - start) / count


def run_reference(args, frames: np.ndarray, objects: list[int], cache_dir: Path) -> dict[int, float]:
    """Frames per second of the official tracker per object count (its own process)."""
    reference_dir = Path(args.reference_dir)
    if not (reference_dir / "run.sh").exists():
        print(f"(no reference at {reference_dir}: pass --reference-dir)", file=sys.stderr)
        return {}
    checkpoint = ""
    if args.size == "full":
        from bench_image import seeded_checkpoint

        checkpoint = str(seeded_checkpoint(cache_dir))
    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "clip.npy"
        np.save(clip, frames)
        spec = {"size": args.size, "clip": str(clip), "objects": objects, "threads": args.threads,
                "checkpoint": checkpoint, "override": OBJ_SCORE_OVERRIDE,
                "boxes": {n: object_boxes(n, frames.shape[1], frames.shape[2]) for n in objects}}
        cmd = ["bash", str(reference_dir / "run.sh"), str(HERE / "video_reference_worker.py"), json.dumps(spec)]
        done = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=args.reference_timeout)
    if done.returncode != 0:
        raise RuntimeError(f"reference run failed:\n{done.stderr[-3000:]}")
    return {int(k): v for k, v in json.loads(done.stdout.strip().splitlines()[-1]).items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(SIZES), default="tiny")
    parser.add_argument("--frames", type=int, help="clip length (tiny: 8, full: 3)")
    parser.add_argument("--objects", default="1,4,16", help="comma list of tracked-object counts")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--bucket-size", type=int, default=16, help="objects per multiplexed pass")
    parser.add_argument("--reference", action="store_true", help="also time the official Sam3TrackerPredictor")
    parser.add_argument("--reference-dir", default=str(ROOT.parent / "shared" / "reference"))
    parser.add_argument("--reference-timeout", type=int, default=7200)
    parser.add_argument("--cache-dir", default=str(Path.home() / ".cache" / "opensam3-bench"))
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                        help="the image model's dtype (trunk, necks); the tracker stays float32")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sys.path.insert(0, str(HERE))
    objects = [int(n) for n in args.objects.split(",")]
    clip = SIZES[args.size]
    num_frames = args.frames or clip["frames"]
    if num_frames < 2:
        parser.error("--frames must be at least 2 (frame 0 is the prompted frame)")
    frames = bench_clip(num_frames, clip["height"], clip["width"])
    cache_dir = Path(args.cache_dir)
    sam3 = build_tracker(args.size, cache_dir, getattr(torch, args.dtype))
    sam3.bucket_size = args.bucket_size
    sam31 = build_multiplex31(sam3.image_model, args.size)
    modes = {"sam3 per-object": (sam3, False), "sam3 buckets": (sam3, True),
             "sam3.1 one/bucket": (sam31(1), None), "sam3.1 multiplex": (sam31(None), None)}
    with torch.inference_mode():
        trunk = CachedTrunk(sam3.image_model, frames)
        trunk_s = float(np.median(trunk.seconds))
        for tracker, _ in modes.values():  # warm-up
            tracker.frame_trunk = trunk
            time_propagation(tracker, frames[:2], 1)
        rows = []
        for count in objects:
            seconds = {}
            for name, (tracker, bucketed) in modes.items():
                if bucketed is not None:
                    tracker.multiplex = bucketed
                seconds[name] = time_propagation(tracker, frames, count)
            rows.append((count, seconds))
            print(f"measured {count} objects", file=sys.stderr)
    reference = run_reference(args, frames, objects, cache_dir) if args.reference else {}
    print(f"size {args.size}, {num_frames} frames of {clip['height']}x{clip['width']}, {torch.get_num_threads()} "
          f"thread(s), image model in {args.dtype}; ViT trunk {trunk_s:.2f} s per frame (the same in every mode, run once and added to each)")
    print("frames per second of propagation after frame 0, trunk included (tracker-only seconds per frame)")
    header = f"{'objects':>7}" + "".join(f"{name:>24}" for name in modes) + f"{'3.1 mux / sam3 per-obj':>24}"
    header += f"{'3.1 mux / 3.1 one':>19}"
    print(header + (f"{'official sam3':>15}{'3.1 mux / official':>20}" if reference else ""))
    for count, seconds in rows:
        fps = {name: 1.0 / (trunk_s + value) for name, value in seconds.items()}
        line = f"{count:>7}" + "".join(f"{fps[name]:>14.4f} ({seconds[name]:7.2f})" for name in modes)
        line += f"{fps['sam3.1 multiplex'] / fps['sam3 per-object']:>23.2f}x"
        line += f"{fps['sam3.1 multiplex'] / fps['sam3.1 one/bucket']:>18.2f}x"
        if reference:
            line += f"{reference[count]:>15.4f}{fps['sam3.1 multiplex'] / reference[count]:>19.2f}x"
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
