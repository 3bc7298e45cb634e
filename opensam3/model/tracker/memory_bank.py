"""Which past frames a frame attends to: the official memory-bank selection rules, as pure code.

A frame being tracked reads
  * spatial memories: up to ``max_cond_frames_in_attn`` prompted ("conditioning") frames, the
    closest in time, plus the previous ``num_maskmem - 1`` tracked frames (or, with memory
    selection, the most recent past frames whose score passed a threshold);
  * object pointers: those of the selected conditioning frames not in the future, plus up to
    ``max_obj_ptrs_in_encoder - 1`` recent tracked frames.
Each memory carries a temporal index: conditioning frames use 0 for their spatial memory and
their signed frame distance for their pointer; tracked frames use their slot (1 = oldest,
num_maskmem - 1 = newest) for spatial memory and their distance (or rank) for their pointer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TypeVar

import torch

from .config import TrackerMemoryConfig

T = TypeVar("T")


@dataclass
class MemoryFrame:
    """What one processed frame leaves in the bank, for all B tracked objects at once.

    features: (B, mem_dim, e, e) memory-encoder output (may be stored in bf16, as the official
    video predictor does); pos: (B or 1, mem_dim, e, e) its spatial encoding; obj_ptr: (B, dim);
    object_score_logits: (B, 1); score: the frame's memory-selection score (used only when
    ``use_memory_selection``), or None.
    """

    features: torch.Tensor | None
    pos: torch.Tensor | None
    obj_ptr: torch.Tensor
    object_score_logits: torch.Tensor
    score: float | None = None


@dataclass
class MemoryBank:
    """Per-frame memories: prompted (conditioning) frames and tracked frames, keyed by frame index."""

    cond: dict[int, MemoryFrame] = field(default_factory=dict)
    non_cond: dict[int, MemoryFrame] = field(default_factory=dict)

    def add(self, frame_idx: int, frame: MemoryFrame, is_cond: bool) -> None:
        (self.cond if is_cond else self.non_cond)[frame_idx] = frame
        if is_cond:
            self.non_cond.pop(frame_idx, None)


@dataclass
class MemoryPlan:
    """spatial: (temporal slot, frame) pairs, slot 0 for conditioning frames; pointers:
    (signed temporal distance, frame) pairs; both in the official concatenation order."""

    spatial: list[tuple[int, MemoryFrame]]
    pointers: list[tuple[int, MemoryFrame]]
    max_pointers: int


def select_closest_cond_frames(frame_idx: int, cond: Mapping[int, T], limit: int,
                               keep_first: bool = False) -> tuple[dict[int, T], dict[int, T]]:
    """(selected, unselected) conditioning frames: all when within ``limit`` (-1: no limit);
    otherwise [the earliest one before if keep_first,] the closest before, the closest at/after,
    then the nearest others."""
    if limit == -1 or len(cond) <= limit:
        return dict(cond), {}
    if limit < 2:
        raise ValueError("at least 2 conditioning frames must be allowed in attention")
    selected: dict[int, T] = {}
    if keep_first:
        first = min((t for t in cond if t < frame_idx), default=None)
        if first is None:  # tracking backwards: the first prompt is after this frame
            first = max((t for t in cond if t > frame_idx), default=None)
        if first is not None:
            selected[first] = cond[first]
    before = max((t for t in cond if t < frame_idx), default=None)
    if before is not None:
        selected[before] = cond[before]
    after = min((t for t in cond if t >= frame_idx), default=None)
    if after is not None:
        selected[after] = cond[after]
    rest = sorted((t for t in cond if t not in selected), key=lambda t: abs(t - frame_idx))
    for t in rest[: limit - len(selected)]:
        selected[t] = cond[t]
    return selected, {t: v for t, v in cond.items() if t not in selected}


def filter_memory_frames(scores: Mapping[int, float | None], frame_idx: int, reverse: bool, num_frames: int,
                         stride: int, max_pointers: int, threshold: float) -> list[int]:
    """Memory selection (official ``frame_filter``): past tracked frames, every ``stride``-th
    walking away from ``frame_idx``, kept if their score > threshold, until max_pointers - 1 are
    kept; returned oldest first, with the adjacent frame always appended last.

    ``scores`` maps tracked frames to their score (None: no score, skipped). As in the official
    loop, the forward walk stops before frame 0 (it is never a candidate).
    """
    if (frame_idx == 0 and not reverse) or (frame_idx == num_frames - 1 and reverse):
        return []
    limit = min(num_frames, max_pointers)
    if reverse:
        walk, adjacent = range(frame_idx + 1, num_frames, stride), frame_idx + 1
    else:
        walk, adjacent = range(frame_idx - 1, 0, -stride), frame_idx - 1
    kept: list[int] = []
    for t in walk:
        score = scores.get(t)
        if score is None:
            continue
        if score > threshold:
            kept.insert(0, t)
        if len(kept) >= limit - 1:
            break
    if adjacent not in kept:
        kept.append(adjacent)
    return kept


def _previous_frame(frame_idx: int, t_rel: int, stride: int, reverse: bool) -> int:
    """The tracked frame ``t_rel`` memory slots back: the adjacent frame, then every stride-th."""
    if t_rel == 1:
        return frame_idx + 1 if reverse else frame_idx - 1
    if reverse:
        return -(-(frame_idx + 2) // stride) * stride + (t_rel - 2) * stride
    return ((frame_idx - 2) // stride) * stride - (t_rel - 2) * stride


def plan_memory(frame_idx: int, bank: MemoryBank, config: TrackerMemoryConfig, num_frames: int,
                reverse: bool = False) -> MemoryPlan:
    """The memories a non-initial frame attends to (official ``_prepare_memory_conditioned_features``,
    evaluation mode)."""
    if not bank.cond:
        raise ValueError("tracking a frame needs at least one prompted (conditioning) frame in the bank")
    sign = -1 if reverse else 1
    selected, unselected = select_closest_cond_frames(frame_idx, bank.cond, config.max_cond_frames_in_attn,
                                                      config.keep_first_cond_frame)
    spatial: list[tuple[int, MemoryFrame]] = [(0, frame) for frame in selected.values()]
    max_pointers = min(num_frames, config.max_obj_ptrs_in_encoder)
    valid: list[int] = []
    if config.use_memory_selection:
        scores = {t: f.score for t, f in bank.non_cond.items()}
        valid = filter_memory_frames(scores, frame_idx, reverse, num_frames, config.memory_temporal_stride,
                                     max_pointers, config.memory_selection_threshold)
    for slot in range(1, config.num_maskmem):
        t_rel = config.num_maskmem - slot
        if config.use_memory_selection:
            if t_rel > len(valid):
                continue
            prev = valid[-t_rel]
        else:
            prev = _previous_frame(frame_idx, t_rel, config.memory_temporal_stride, reverse)
        # an unselected conditioning frame close by still serves as a tracked-frame memory
        frame = bank.non_cond.get(prev, unselected.get(prev))
        if frame is not None:
            spatial.append((slot, frame))

    # pointers of selected conditioning frames, future ones excluded (evaluation rule)
    pointers = [((frame_idx - t) * sign, frame) for t, frame in selected.items()
                if (t >= frame_idx if reverse else t <= frame_idx)]
    for t_diff in range(1, max_pointers):
        if config.use_memory_selection:
            # official quirk: stops one short, so the oldest selected frame gives no pointer
            if t_diff >= len(valid):
                break
            t = valid[-t_diff]
        else:
            t = frame_idx - t_diff * sign
            if t < 0 or t >= num_frames:
                break
        frame = bank.non_cond.get(t, unselected.get(t))
        if frame is not None:
            pointers.append((t_diff, frame))
    return MemoryPlan(spatial, pointers, max_pointers)
