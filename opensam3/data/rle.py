"""COCO run-length encoding (RLE) of binary masks, implemented with numpy.

The COCO format stores a mask column-major (Fortran order) as alternating run lengths that start
with a run of zeros. "Compressed" RLE turns the counts into an ASCII string: every count after
the second is stored as the difference to the count two places earlier, then written in 5-bit
groups (6 bits per character, offset by 48, bit 0x20 = "more groups follow", the 0x10 bit of
the last group carries the sign). Counts are bit-exact with pycocotools, so files written here
are read by the official tools and vice versa.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Mapping, Sequence

import numpy as np

Rle = dict  # {"size": [height, width], "counts": str | list[int]}


class RleError(ValueError):
    """A segmentation is not a valid COCO RLE."""


def _runs_from_flat(flat: np.ndarray) -> list[int]:
    """Run lengths of a flat 0/1 vector, starting with the (possibly empty) run of zeros."""
    n = flat.size
    if n == 0:
        return [0]
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate(([0], change, [n]))
    runs = np.diff(bounds).tolist()
    if flat[0]:
        runs.insert(0, 0)
    return runs


def counts_to_string(counts: Sequence[int]) -> str:
    """Compress integer run lengths into the COCO ASCII form."""
    chars: list[str] = []
    for index, count in enumerate(counts):
        value = int(count)
        if index > 2:
            value -= int(counts[index - 2])
        more = True
        while more:
            group = value & 0x1F
            value >>= 5
            # Python's >> is arithmetic, so a negative value ends at -1 and a positive one at 0.
            more = value != -1 if group & 0x10 else value != 0
            if more:
                group |= 0x20
            chars.append(chr(group + 48))
    return "".join(chars)


def string_to_counts(text: str) -> list[int]:
    """Expand the COCO ASCII form back into integer run lengths."""
    return list(_parse_counts(text))


@lru_cache(maxsize=8192)
def _parse_counts(text: str) -> tuple[int, ...]:
    # Cached: evaluation reads the same mask for several metrics and IoU types.
    counts: list[int] = []
    position = 0
    length = len(text)
    while position < length:
        value = 0
        shift = 0
        more = True
        while more:
            if position >= length:
                raise RleError("compressed RLE string ends in the middle of a count")
            group = ord(text[position]) - 48
            value |= (group & 0x1F) << shift
            more = bool(group & 0x20)
            position += 1
            shift += 5
            if not more and group & 0x10:
                value |= -1 << shift
        if len(counts) > 2:
            value += counts[-2]
        counts.append(value)
    return tuple(counts)


def _size_of(rle: Mapping[str, Any]) -> tuple[int, int]:
    try:
        height, width = (int(v) for v in rle["size"])
    except (KeyError, TypeError, ValueError) as exc:
        raise RleError(f"RLE needs 'size': [height, width], got {rle!r:.80}") from exc
    return height, width


def rle_counts(rle: Mapping[str, Any]) -> list[int]:
    """Integer run lengths of an RLE given in either compressed or uncompressed form."""
    if not isinstance(rle, Mapping) or "counts" not in rle:
        raise RleError(
            f"segmentation must be an RLE dict with 'size' and 'counts' (polygons are not "
            f"supported), got {type(rle).__name__}"
        )
    counts = rle["counts"]
    if isinstance(counts, bytes):
        counts = counts.decode("ascii")
    if isinstance(counts, str):
        return string_to_counts(counts)
    if isinstance(counts, (list, tuple)):
        return [int(c) for c in counts]
    raise RleError(f"RLE 'counts' must be a string or a list of integers, got {type(counts).__name__}")


def encode(mask: Any) -> Rle:
    """Compressed COCO RLE of a 2-D mask (numpy array or torch tensor; non-zero = foreground)."""
    array = _as_numpy(mask)
    if array.ndim != 2:
        raise RleError(f"encode expects one (H, W) mask, got shape {tuple(array.shape)}")
    flat = np.asarray(array != 0, dtype=np.uint8).ravel(order="F")
    return {"size": [int(array.shape[0]), int(array.shape[1])], "counts": counts_to_string(_runs_from_flat(flat))}


def encode_many(masks: Any) -> list[Rle]:
    """Compressed RLEs of an (N, H, W) stack of masks."""
    array = _as_numpy(masks)
    if array.ndim != 3:
        raise RleError(f"encode_many expects (N, H, W) masks, got shape {tuple(array.shape)}")
    return [encode(m) for m in array]


def compress(rle: Mapping[str, Any]) -> Rle:
    """The same RLE with string counts (uncompressed list counts are converted)."""
    height, width = _size_of(rle)
    counts = rle.get("counts")
    if isinstance(counts, str):
        return {"size": [height, width], "counts": counts}
    return {"size": [height, width], "counts": counts_to_string(rle_counts(rle))}


def decode(rle: Mapping[str, Any]) -> np.ndarray:
    """(H, W) bool mask of an RLE."""
    height, width = _size_of(rle)
    counts = rle_counts(rle)
    total = int(sum(counts))
    if total != height * width or any(c < 0 for c in counts):
        raise RleError(f"RLE counts cover {total} pixels but size {height}x{width} needs {height * width}")
    values = np.zeros(len(counts), dtype=bool)
    values[1::2] = True
    flat = np.repeat(values, counts)
    return flat.reshape((width, height)).T


def area(rle: Mapping[str, Any]) -> int:
    """Foreground pixel count (the odd runs)."""
    return int(sum(rle_counts(rle)[1::2]))


def to_bbox(rle: Mapping[str, Any]) -> list[float]:
    """Tight [x, y, w, h] box of an RLE, computed like pycocotools (empty mask -> zeros)."""
    height, _ = _size_of(rle)
    counts = rle_counts(rle)
    used = len(counts) // 2 * 2
    if used == 0 or height == 0:
        return [0.0, 0.0, 0.0, 0.0]
    x_start, y_start, x_end, y_end = 10**18, height, 0, 0
    cumulative = 0
    column_at_run_start = 0
    for index in range(used):
        cumulative += counts[index]
        # The last pixel of a foreground run is one before where the next run starts.
        pixel = cumulative - (index % 2)
        y, x = pixel % height, pixel // height
        if index % 2 == 0:
            column_at_run_start = x
        elif column_at_run_start < x:
            # A run that wraps to a later column covers the full height in between.
            y_start, y_end = 0, height - 1
        x_start, x_end = min(x_start, x), max(x_end, x)
        y_start, y_end = min(y_start, y), max(y_end, y)
    return [float(x_start), float(y_start), float(x_end - x_start + 1), float(y_end - y_start + 1)]


def _as_numpy(mask: Any) -> np.ndarray:
    if hasattr(mask, "detach"):  # torch tensor, without importing torch here
        mask = mask.detach().cpu().numpy()
    return np.asarray(mask)


def stack_decoded(rles: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """(N, H*W) bool matrix (column-major pixels) of RLEs that share one size (error otherwise)."""
    if not rles:
        return np.zeros((0, 0), dtype=bool)
    _common_size(rles)
    return np.stack([decode(r).ravel(order="F") for r in rles])


def _common_size(rles: Sequence[Mapping[str, Any]]) -> tuple[int, int]:
    sizes = {_size_of(r) for r in rles}
    if len(sizes) != 1:
        raise RleError(f"masks compared with each other have different sizes: {sorted(sizes)}")
    return sizes.pop()


def foreground_indices(rle: Mapping[str, Any]) -> np.ndarray:
    """Sorted column-major flat indices of the foreground pixels, without building the mask."""
    counts = np.asarray(rle_counts(rle), dtype=np.int64)
    starts = np.cumsum(counts) - counts
    run_starts, run_lengths = starts[1::2], counts[1::2]
    total = int(run_lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    # Index k of the output lies in run r: start_r + (k - number of pixels in earlier runs).
    offsets = np.repeat(run_starts - (np.cumsum(run_lengths) - run_lengths), run_lengths)
    return np.arange(total, dtype=np.int64) + offsets


def intersection_counts(
    detections: Sequence[Mapping[str, Any]], truths: Sequence[Mapping[str, Any]]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(D, G) pixel intersections and the two area vectors of same-size RLE masks.

    Works on foreground indices: detections are painted as bits into one scratch image, and
    each truth reads the bits under its own pixels, so the cost follows the mask areas rather
    than the image size times the number of pairs.
    """
    height, width = _common_size(list(detections) + list(truths))
    det_idx = [foreground_indices(d) for d in detections]
    gt_idx = [foreground_indices(g) for g in truths]
    inter = np.zeros((len(det_idx), len(gt_idx)), dtype=np.int64)
    for chunk_start in range(0, len(det_idx), 63):
        chunk = det_idx[chunk_start:chunk_start + 63]
        scratch = np.zeros(height * width, dtype=np.uint64)
        for bit, idx in enumerate(chunk):
            scratch[idx] |= np.uint64(1 << bit)
        bits = np.array([1 << b for b in range(len(chunk))], dtype=np.uint64)
        for g, idx in enumerate(gt_idx):
            under = scratch[idx]
            inter[chunk_start:chunk_start + len(chunk), g] = ((under[:, None] & bits[None, :]) != 0).sum(axis=0)
    det_area = np.array([len(i) for i in det_idx], dtype=np.int64)
    gt_area = np.array([len(i) for i in gt_idx], dtype=np.int64)
    return inter, det_area, gt_area


