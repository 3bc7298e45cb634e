"""``make demo``: segment a bundled sample image with the checkpoint in $OPENSAM3_CHECKPOINT.

Until the embedded default model ships, a checkpoint is needed; without one this prints how
to get it and exits cleanly.
"""

from __future__ import annotations

import os
import sys
from importlib import resources

from .api import CHECKPOINT_ENV
from .cli import main as cli_main

SAMPLE = "sample.png"
PHRASES = ("a red circle", "a blue square")


def main() -> int:
    checkpoint = os.environ.get(CHECKPOINT_ENV)
    if not checkpoint:
        print(
            "opensam3 demo: no checkpoint yet.\n"
            f"  Set {CHECKPOINT_ENV}=/path/to/sam3.pt (download sam3.pt from https://huggingface.co/facebook/sam3\n"
            "  after accepting its licence), then run `make demo` again. It segments a sample image\n"
            f"  with the phrases {', '.join(repr(p) for p in PHRASES)} and writes overlays to demo_out/.",
        )
        return 0
    sample = resources.files("opensam3") / "assets" / SAMPLE
    with resources.as_file(sample) as path:
        args = ["segment", str(path), "--out", "demo_out", "--checkpoint", checkpoint]
        for phrase in PHRASES:
            args += ["--text", phrase]
        return cli_main(args)


if __name__ == "__main__":
    sys.exit(main())
