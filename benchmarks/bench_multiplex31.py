"""SAM 3.1 Object Multiplex: tracker propagation time per frame with N objects packed into buckets
of 16 slots (one memory-attention + decoder + memory-encoder pass per bucket) against one object
per bucket (the per-object baseline of the same weights), on seeded weights.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_multiplex31.py [--size full|tiny]
        [--objects 1,4,16] [--memory-frames 2] [--repeats 2] [--dtype float32|bfloat16]

Tracker only: the frame features are random tensors of the right shapes (the image backbone,
which both layouts share, is not timed). Each layout stores ``--memory-frames`` past frames
(bucket memories and object pointers) made by the tracker itself, then one frame is propagated
with memory encoding, as during video propagation. This measures cost, not accuracy: the SAM 3.1
modules (opensam3/model/tracker/multiplex31) follow the official layout but no runnable SAM 3.1
reference exists here to check their outputs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from opensam3.model.tracker.multiplex31 import (EMPTY, TINY_MULTIPLEX, MultiplexTracker, MultiplexTrackerConfig,
                                                PointerMemory, SlotAssignment, SpatialMemory, propagate,
                                                spatial_tpos_row)
from opensam3.model.tracker.tracking import FrameFeatures
from opensam3.seeded import seed_module


def random_frame(tracker: MultiplexTracker, seed: int, dtype: torch.dtype) -> FrameFeatures:
    config = tracker.config
    gen = torch.Generator().manual_seed(seed)
    grid, dim = config.embedding_size, config.dim
    image = torch.randn(1, dim, grid, grid, generator=gen).to(dtype)
    levels = (torch.randn(1, dim, 4 * grid, 4 * grid, generator=gen).to(dtype),
              torch.randn(1, dim, 2 * grid, 2 * grid, generator=gen).to(dtype))
    return FrameFeatures(image, tracker.sam_mask_decoder.project_high_res(*levels))


def layouts(num_objects: int, slots: int) -> dict[str, SlotAssignment]:
    alone = [[obj] + [EMPTY] * (slots - 1) for obj in range(num_objects)]
    return {"multiplex": SlotAssignment.sequential(num_objects, slots),
            "per-object": SlotAssignment(alone, slots)}


def stored_memories(tracker: MultiplexTracker, slots: SlotAssignment, count: int, dtype: torch.dtype):
    """``count`` past frames (1..count back) of bucket memories and pointers for this layout."""
    config = tracker.config
    spatial, pointers = [], []
    for back in range(count, 0, -1):
        frame = random_frame(tracker, 100 + back, dtype)
        gen = torch.Generator().manual_seed(back)
        logits = 4 * torch.randn(slots.num_objects, 1, config.image_size, config.image_size, generator=gen)
        scores = torch.ones(slots.num_objects, 1)
        memory, _ = tracker.encode_memory(frame.image, logits.to(dtype), scores.to(dtype), slots)
        pos = tracker.maskmem_backbone.position_encoding(frame.image).to(dtype)
        spatial.append(SpatialMemory(memory, frame.image, pos, spatial_tpos_row(back, False, config.num_maskmem)))
        pointer = torch.randn(slots.num_objects, config.dim, generator=gen).to(dtype)
        pointers.append(PointerMemory(slots.mux(pointer), back))
    return spatial, pointers


def time_propagation(tracker, slots, memory_frames, repeats, dtype) -> float:
    spatial, pointers = stored_memories(tracker, slots, memory_frames, dtype)
    frame = random_frame(tracker, 0, dtype)
    times = []
    for _ in range(repeats + 1):  # the first call warms caches and allocators
        start = time.perf_counter()
        propagate(tracker, frame, slots, spatial, pointers, num_frames=memory_frames + 1)
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=["full", "tiny"], default="full")
    parser.add_argument("--objects", default="1,4,16", help="object counts, comma-separated")
    parser.add_argument("--memory-frames", type=int, default=2, help="stored past frames read by memory attention")
    parser.add_argument("--repeats", type=int, default=2, help="timed propagations per case (median)")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    config = MultiplexTrackerConfig() if args.size == "full" else TINY_MULTIPLEX
    tracker = MultiplexTracker(config).eval()
    seed_module(tracker, prefix="tracker.model.")
    tracker.to(dtype)
    counts = [int(c) for c in args.objects.split(",")]
    print(f"SAM 3.1 multiplex tracker ({args.size}, {config.multiplex_count} slots per bucket, "
          f"{config.embedding_size}x{config.embedding_size} grid, {args.memory_frames} memory frames, {args.dtype}, "
          f"{torch.get_num_threads()} threads); seconds per propagated frame, median of {args.repeats}")
    print(f"{'objects':>7}  {'multiplex s':>11}  {'per-object s':>12}  {'speed-up':>8}")
    with torch.inference_mode():
        for count in counts:
            seconds = {name: time_propagation(tracker, slots, args.memory_frames, args.repeats, dtype)
                       for name, slots in layouts(count, config.multiplex_count).items()}
            ratio = seconds["per-object"] / seconds["multiplex"]
            print(f"{count:>7}  {seconds['multiplex']:>11.3f}  {seconds['per-object']:>12.3f}  {ratio:>7.2f}x",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
