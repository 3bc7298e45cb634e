"""Which object sits in which slot of which bucket (SAM 3.1 ``MultiplexState``; no parameters).

Objects live in "data space" (rows 0..N-1); the multiplex tracker works in "mux space"
[num_buckets, multiplex_count, ...]. A slot holds an object index, ``EMPTY`` (padding that was
never used) or ``RETIRED`` (its object was removed; the slot is never filled again, since the
bucket's memories still carry that object's trace in that slot's channels).

mux/demux are exact index scatters/gathers (the official code multiplies by 0/1 matrices; same
values, but an index copy neither rounds nor costs a matmul).
"""

from __future__ import annotations

import torch

EMPTY = -1
RETIRED = -2


class SlotAssignment:
    """Bucket/slot bookkeeping for one inference state.

    ``buckets[b][s]`` is the object index in bucket b, slot s (or EMPTY / RETIRED). Object
    indices are always 0..N-1 without gaps; removing objects renumbers the survivors in order.
    """

    def __init__(self, buckets: list[list[int]], multiplex_count: int):
        if any(len(bucket) != multiplex_count for bucket in buckets):
            raise ValueError(f"every bucket needs exactly {multiplex_count} slots")
        self.multiplex_count = multiplex_count
        self.buckets = [list(bucket) for bucket in buckets]
        self._check()
        self._index_cache: dict[str, torch.Tensor] = {}

    @classmethod
    def sequential(cls, num_objects: int, multiplex_count: int) -> "SlotAssignment":
        """Objects 0..n-1 fill bucket 0's slots in order, then bucket 1, ... (evaluation layout)."""
        state = cls([], multiplex_count)
        state.add_objects(num_objects, allow_new_buckets=True)
        return state

    # ---- queries ----
    @property
    def num_buckets(self) -> int:
        return len(self.buckets)

    @property
    def num_objects(self) -> int:
        return sum(1 for bucket in self.buckets for index in bucket if index >= 0)

    @property
    def free_slots(self) -> int:
        """Never-used slots of the existing buckets (retired slots do not count)."""
        return sum(1 for bucket in self.buckets for index in bucket if index == EMPTY)

    def location(self, obj: int) -> tuple[int, int]:
        """(bucket, slot) of an object."""
        for b, bucket in enumerate(self.buckets):
            if obj in bucket:
                return b, bucket.index(obj)
        raise KeyError(f"object {obj} is not assigned")

    def valid_mask(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """(num_buckets, multiplex_count) bool: the slot holds a live object."""
        table = torch.tensor(self.buckets, dtype=torch.long).reshape(-1, self.multiplex_count)
        return (table >= 0).to(device)

    # ---- changes ----
    def add_objects(self, count: int, allow_new_buckets: bool = False, prefer_new_buckets: bool = False) -> list[int]:
        """Append ``count`` objects (indices N, N+1, ...). They take never-used slots of the
        existing buckets first, bucket by bucket, unless ``prefer_new_buckets``; what is left
        opens new buckets if allowed. Returns the new indices."""
        if prefer_new_buckets and not allow_new_buckets:
            raise ValueError("prefer_new_buckets needs allow_new_buckets")
        start = self.num_objects
        pending = list(range(start, start + count))
        if not prefer_new_buckets:
            for bucket in self.buckets:
                for s, index in enumerate(bucket):
                    if pending and index == EMPTY:
                        bucket[s] = pending.pop(0)
        if pending and not allow_new_buckets:
            raise ValueError(f"{len(pending)} objects do not fit in the free slots of the existing buckets")
        while pending:
            taken, pending = pending[:self.multiplex_count], pending[self.multiplex_count:]
            self.buckets.append(taken + [EMPTY] * (self.multiplex_count - len(taken)))
        self._changed()
        return list(range(start, start + count))

    def remove_objects(self, objects: list[int]) -> list[int]:
        """Retire the objects' slots, drop buckets left without a live object, renumber the
        survivors 0..N'-1 in their old order. Returns the indices of the kept buckets (to slice
        stored per-bucket tensors with)."""
        doomed = set(objects)
        missing = doomed - {index for bucket in self.buckets for index in bucket if index >= 0}
        if missing:
            raise KeyError(f"objects {sorted(missing)} are not assigned")
        for bucket in self.buckets:
            for s, index in enumerate(bucket):
                if index in doomed:
                    bucket[s] = RETIRED
        kept = [b for b, bucket in enumerate(self.buckets) if any(index >= 0 for index in bucket)]
        self.buckets = [self.buckets[b] for b in kept]
        survivors = sorted(index for bucket in self.buckets for index in bucket if index >= 0)
        renumber = {old: new for new, old in enumerate(survivors)}
        self.buckets = [[renumber.get(index, index) for index in bucket] for bucket in self.buckets]
        self._changed()
        return kept

    # ---- data space <-> mux space ----
    def flat_slots(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """(N,) long: flat slot position b * multiplex_count + s of object i."""
        key = str(device)
        cached = self._index_cache.get(key)
        if cached is None:
            positions = [0] * self.num_objects
            for b, bucket in enumerate(self.buckets):
                for s, index in enumerate(bucket):
                    if index >= 0:
                        positions[index] = b * self.multiplex_count + s
            cached = torch.tensor(positions, dtype=torch.long, device=device)
            self._index_cache[key] = cached
        return cached

    def mux(self, x: torch.Tensor) -> torch.Tensor:
        """(N, ...) -> (num_buckets, multiplex_count, ...), zeros in slots without an object."""
        if x.shape[0] != self.num_objects:
            raise ValueError(f"expected {self.num_objects} object rows, got {x.shape[0]}")
        out = x.new_zeros((self.num_buckets * self.multiplex_count, *x.shape[1:]))
        out = out.index_copy(0, self.flat_slots(x.device), x)
        return out.unflatten(0, (self.num_buckets, self.multiplex_count))

    def demux(self, y: torch.Tensor) -> torch.Tensor:
        """(num_buckets, multiplex_count, ...) -> (N, ...); slots without an object are dropped."""
        if tuple(y.shape[:2]) != (self.num_buckets, self.multiplex_count):
            raise ValueError(f"expected ({self.num_buckets}, {self.multiplex_count}, ...), got {tuple(y.shape)}")
        return y.flatten(0, 1).index_select(0, self.flat_slots(y.device))

    # ---- internals ----
    def _changed(self) -> None:
        self._index_cache.clear()
        self._check()

    def _check(self) -> None:
        live = [index for bucket in self.buckets for index in bucket if index >= 0]
        if sorted(live) != list(range(len(live))):
            raise ValueError(f"object indices must be 0..N-1, each once; got {sorted(live)}")
        if any(index < RETIRED for bucket in self.buckets for index in bucket):
            raise ValueError("slot entries are object indices, EMPTY (-1) or RETIRED (-2)")
