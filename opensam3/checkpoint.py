"""Reading, checking and writing SAM 3 checkpoints.

Accepted layouts:
- the official ``sam3.pt``: ``{"model": {"detector.*": ..., "tracker.*": ...}}``;
- the same keys as a bare state dict or a ``.safetensors`` file (what :func:`save_checkpoint` writes);
- an image-model state dict without the ``detector.`` prefix.

Our module names mirror the official ones, so mapping keys is a prefix strip. RoPE tables
(``*.freqs_cis``) are recomputed, never loaded.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .errors import CheckpointError

DETECTOR_PREFIX = "detector."
TRACKER_PREFIX = "tracker."
# SAM 3.1 checkpoints hold the multiplex tracker one level down (the predictor wraps it as .model)
MULTIPLEX_TRACKER_PREFIX = "tracker.model."
HUB_REPO = "facebook/sam3"
HUB_FILENAME = "sam3.pt"
# SAM 3.1 (the file name as third-party loaders use it; not fetched from here: no network)
HUB_REPO_31 = "facebook/sam3.1"
HUB_FILENAME_31 = "sam3.1_multiplex.pt"
_RECOMPUTED_SUFFIXES = ("freqs_cis",)


@dataclass
class SplitCheckpoint:
    """A checkpoint's tensors, split by the model part they belong to."""

    detector: dict[str, torch.Tensor]
    tracker: dict[str, torch.Tensor] = field(default_factory=dict)


# A dtype per checkpoint key (None = keep the stored one): tensors are cast as they are read,
# so a bfloat16 load never holds the float32 checkpoint in memory next to the model.
DtypeFor = Callable[[str], torch.dtype | None]

_SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}


def _cast_target(name: str, stored: torch.dtype, dtype_for: DtypeFor | None) -> torch.dtype | None:
    """The dtype tensor ``name`` must be cast to, or None to keep ``stored`` (no target, already
    there, or not floating point)."""
    target = dtype_for(name) if dtype_for is not None else None
    if target is None or not stored.is_floating_point or stored == target:
        return None
    return target


def _cast(name: str, tensor: torch.Tensor, dtype_for: DtypeFor | None) -> torch.Tensor:
    target = _cast_target(name, tensor.dtype, dtype_for)
    return tensor if target is None else tensor.to(target)


def _safetensors_header(handle, problem: str) -> tuple[dict, int, int]:
    """(tensor entries, data start, file size) of an open ``.safetensors`` file; metadata dropped."""
    size = os.fstat(handle.fileno()).st_size
    prefix = handle.read(8)
    header_len = int.from_bytes(prefix, "little") if len(prefix) == 8 else -1
    if not 0 < header_len <= size - 8:
        raise CheckpointError(f"{problem} (bad header length; the file may be truncated or not safetensors)")
    try:
        header = json.loads(handle.read(header_len))
    except ValueError as exc:
        raise CheckpointError(f"{problem} (its header is not JSON: {exc})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{problem} (its header is not a JSON object)")
    header.pop("__metadata__", None)
    malformed = [name for name, entry in header.items() if not isinstance(entry, dict)]
    if malformed:
        raise CheckpointError(f"{problem} (tensor {malformed[0]!r} has a malformed header entry)")
    return header, 8 + header_len, size


# Cast reads go through one buffer of this size: a float32 file read into a bfloat16 model then
# never allocates (and leaves behind as heap holes) a float32 copy of each tensor.
_CAST_CHUNK_BYTES = 8 << 20


