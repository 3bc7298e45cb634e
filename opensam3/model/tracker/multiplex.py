"""Object multiplexing: the tracked objects of a frame go through the tracker in buckets of up
to ``bucket_size`` objects, one batched pass per bucket (memory attention, prompt encoder +
mask decoder, memory encoder), all buckets sharing the frame's image features.

Every tracker module treats the objects of a batch independently, so any bucketing gives the
same per-object results as tracking each object alone (``bucket_size=1``) -- with one
exception, kept on purpose: the frame's memory-selection score is defined over *all* objects
of the frame (the official tracker computes it on the whole batch), so it is recomputed from
the merged outputs rather than taken from any single bucket. Work that depends on the frame
alone (memory attention's first self-attention, the memory encoder's frame projection) runs
once per bucket. Bigger buckets amortise the per-call overhead (what matters on a GPU); on one
CPU thread buckets of 2-8 measured ~10% faster than one object per pass and 16 about equal
(cache size), and smaller buckets bound the activation memory.

This is execution-level multiplexing on SAM 3's weights. SAM 3.1's "Object Multiplex" goes
further with learned per-slot tokens that fold a bucket into one feature map; those need the
SAM 3.1 checkpoint and are not implemented here.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import torch

from .heads import TrackerHeads
from .memory_bank import MemoryBank, MemoryFrame
from .tracker_memory import TrackerMemory
from .tracking import FrameFeatures, FrameOutput, memory_score, track_step

# SAM 3.1's bucket capacity (official multiplex_count)
DEFAULT_BUCKET_SIZE = 16


def object_buckets(num_objects: int, bucket_size: int | None) -> list[slice]:
    """Consecutive object rows in groups of at most ``bucket_size`` (None: one group of all)."""
    if num_objects <= 0:
        return []
    size = num_objects if bucket_size is None else bucket_size
    return [slice(start, min(start + size, num_objects)) for start in range(0, num_objects, size)]


def check_bucket_size(bucket_size) -> int | None:
    """A bucket size option: a positive integer, or None for all objects in one bucket."""
    if bucket_size is None:
        return None
    if isinstance(bucket_size, bool) or not isinstance(bucket_size, int) or bucket_size < 1:
        raise ValueError(f"bucket_size must be a positive integer or None (all objects in one pass); "
                         f"got {bucket_size!r}")
    return bucket_size


def frame_rows(frame: MemoryFrame, rows: slice) -> MemoryFrame:
    """One bucket's share of a frame's memories (views, no copies)."""
    features = None if frame.features is None else frame.features[rows]
    # the spatial encoding is stored once for all objects (batch 1) or per object
    pos = frame.pos if frame.pos is None or frame.pos.shape[0] == 1 else frame.pos[rows]
    return MemoryFrame(features, pos, frame.obj_ptr[rows], frame.object_score_logits[rows], frame.score)


class RowsView(Mapping):
    """A {frame: MemoryFrame} mapping seen through one bucket's rows."""

    def __init__(self, frames: Mapping[int, MemoryFrame], rows: slice):
        self._frames = frames
        self._rows = rows

    def __getitem__(self, frame_idx: int) -> MemoryFrame:
        return frame_rows(self._frames[frame_idx], self._rows)

    def __iter__(self) -> Iterator[int]:
        return iter(self._frames)

    def __len__(self) -> int:
        return len(self._frames)


def bank_rows(bank: MemoryBank, rows: slice) -> MemoryBank:
    """The memory bank of one bucket of objects."""
    return MemoryBank(RowsView(bank.cond, rows), RowsView(bank.non_cond, rows))


def feature_rows(features: FrameFeatures, rows: slice, count: int) -> FrameFeatures:
    """A frame's features for ``count`` objects: per-object rows, or the shared batch-1 features.
    The shared image level stays batch 1: memory attention and the memory encoder broadcast it,
    so what they compute from the frame alone (the first self-attention, the frame's projection
    in the memory encoder) runs once per bucket. The decoder's high-res levels are broadcast
    views (an expand: the frame is still stored once)."""

    def pick(tensor: torch.Tensor) -> torch.Tensor:
        return tensor.expand(count, -1, -1, -1) if tensor.shape[0] == 1 else tensor[rows]

    image = features.image if features.image.shape[0] == 1 else features.image[rows]
    return FrameFeatures(image, (pick(features.high_res[0]), pick(features.high_res[1])), features.pos)


def merge_outputs(outputs: list[FrameOutput]) -> FrameOutput:
    """The buckets' outputs as one frame output, rows in object order; the frame's score over
    all objects (see the module docstring)."""
    if len(outputs) == 1:
        return outputs[0]

    def cat(name: str) -> torch.Tensor | None:
        parts = [getattr(out, name) for out in outputs]
        return None if parts[0] is None else torch.cat(parts)

    scores, ious = cat("object_score_logits"), cat("ious")
    return FrameOutput(cat("low_res_masks"), cat("high_res_masks"), cat("multimasks"), ious, cat("obj_ptr"), scores,
                       cat("memory_features"), cat("memory_pos"), memory_score(scores, ious))


def track_step_in_buckets(heads: TrackerHeads, memory: TrackerMemory, features: FrameFeatures, frame_idx: int,
                          bank: MemoryBank, num_frames: int, num_objects: int, bucket_size: int | None,
                          reverse: bool = False, run_mem_encoder: bool = True) -> FrameOutput:
    """Track ``num_objects`` objects on one frame without prompts (propagation), one
    :func:`track_step` per bucket. ``features`` hold batch 1 (shared) or one row per object;
    the bank holds one row per object."""
    outputs = []
    for rows in object_buckets(num_objects, bucket_size):
        count = rows.stop - rows.start
        whole = count == num_objects
        outputs.append(track_step(heads, memory, feature_rows(features, rows, count), frame_idx,
                                  bank if whole else bank_rows(bank, rows), num_frames, is_init_cond_frame=False,
                                  reverse=reverse, run_mem_encoder=run_mem_encoder))
    return merge_outputs(outputs)


def encode_in_buckets(memory: TrackerMemory, image: torch.Tensor, high_res_logits: torch.Tensor,
                      object_score_logits: torch.Tensor, bucket_size: int | None,
                      from_points: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """:meth:`TrackerMemory.encode` of B objects, one pass per bucket. ``image``: (1 or B, C, e, e)."""
    num_objects = high_res_logits.shape[0]
    features, positions = [], []
    for rows in object_buckets(num_objects, bucket_size):
        # a shared (batch-1) frame is broadcast inside the encoder: its projection runs once
        pix = image if image.shape[0] == 1 else image[rows]
        out, pos = memory.encode(pix, high_res_logits[rows], object_score_logits[rows], from_points)
        features.append(out)
        positions.append(pos)
    if len(features) == 1:
        return features[0], positions[0]
    return torch.cat(features), torch.cat(positions)
