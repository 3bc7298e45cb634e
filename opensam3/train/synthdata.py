"""The embedded model's default data: a synthetic shapes world rendered by opensam3.synth.

``opensam3 train --config embedded`` without ``--data`` renders a training split and a
held-out split (different seeds, so no scene is shared) into ``OUT/data`` once, and reuses them
when the run is resumed.
"""

from __future__ import annotations

from pathlib import Path

from opensam3.errors import InvalidInputError

TRAIN_IMAGES = 4000  # ~8 pairs each
VAL_IMAGES = 150
CALIB_IMAGES = 100   # the presence calibration's split (train/calibrate.py), apart from both
TRAIN_SEED, VAL_SEED, CALIB_SEED = 0, 1, 2


def prepare_synthetic_data(root: str | Path, image_size: int, train_images: int = TRAIN_IMAGES,
                           val_images: int = VAL_IMAGES, calib_images: int = CALIB_IMAGES,
                           progress: bool = True) -> Path:
    """Write ROOT/train, ROOT/val and ROOT/calib (SA-Co image layout) unless already there
    (0 images: no such split); returns ROOT."""
    try:
        from opensam3.synth import write_image_dataset
    except ImportError as exc:
        raise InvalidInputError(f"opensam3.synth is not available ({exc}); pass --data DIR with an "
                                f"SA-Co-style dataset instead") from None
    root = Path(root)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = lambda items: tqdm(items, desc="rendering", leave=False)  # noqa: E731
    for split, count, seed in (("train", train_images, TRAIN_SEED), ("val", val_images, VAL_SEED),
                               ("calib", calib_images, CALIB_SEED)):
        folder = root / split
        if not count or folder.is_dir() and any(folder.glob("*.json")):
            continue  # rendering is deterministic: an existing split is the same data
        write_image_dataset(folder, num_images=count, seed=seed, size=image_size, progress=bar)
    return root
