"""What the interactive video tracker keeps per video: prompts, per-frame outputs, memories.

The layout follows the official ``Sam3TrackerPredictor`` inference state, with typed records in
place of dicts:

* ``outputs``: per frame, one :class:`FrameRecord` holding every object (rows in object order),
  split into prompted ("cond") and tracked ("non_cond") frames; propagation reads its memories
  from here.
* ``obj_outputs``: per object, row views of those records (used for corrections: the previous
  logits of a clicked frame, and objects missing from a frame's new prompts).
* ``temp``: per object, outputs of prompts added since the last propagation; they are merged
  ("consolidated") into ``outputs``, with fresh memories, when propagation starts.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import NamedTuple, TypeVar

import torch

from ..data.video_io import Video
from ..errors import InvalidInputError
from ..model.tracker.memory_bank import MemoryFrame
from ..model.tracker.tracking import FrameFeatures

COND, NON_COND = "cond", "non_cond"


class VideoFrameResult(NamedTuple):
    """Masks of every object on one frame. masks: (N, H, W) bool at the video's resolution;
    object_score_logits: (N,) (> 0: the object is visible) and low_res_logits (N, L, L), or
    None for the result of adding a prompt."""

    frame_idx: int
    obj_ids: list[int]
    masks: torch.Tensor
    object_score_logits: torch.Tensor | None = None
    low_res_logits: torch.Tensor | None = None


T = TypeVar("T")


def recent_frames_cache(cache: OrderedDict[int, T], frame_idx: int, limit: int, compute: Callable[[], T]) -> T:
    """``cache[frame_idx]``, computed on a miss; only the ``limit`` (at least 1) most recently
    used frames are kept."""
    cached = cache.get(frame_idx)
    if cached is not None:
        cache.move_to_end(frame_idx)
        return cached
    value = cache[frame_idx] = compute()
    while len(cache) > max(1, limit):
        cache.popitem(last=False)
    return value


def processing_order(start: int, max_frames: int | None, reverse: bool, num_frames: int) -> range | list[int]:
    """Frames visited by a propagation from ``start`` over at most ``max_frames`` more frames
    (official ``_get_processing_order``; backward from frame 0 visits frame 0 alone)."""
    if max_frames is None:
        max_frames = num_frames
    if isinstance(max_frames, bool) or not isinstance(max_frames, int) or max_frames < 0:
        raise InvalidInputError(f"max_frame_num_to_track must be a non-negative integer; got {max_frames!r}")
    if reverse:
        end = max(start - max_frames, 0)
        return range(start, end - 1, -1) if start > 0 else [0]
    return range(start, min(start + max_frames, num_frames - 1) + 1)


@dataclass
class FrameRecord:
    """Outputs of B objects on one frame (official "compact" frame output).

    pred_masks: (B, 1, L, L) low-res mask logits, or None for a mask prompt (then
    ``video_masks`` holds it at the video's resolution as +-1024 logits); obj_ptr: (B, C);
    object_score_logits: (B, 1); memory_features: (B, mem_dim, e, e) (stored in bf16 as the
    official predictor does) or None when the memory encoder did not run; memory_pos:
    (1, mem_dim, e, e), the same for every frame; iou_score: (B,) best predicted IoU; score:
    the frame's memory-selection score.
    """

    pred_masks: torch.Tensor | None
    obj_ptr: torch.Tensor
    object_score_logits: torch.Tensor
    memory_features: torch.Tensor | None = None
    memory_pos: torch.Tensor | None = None
    iou_score: torch.Tensor | None = None
    score: float | None = None
    video_masks: torch.Tensor | None = None
    _memory: MemoryFrame | None = field(default=None, repr=False)

    @property
    def memory(self) -> MemoryFrame:
        if self._memory is None:
            self._memory = MemoryFrame(self.memory_features, self.memory_pos, self.obj_ptr, self.object_score_logits,
                                       self.score)
        return self._memory

    def rows(self, index: slice | list[int]) -> "FrameRecord":
        """The record of a subset of objects (a view for a slice)."""

        def pick(tensor):
            return None if tensor is None else tensor[index]

        return FrameRecord(pick(self.pred_masks), self.obj_ptr[index], self.object_score_logits[index],
                           pick(self.memory_features), self.memory_pos, pick(self.iou_score), self.score,
                           pick(self.video_masks))

    def with_score(self, score: float | None) -> "FrameRecord":
        return replace(self, score=score, _memory=None)


class MemoryView(Mapping):
    """A {frame: FrameRecord} dict seen as {frame: MemoryFrame}, for the memory-bank rules."""

    def __init__(self, records: dict[int, FrameRecord]):
        self._records = records

    def __getitem__(self, frame_idx: int) -> MemoryFrame:
        return self._records[frame_idx].memory

    def __iter__(self) -> Iterator[int]:
        return iter(self._records)

    def __len__(self) -> int:
        return len(self._records)


def split_dict() -> dict[str, dict[int, FrameRecord]]:
    return {COND: {}, NON_COND: {}}


@dataclass
class TrackerVideoState:
    """One video being tracked. Create with ``VideoTracker.init_state``."""

    video: Video
    num_frames: int
    height: int
    width: int
    cache_frames: int = 2
    obj_ids: list[int] = field(default_factory=list)
    # per object (index = position in obj_ids): {frame: (coords (1, N, 2) model pixels, labels (1, N))}
    point_inputs: list[dict[int, tuple[torch.Tensor, torch.Tensor]]] = field(default_factory=list)
    # per object: {frame: (H, W) bool mask at the video's resolution}
    mask_inputs: list[dict[int, torch.Tensor]] = field(default_factory=list)
    outputs: dict[str, dict[int, FrameRecord]] = field(default_factory=split_dict)
    obj_outputs: list[dict[str, dict[int, FrameRecord]]] = field(default_factory=list)
    temp: list[dict[str, dict[int, FrameRecord]]] = field(default_factory=list)
    consolidated: dict[str, set[int]] = field(default_factory=lambda: {COND: set(), NON_COND: set()})
    tracking_started: bool = False
    # frame -> whether it was last tracked in reverse
    frames_tracked: dict[int, bool] = field(default_factory=dict)
    first_ann_frame_idx: int | None = None
    features: OrderedDict[int, FrameFeatures] = field(default_factory=OrderedDict)

    @property
    def num_objects(self) -> int:
        return len(self.obj_ids)

    def obj_index(self, obj_id: int) -> int | None:
        try:
            return self.obj_ids.index(obj_id)
        except ValueError:
            return None

    def add_object(self, obj_id: int) -> int:
        self.obj_ids.append(obj_id)
        self.point_inputs.append({})
        self.mask_inputs.append({})
        self.obj_outputs.append(split_dict())
        self.temp.append(split_dict())
        return len(self.obj_ids) - 1

    def drop_object(self, index: int) -> None:
        for container in (self.obj_ids, self.point_inputs, self.mask_inputs, self.obj_outputs, self.temp):
            del container[index]

    def add_output_per_object(self, frame_idx: int, record: FrameRecord, key: str) -> None:
        """Row views of a frame's record for every object (official ``_add_output_per_object``)."""
        for index, per_object in enumerate(self.obj_outputs):
            per_object[key][frame_idx] = record.rows(slice(index, index + 1))

    def reset_tracking(self) -> None:
        """Forget every prompt and output, keep the objects (official ``_reset_tracking_results``)."""
        for containers in (self.point_inputs, self.mask_inputs):
            for per_object in containers:
                per_object.clear()
        for containers in (self.obj_outputs, self.temp):
            for per_object in containers:
                per_object[COND].clear()
                per_object[NON_COND].clear()
        for key in (COND, NON_COND):
            self.outputs[key].clear()
            self.consolidated[key].clear()
        self.tracking_started = False
        self.frames_tracked.clear()
        self.first_ann_frame_idx = None

    def reset(self) -> None:
        """Forget every prompt, output and object (official ``clear_all_points_in_video``)."""
        self.reset_tracking()
        for container in (self.obj_ids, self.point_inputs, self.mask_inputs, self.obj_outputs, self.temp):
            container.clear()

    def input_frames(self) -> set[int]:
        frames: set[int] = set()
        for per_object in self.point_inputs + self.mask_inputs:
            frames.update(per_object)
        return frames