def _read_cast(handle, nbytes: int, stored: torch.dtype, shape: list[int], target: torch.dtype,
               scratch: torch.Tensor, short_message: str) -> torch.Tensor:
    """Read ``nbytes`` of ``stored`` values at the file position into a new ``target`` tensor."""
    result = torch.empty(shape, dtype=target)
    flat = result.view(-1)
    item = torch.empty((), dtype=stored).element_size()
    step = (scratch.numel() // item) * item
    done = 0
    while done < nbytes:
        size = min(step, nbytes - done)
        if handle.readinto(memoryview(scratch.numpy())[:size]) != size:
            raise CheckpointError(short_message)
        flat[done // item:(done + size) // item].copy_(scratch[:size].view(stored))
        done += size
    return result


def read_safetensors(path: str | os.PathLike, dtype_for: DtypeFor | None = None) -> dict[str, torch.Tensor]:
    """Every tensor of a ``.safetensors`` file, read one at a time with plain file reads.

    Not memory-mapped: mapped pages count as the process's memory, so reading a float32 file into a
    bfloat16 model that way peaks at both sizes. Here the peak is the result plus one tensor.
    """
    path = Path(path)
    problem = f"{path} is not a readable safetensors file"
    try:
        with open(path, "rb") as handle:
            header, data_start, size = _safetensors_header(handle, problem)
            state: dict[str, torch.Tensor] = {}
            scratch = torch.empty(_CAST_CHUNK_BYTES, dtype=torch.uint8)

            def file_order(item) -> int:  # sequential reads; malformed entries are reported below
                offsets = item[1].get("data_offsets")
                return offsets[0] if isinstance(offsets, list) and offsets and isinstance(offsets[0], int) else 0

            for name, entry in sorted(header.items(), key=file_order):
                try:
                    dtype = _SAFETENSORS_DTYPES[entry["dtype"]]
                    shape = [int(n) for n in entry["shape"]]
                    begin, end = (int(n) for n in entry["data_offsets"])
                except (KeyError, TypeError, ValueError):
                    raise CheckpointError(f"{problem} (tensor {name!r} has an unsupported or malformed entry "
                                          f"{entry!r})") from None
                nbytes = end - begin
                expected = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
                if nbytes != expected or begin < 0 or data_start + end > size:
                    raise CheckpointError(f"{problem} (tensor {name!r}: its bytes do not fit its shape {shape} or "
                                          f"lie past the end of the file; the file may be truncated)")
                handle.seek(data_start + begin)
                short = f"{problem} (tensor {name!r} is cut short; the file may be truncated)"
                target = _cast_target(name, dtype, dtype_for)
                if target is None:
                    raw = torch.empty(nbytes, dtype=torch.uint8)
                    if nbytes and handle.readinto(memoryview(raw.numpy())) != nbytes:
                        raise CheckpointError(short)
                    state[name] = raw.view(dtype).reshape(shape)
                else:
                    state[name] = _read_cast(handle, nbytes, dtype, shape, target, scratch, short)
    except OSError as exc:
        raise CheckpointError(f"{problem} ({exc})") from None
    return state


def read_checkpoint(path: str | os.PathLike, dtype_for: DtypeFor | None = None) -> dict[str, torch.Tensor]:
    """Load every tensor of a ``.pt``/``.pth``/``.safetensors`` file into a flat dict (CPU).

    ``dtype_for(key)`` casts floating tensors while reading (see :data:`DtypeFor`). Pickle files are
    read with ``weights_only=True``: a checkpoint cannot run code.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.is_dir():
        raise CheckpointError(f"expected a checkpoint file but {path} is a directory")
    if path.suffix == ".safetensors":
        return read_safetensors(path, dtype_for)
    try:
        raw = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:
        # old-style (non-zipfile) pickles cannot be memory-mapped
        try:
            raw = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - report any unpickling failure the same way
            raise CheckpointError(f"{path} is not a readable PyTorch checkpoint ({exc})") from None
    except Exception as exc:  # noqa: BLE001
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint ({type(exc).__name__}: {exc})") from None
    if isinstance(raw, Mapping) and "model" in raw and isinstance(raw["model"], Mapping):
        raw = raw["model"]
    if not isinstance(raw, Mapping) or not all(isinstance(v, torch.Tensor) for v in raw.values()):
        raise CheckpointError(f"{path} does not hold a state dict (a mapping of names to tensors)")
    return {name: _cast(name, tensor, dtype_for) for name, tensor in raw.items()}


def checkpoint_keys(path: str | os.PathLike) -> list[str]:
    """The tensor names of a checkpoint without reading its tensors (a safetensors header, or a
    memory-mapped ``.pt`` whose data is never touched): enough to tell what kind of file it is."""
    path = Path(path)
    if path.suffix == ".safetensors" and path.is_file():
        try:
            with open(path, "rb") as handle:
                return list(_safetensors_header(handle, f"{path} is not a readable safetensors file")[0])
        except OSError as exc:
            raise CheckpointError(f"{path} is not a readable safetensors file ({exc})") from None
    return list(read_checkpoint(path))


def split_checkpoint(state: Mapping[str, torch.Tensor]) -> SplitCheckpoint:
    """Separate detector (image model) and tracker tensors; drop recomputed tables."""
    keep = {k: v for k, v in state.items() if not k.endswith(_RECOMPUTED_SUFFIXES)}
    if any(k.startswith(DETECTOR_PREFIX) for k in keep):
        detector = {k[len(DETECTOR_PREFIX):]: v for k, v in keep.items() if k.startswith(DETECTOR_PREFIX)}
        tracker = {k[len(TRACKER_PREFIX):]: v for k, v in keep.items() if k.startswith(TRACKER_PREFIX)}
        others = [k for k in keep if not k.startswith((DETECTOR_PREFIX, TRACKER_PREFIX))]
        if others:
            # unknown top-level parts are reported as unexpected by load_into
            detector.update({k: keep[k] for k in others})
        return SplitCheckpoint(detector=detector, tracker=tracker)
    return SplitCheckpoint(detector=dict(keep))


def _guess_foreign_format(keys: list[str]) -> str | None:
    if any(k.startswith(("image_encoder.", "sam_mask_decoder.", "sam_prompt_encoder.", "memory_attention.")) for k in keys):
        return "this looks like a SAM 2 checkpoint; opensam3 needs a SAM 3 checkpoint (sam3.pt)"
    if any(k.startswith(("vision_encoder.", "detr_encoder.", "detr_decoder.", "text_encoder.text_model")) for k in keys):
        return ("this looks like a Hugging Face transformers Sam3Model checkpoint; "
                "use the official sam3.pt from https://huggingface.co/facebook/sam3")
    return None


def _summarise(names: list[str], limit: int = 8) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def check_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Raise one readable CheckpointError listing every missing, unexpected and mis-shaped key."""
    expected = model.state_dict()
    missing = sorted(k for k in expected if k not in state)
    unexpected = sorted(k for k in state if k not in expected)
    misshaped = sorted(
        f"{k} (checkpoint {tuple(state[k].shape)}, model {tuple(expected[k].shape)})"
        for k in expected
        if k in state and tuple(state[k].shape) != tuple(expected[k].shape)
    )
    if not (missing or unexpected or misshaped):
        return
    lines = [f"{source} does not fit the model:"]
    hint = _guess_foreign_format(list(state))
    if hint:
        lines.append(f"  {hint}")
    if missing:
        lines.append(f"  {len(missing)} missing: {_summarise(missing)}")
    if unexpected:
        lines.append(f"  {len(unexpected)} unexpected: {_summarise(unexpected)}")
    if misshaped:
        lines.append(f"  {len(misshaped)} with the wrong shape: {_summarise(misshaped, 5)}")
    if not hint and misshaped and not missing and not unexpected:
        lines.append("  the names fit but the sizes do not: was the model built with the right config?")
    raise CheckpointError("\n".join(lines))


def load_into(model: nn.Module, state: Mapping[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Check, then copy tensors into the model (cast to each parameter's dtype and device)."""
    check_state_dict(model, state, source)
    model.load_state_dict(state, strict=True)


def save_checkpoint(model: nn.Module, path: str | os.PathLike, tracker: nn.Module | Sequence[nn.Module] | None = None,
                    metadata: dict[str, str] | None = None) -> None:
    """Write the model in the official key layout as safetensors (readable by read_checkpoint).
    ``tracker``: the module(s) whose state dicts together make ``tracker.*`` (heads, memory)."""
    tensors = {DETECTOR_PREFIX + k: v.detach().contiguous() for k, v in model.state_dict().items()}
    trackers = [] if tracker is None else [tracker] if isinstance(tracker, nn.Module) else list(tracker)
    for part in trackers:
        tensors.update({TRACKER_PREFIX + k: v.detach().contiguous() for k, v in part.state_dict().items()})
    _write_safetensors(tensors, Path(path), metadata or {})


def convert_checkpoint(source: str | os.PathLike, target: str | os.PathLike,
                       dtype: torch.dtype | None = None) -> int:
    """Rewrite a checkpoint (e.g. the official ``sam3.pt``) as ``.safetensors`` with the same keys,
    floating tensors cast to ``dtype`` (None keeps them). Returns the number of tensors written.
    Safetensors load without unpickling, and straight into a bfloat16 model without a float32
    copy (see :func:`read_safetensors`)."""
    source, target = Path(source), Path(target)
    if target.suffix != ".safetensors":
        raise CheckpointError(f"the converted file must end in .safetensors, got {target}")
    if target.exists() and target.resolve() == source.resolve():
        raise CheckpointError(f"{target} is the checkpoint being converted; choose another output path")
    state = read_checkpoint(source, (lambda _key: dtype) if dtype is not None else None)
    state = {k: v.contiguous() for k, v in state.items() if not k.endswith(_RECOMPUTED_SUFFIXES)}
    _write_safetensors(state, target, _safetensors_metadata(source))  # keeps the model config opensam3 wrote
    return len(state)


def _safetensors_metadata(path: Path) -> dict[str, str] | None:
    if path.suffix != ".safetensors":
        return None
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        return handle.metadata()


def _write_safetensors(state: Mapping[str, torch.Tensor], target: Path, metadata: dict[str, str] | None) -> None:
    from safetensors.torch import save_file

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    # safetensors writes owner-only files (0600); give ours the mode any new file gets here (umask)
    tmp.unlink(missing_ok=True)  # a stale one would keep its own mode
    handle = os.open(tmp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o666)
    mode = os.fstat(handle).st_mode & 0o777
    os.close(handle)
    save_file(dict(state), str(tmp), metadata=metadata)
    os.chmod(tmp, mode)
    os.replace(tmp, target)  # never leave a half-written file under the final name


def average_checkpoints(sources: Sequence[str | os.PathLike], target: str | os.PathLike,
                        weights: Sequence[float] | None = None, dtype: torch.dtype | None = None) -> int:
    """Write the weighted mean of several checkpoints of one model (a "model soup"): fine-tunes
    of a common starting point often score better averaged than any one of them. Floating
    tensors are averaged in float32 and stored in each first-file tensor's dtype (or ``dtype``);
    other tensors must be equal in every file. The first file's metadata (model config, score
    offsets) is kept, so the files must agree on it. Returns the number of tensors written."""
    paths, target = [Path(p) for p in sources], Path(target)
    if len(paths) < 2:
        raise CheckpointError(f"averaging needs at least two checkpoints, got {len(paths)}")
    if target.suffix != ".safetensors":
        raise CheckpointError(f"the averaged file must end in .safetensors, got {target}")
    if target.exists() and any(target.resolve() == p.resolve() for p in paths if p.exists()):
        raise CheckpointError(f"{target} is one of the checkpoints being averaged; choose another output path")
    weights = [1.0] * len(paths) if weights is None else [float(w) for w in weights]
    if len(weights) != len(paths) or any(not w > 0 for w in weights):
        raise CheckpointError(f"give one positive weight per checkpoint ({len(paths)} files, weights {weights})")
    total = sum(weights)
    first = read_checkpoint(paths[0])
    metadata = _safetensors_metadata(paths[0])
    stored = {k: dtype if dtype is not None and v.is_floating_point() else v.dtype for k, v in first.items()}
    mean = {k: v.float() * (weights[0] / total) if v.is_floating_point() else v for k, v in first.items()}
    del first
    for path, weight in zip(paths[1:], weights[1:]):
        state = read_checkpoint(path)
        missing, extra = sorted(set(mean) - set(state)), sorted(set(state) - set(mean))
        misshaped = sorted(k for k in mean if k in state and state[k].shape != mean[k].shape)
        if missing or extra or misshaped:
            raise CheckpointError(
                f"{path} is not the same model as {paths[0]}: " + "; ".join(
                    f"{len(names)} {what}: {_summarise(names)}" for what, names in
                    (("missing", missing), ("extra", extra), ("with another shape", misshaped)) if names))
        other = _safetensors_metadata(path)
        if metadata is not None and other is not None and metadata != other:
            raise CheckpointError(f"{path} and {paths[0]} hold different model configs in their metadata "
                                  "(sizes or score offsets): average fine-tunes of one model with one config")
        for key, value in state.items():
            if mean[key].is_floating_point():
                mean[key].add_(value.float(), alpha=weight / total)
            elif not torch.equal(value, mean[key]):
                raise CheckpointError(f"{path}: the non-floating tensor {key!r} differs from {paths[0]}'s; "
                                      "these files are not fine-tunes of one model")
        del state
    _write_safetensors({k: v.to(stored[k]).contiguous() for k, v in mean.items()}, target, metadata)
    return len(mean)


def download_official(repo_id: str = HUB_REPO, filename: str = HUB_FILENAME) -> Path:
    """Fetch the official checkpoint through huggingface_hub (needs access to the gated repo)."""
    instructions = (
        f"download {filename} from https://huggingface.co/{repo_id} (accept the licence there; "
        f"`huggingface-cli login`), then pass its path with --checkpoint PATH or set OPENSAM3_CHECKPOINT=PATH"
    )
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        raise CheckpointError(f"huggingface_hub is not installed (pip install 'opensam3[hub]'); or {instructions}") from None
    try:
        return Path(hf_hub_download(repo_id=repo_id, filename=filename))
    except Exception as exc:  # noqa: BLE001 - offline, gated, or missing: one message
        raise CheckpointError(f"could not fetch {filename} from the Hugging Face hub ({type(exc).__name__}); {instructions}") from None
