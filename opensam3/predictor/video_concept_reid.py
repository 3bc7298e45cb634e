"""Re-identification of lost masklets in concept video tracking (an opensam3 extension; off in
the official configs).

The official pipeline keeps a masklet whose object went fully out of sight, but when the object
comes back it is usually the detector that finds it first, and an unmatched detection starts a
new masklet: the object changes id. Here a masklet that is empty on the current frame keeps a
short motion record (where its mask's centre was, frame by frame, while it was fully visible),
and a confident detection that overlaps no masklet re-activates the lost masklet whose
constant-velocity prediction it lands near, instead of starting a new one. Motion rather than
appearance decides, so two look-alike objects keep their own ids when one passes behind
something.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

HISTORY = 8  # observations kept per masklet
FULL_VIEW = 0.6  # an observation counts for motion when its area is at least this share of the largest seen


@dataclass(frozen=True)
class Observation:
    frame: int
    center: np.ndarray  # (2,) x, y in [0, 1] of the mask's width / height
    area: float  # share of the mask's pixels


def observe(masks: torch.Tensor) -> list[Observation | None]:
    """(N, H, W) mask logits -> each mask's centre and area (None for an empty mask); frame unset (-1)."""
    binary = masks > 0
    height, width = binary.shape[-2:]
    areas = binary.sum(dim=(-1, -2)).float()
    ys = torch.arange(height, dtype=torch.float32)[:, None] + 0.5
    xs = torch.arange(width, dtype=torch.float32)[None, :] + 0.5
    cx = (binary * xs).sum(dim=(-1, -2)) / areas.clamp(min=1) / width
    cy = (binary * ys).sum(dim=(-1, -2)) / areas.clamp(min=1) / height
    out: list[Observation | None] = []
    for i in range(binary.shape[0]):
        if areas[i] == 0:
            out.append(None)
        else:
            out.append(Observation(-1, np.array([cx[i].item(), cy[i].item()]), areas[i].item() / (height * width)))
    return out


def record_motion(motion: dict, frame_idx: int, obj_ids, masks: torch.Tensor, confirmed=None) -> None:
    """Append this frame's observation of every non-empty mask to ``motion`` (obj id -> list).
    An observation a detection does not confirm (``confirmed`` False) is kept only where it
    agrees with the masklet's motion so far (within one object size of the prediction, area
    within FULL_VIEW of the largest): a tracker drifting onto something else must not steer it."""
    for i, (obj_id, seen) in enumerate(zip(obj_ids, observe(masks))):
        history = motion.get(int(obj_id), [])
        if seen is None or (confirmed is not None and not confirmed[i] and not _agrees(history, frame_idx, seen)):
            continue
        if history and history[-1].frame == frame_idx:  # seen again on the same frame (a prompt, then propagation)
            history.pop()
        history.append(Observation(frame_idx, seen.center, seen.area))
        del history[:-HISTORY]
        motion[int(obj_id)] = history


def _agrees(history: list[Observation], frame_idx: int, seen: Observation) -> bool:
    if not history:
        return False
    center, size, _, _ = predict(history, frame_idx)
    largest = size ** 2
    return (FULL_VIEW * largest <= seen.area <= largest / FULL_VIEW
            and float(np.linalg.norm(seen.center - center)) <= size)


def predict(history: list[Observation], frame_idx: int) -> tuple[np.ndarray, float, float, int]:
    """Predicted centre on ``frame_idx``, object size (square root of its largest area), speed
    (per frame) and frames since it was last fully seen, from the fully visible observations:
    constant velocity through the last two, standing still with only one."""
    largest = max(o.area for o in history)
    full = [o for o in history if o.area >= FULL_VIEW * largest]
    last = full[-1]
    velocity = np.zeros(2)
    if len(full) >= 2 and full[-1].frame != full[-2].frame:
        velocity = (full[-1].center - full[-2].center) / (full[-1].frame - full[-2].frame)
    gap = abs(frame_idx - last.frame)
    return last.center + velocity * (frame_idx - last.frame), float(np.sqrt(largest)), float(np.linalg.norm(velocity)), gap


def match_lost(motion: dict, frame_idx: int, lost_ids, det_masks: torch.Tensor, candidates, gate: float,
               max_gap: int) -> dict[int, int]:
    """Lost masklet id -> detection index, for detections (``candidates``, indices into
    ``det_masks``) whose centre lies within ``gate`` object sizes (plus half the distance the
    object moves over the gap) of a lost masklet's predicted centre, last fully seen at most
    ``max_gap`` frames ago. Closest pairs (relative to their gate) first; each masklet and
    detection used once."""
    if len(candidates) == 0:
        return {}
    seen = observe(det_masks[torch.as_tensor(list(candidates), dtype=torch.long)])
    pairs = []
    for obj_id in lost_ids:
        history = motion.get(int(obj_id))
        if not history:
            continue
        center, size, speed, gap = predict(history, frame_idx)
        if gap == 0 or gap > max_gap:
            continue
        radius = gate * size + 0.5 * speed * gap
        for det_idx, det in zip(candidates, seen):
            if det is None:
                continue
            distance = float(np.linalg.norm(det.center - center))
            if distance <= radius:  # ranked by distance in gate units: a fast mover's prediction is looser
                pairs.append((distance / radius, int(obj_id), int(det_idx)))
    chosen: dict[int, int] = {}
    used: set = set()
    for _, obj_id, det_idx in sorted(pairs):
        if obj_id not in chosen and det_idx not in used:
            chosen[obj_id] = det_idx
            used.add(det_idx)
    return chosen
