"""``make demo``: render a scene of the synthetic shapes world and segment three phrases in it.

The phrases come from the scene's own ground truth: a general positive ("star"), a specific
positive ("small striped red star") and a hard negative (a phrase naming nothing in the image),
so the printed table can be checked against the true instance counts. The model is
$OPENSAM3_CHECKPOINT when set, else the embedded model shipped with the package.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from .api import CHECKPOINT_ENV, embedded_weights
from .cli import main as cli_main

DEMO_SEED = 2026   # not a training or validation seed of the embedded model
DEMO_SCENE = 4     # a scene with a repeated shape, a specific sub-group of it and a hard negative
IMAGE_SIZE = 224   # the embedded model's input size, so the scene looks like its training data
OUT_DIR = Path("demo_out")


def demo_phrases(pairs) -> list[tuple[str, int]]:
    """(phrase, true instance count): the positive with the most instances, the most specific
    positive (most words, then most instances) and the first hard negative."""
    positives = [p for p in pairs if not p.is_negative]
    negatives = [p for p in pairs if p.is_negative]
    general = max(positives, key=lambda p: (len(p.masks), -len(p.phrase.split())))
    specific = max((p for p in positives if p is not general), key=lambda p: (len(p.phrase.split()), len(p.masks)))
    negative = next((p for p in negatives if p.negative == "hard"), negatives[0])
    return [(p.phrase, len(p.masks)) for p in (general, specific, negative)]


def main() -> int:
    from PIL import Image

    from .synth import scene_stream

    stream = scene_stream(seed=DEMO_SEED, size=IMAGE_SIZE, start=DEMO_SCENE)
    scene = next(stream)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    image_path = OUT_DIR / "scene.png"
    Image.fromarray(scene.image).save(image_path)
    phrases = demo_phrases(scene.pairs())
    print(f"scene: {image_path} ({IMAGE_SIZE}x{IMAGE_SIZE}, synthetic seed {DEMO_SEED}, scene {DEMO_SCENE})")
    for phrase, count in phrases:
        print(f"  {phrase!r}: {count} true instance(s)")
    if not os.environ.get(CHECKPOINT_ENV) and not embedded_weights().is_file():
        print(
            "\nNo model to run: this build does not ship the embedded model's weights yet.\n"
            f"  Set {CHECKPOINT_ENV}=/path/to/sam3.pt (download sam3.pt from https://huggingface.co/facebook/sam3\n"
            "  after accepting its licence) or a checkpoint trained with `opensam3 train --config embedded`,\n"
            "  then run `make demo` again.")
        return 0
    args = ["segment", str(image_path), "--out", str(OUT_DIR), "--quiet", "--overlay-per-prompt"]
    for phrase, _ in phrases:
        args += ["--text", phrase]
    return cli_main(args)


if __name__ == "__main__":
    sys.exit(main())
