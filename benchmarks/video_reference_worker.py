"""Runs inside the reference environment (shared/reference/run.sh): the official interactive
video tracker (``Sam3TrackerPredictor``, sam3==0.1.4) on bench_video.py's clip, boxes and seeded
weights. Argument: one JSON spec (size, clip .npy, objects, boxes, threads, checkpoint, override).
Prints one JSON line: {object count: frames per second of propagation after frame 0}.

tiny: the tiny official tracker of tools/parity/make_video_tracker_fixture.py (its ``build()``:
seeded weights and the object-score override; importing it shrinks the official builders).
full: ``build_tracker(apply_temporal_disambiguation=True, with_backbone=True)`` with the seeded
checkpoint's weights (backbone from ``detector.backbone.*``, the rest from ``tracker.*``).
"""
import importlib.util
import json
import sys
import time
from pathlib import Path

import cpu_redirect  # noqa: F401  (the reference shim: must be the first import)
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]


def tiny_tracker():
    path = ROOT / "tools" / "parity" / "make_video_tracker_fixture.py"
    spec = importlib.util.spec_from_file_location("make_video_tracker_fixture", path)
    module = importlib.util.module_from_spec(spec)
    argv, sys.argv = sys.argv, sys.argv[:1]  # the generator reads its output path from argv at import
    try:
        spec.loader.exec_module(module)
    finally:
        sys.argv = argv
    return module.build(), module.RES


def full_tracker(checkpoint: str, override):
    import sam3.model_builder as mb

    tracker = mb.build_tracker(apply_temporal_disambiguation=True, with_backbone=True)
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["model"]
    own = tracker.state_dict()
    weights = {}
    for name in own:
        key = ("detector." + name) if name.startswith("backbone.") else ("tracker." + name)
        if key in state:
            weights[name] = state[key]
    missing = [n for n, p in own.items() if n not in weights and p.is_floating_point() and not p.is_complex()]
    if missing:
        print(f"reference: {len(missing)} tensors not in the checkpoint, e.g. {missing[:5]}", file=sys.stderr)
    tracker.load_state_dict(weights, strict=False)
    with torch.no_grad():
        for name, scale, shift in override:
            tracker.state_dict()[name].mul_(scale).add_(shift)
    for m in tracker.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0
    return tracker.eval(), tracker.image_size


def preprocess(frames: torch.Tensor, resolution: int) -> torch.Tensor:
    """As opensam3.data.image_io.preprocess: uint8 antialiased bilinear resize, /255, (x - .5) / .5."""
    chw = frames.permute(0, 3, 1, 2)
    resized = torch.cat([F.interpolate(chw[i:i + 1], size=(resolution, resolution), mode="bilinear",
                                       align_corners=False, antialias=True) for i in range(chw.shape[0])])
    return (resized.float() / 255.0 - 0.5) / 0.5


def fps(tracker, images: torch.Tensor, height: int, width: int, boxes) -> float:
    state = tracker.init_state(video_height=height, video_width=width, num_frames=images.shape[0])
    state["images"] = images
    scale = torch.tensor([width, height, width, height], dtype=torch.float32)
    for obj_id, box in enumerate(boxes, start=1):
        tracker.add_new_points_or_box(state, 0, obj_id, box=torch.tensor(box, dtype=torch.float32) / scale)
    results = tracker.propagate_in_video(state, start_frame_idx=0, max_frame_num_to_track=None, reverse=False,
                                         tqdm_disable=True, propagate_preflight=True)
    next(results)
    start = time.perf_counter()
    count = sum(1 for _ in results)
    return count / (time.perf_counter() - start)


def main():
    spec = json.loads(sys.argv[1])
    torch.set_num_threads(spec["threads"])
    tracker, resolution = tiny_tracker() if spec["size"] == "tiny" else full_tracker(spec["checkpoint"],
                                                                                        spec["override"])
    frames = torch.from_numpy(np.load(spec["clip"]))
    height, width = frames.shape[1:3]
    images = preprocess(frames, resolution)
    out = {}
    with torch.inference_mode():
        fps(tracker, images[:2], height, width, spec["boxes"][str(spec["objects"][0])][:1])  # warm-up
        for count in spec["objects"]:
            out[count] = fps(tracker, images, height, width, spec["boxes"][str(count)])
            print(f"reference: measured {count} objects", file=sys.stderr)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
