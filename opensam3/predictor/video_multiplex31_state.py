"""What a SAM 3.1 multiplex tracking session holds: its objects in groups, each group one
official "inference state" (objects packed into buckets, its own conditioning frames, memories
and outputs).

How objects come into groups (docs/sam31_multiplex_notes.md, "Dynamic state"; the official
pipeline's rules but for the first one, which is the official demo class's layout):

* Objects prompted on a frame go into one group for that frame until it is first propagated;
  then the group is packed into buckets (``objects_per_bucket``) and its memory encoded. (The
  official pipeline gives every clicked object a group of its own.)
* A new object prompted later starts a new group on its frame.
* Prompting an object again once its group has been packed, or on another frame (which packs
  its group first), is a correction: it first moves it out of a shared group into a group of its own: it keeps its output and its
  pointer on every stored frame (in slot 0), not the shared bucket memories, which hold its
  bucket-mates too; then the prompted frame becomes a conditioning frame of its group.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

import torch

from ..data.video_io import Video
from ..model.tracker.multiplex31 import SlotAssignment


@dataclass
class PromptOutput:
    """One object's decoded prompt: low-res logits (1, 1, L, L) (its output on the frame), the
    logits its memory is encoded from (1, 1, S, S), object score (1, 1), pointer (1, C)."""

    low_res: torch.Tensor
    for_memory: torch.Tensor
    score: torch.Tensor
    pointer: torch.Tensor


@dataclass
class StoredFrame:
    """A processed frame of one group: per object low-res logits (n, 1, L, L) and scores (n, 1);
    the bucket memory (nb, C, e, e), or None where the group kept only pointers (an object moved
    out of a shared group); the frame's image features and their encoding (1, C, e, e); the
    pointers in mux space (nb, M, C)."""

    masks: torch.Tensor
    scores: torch.Tensor
    memory: torch.Tensor | None
    image: torch.Tensor
    image_pos: torch.Tensor
    pointers: torch.Tensor

    def without_rows(self, rows: list[int], kept_buckets: list[int]) -> "StoredFrame":
        """This frame after objects ``rows`` left the group and only ``kept_buckets`` remain."""
        keep = [i for i in range(self.masks.shape[0]) if i not in rows]
        memory = None if self.memory is None else self.memory[kept_buckets]
        return StoredFrame(self.masks[keep], self.scores[keep], memory, self.image, self.image_pos,
                           self.pointers[kept_buckets])


@dataclass
class ObjectGroup:
    """Objects tracked together (one official inference state). Before it is packed, ``prompts``
    holds each object's prompt on ``frame``; afterwards ``slots`` says where each object sits,
    ``cond`` are its conditioning (prompted) frames, ``frames`` its outputs and memories, and
    ``fresh`` the frames tracked since its prompts last changed (reused; the rest are tracked)."""

    frame: int
    obj_ids: list[int] = field(default_factory=list)
    prompts: dict[int, PromptOutput] = field(default_factory=dict)
    slots: SlotAssignment | None = None
    cond: set[int] = field(default_factory=set)
    frames: dict[int, StoredFrame] = field(default_factory=dict)
    fresh: set[int] = field(default_factory=set)

    @property
    def packed(self) -> bool:
        return self.slots is not None

    def row(self, obj_id: int) -> int:
        return self.obj_ids.index(obj_id)

    def first_frame(self) -> int:
        return min(self.cond) if self.cond else self.frame

    def drop(self, obj_id: int) -> None:
        """Remove one object: its slot is retired (never refilled: the bucket memories still carry
        its trace), buckets left empty are dropped, stored frames lose its rows."""
        row = self.row(obj_id)
        self.obj_ids.remove(obj_id)
        if not self.packed:
            self.prompts.pop(obj_id)
            return
        kept = self.slots.remove_objects([row])
        self.frames = {t: stored.without_rows([row], kept) for t, stored in self.frames.items()}

    def extract(self, obj_id: int, multiplex_count: int) -> "ObjectGroup":
        """A new group holding only ``obj_id`` (slot 0 of one bucket), taken out of this one: its
        outputs and pointers on every stored frame, no spatial memory (a bucket memory cannot be
        split per object), this group's conditioning frames as pointer-only conditioning frames.
        Its non-conditioning frames are tracked again at the next propagation."""
        row = self.row(obj_id)
        alone = SlotAssignment.sequential(1, multiplex_count)
        frames = {}
        for t, stored in self.frames.items():
            pointer = self.slots.demux(stored.pointers)[row:row + 1]
            frames[t] = StoredFrame(stored.masks[row:row + 1], stored.scores[row:row + 1], None, stored.image,
                                    stored.image_pos, alone.mux(pointer))
        group = type(self)(self.frame, [obj_id], slots=alone, cond=set(self.cond), frames=frames)
        self.drop(obj_id)
        return group


@dataclass
class Multiplex31State:
    """One video's tracking session: the objects (in the order they were first prompted), their
    groups, the click inputs per (object, frame) and the cached frame features."""

    video: Video
    num_frames: int
    height: int
    width: int
    obj_ids: list[int] = field(default_factory=list)
    groups: list[ObjectGroup] = field(default_factory=list)
    point_inputs: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    features: OrderedDict = field(default_factory=OrderedDict)   # frame -> (interactive, propagation)

    @property
    def started(self) -> bool:
        """Whether any group has been packed (propagation has begun)."""
        return any(group.packed for group in self.groups)

    def group_of(self, obj_id: int) -> ObjectGroup | None:
        return next((group for group in self.groups if obj_id in group.obj_ids), None)

    def open_group(self, frame_idx: int) -> ObjectGroup:
        """The group that new objects prompted on ``frame_idx`` join: the unpacked one of that
        frame, or a new one."""
        group = next((g for g in self.groups if not g.packed and g.frame == frame_idx), None)
        if group is None:
            group = ObjectGroup(frame_idx)
            self.groups.append(group)
        return group