def mask_iou(
    detections: Sequence[Mapping[str, Any]],
    truths: Sequence[Mapping[str, Any]],
    truth_is_crowd: Sequence[bool] | None = None,
) -> np.ndarray:
    """(D, G) IoU matrix of RLE masks, as pycocotools.mask.iou computes it.

    For a crowd truth the denominator is the detection's area (a detection inside a crowd region
    is not penalised). A zero denominator gives 0.
    """
    if not detections or not truths:
        return np.zeros((len(detections), len(truths)))
    inter, det_area, gt_area = intersection_counts(detections, truths)
    union = det_area[:, None] + gt_area[None, :] - inter
    if truth_is_crowd is not None:
        crowd = np.asarray(truth_is_crowd, dtype=bool)[None, :]
        union = np.where(crowd, np.broadcast_to(det_area[:, None], union.shape), union)
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def box_iou_xywh(
    detections: Sequence[Sequence[float]],
    truths: Sequence[Sequence[float]],
    truth_is_crowd: Sequence[bool] | None = None,
) -> np.ndarray:
    """(D, G) IoU matrix of [x, y, w, h] boxes in float64, as pycocotools.mask.iou computes it."""
    det = np.asarray(detections, dtype=np.float64).reshape(-1, 4)
    gt = np.asarray(truths, dtype=np.float64).reshape(-1, 4)
    if det.shape[0] == 0 or gt.shape[0] == 0:
        return np.zeros((det.shape[0], gt.shape[0]))
    w = np.minimum(det[:, None, 0] + det[:, None, 2], gt[None, :, 0] + gt[None, :, 2]) - np.maximum(
        det[:, None, 0], gt[None, :, 0]
    )
    h = np.minimum(det[:, None, 1] + det[:, None, 3], gt[None, :, 1] + gt[None, :, 3]) - np.maximum(
        det[:, None, 1], gt[None, :, 1]
    )
    inter = w * h
    det_area = (det[:, 2] * det[:, 3])[:, None]
    gt_area = (gt[:, 2] * gt[:, 3])[None, :]
    union = det_area + gt_area - inter
    if truth_is_crowd is not None:
        crowd = np.asarray(truth_is_crowd, dtype=bool)[None, :]
        union = np.where(crowd, np.broadcast_to(det_area, union.shape), union)
    overlap = (w > 0) & (h > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(overlap, inter / np.where(overlap, union, 1.0), 0.0)
