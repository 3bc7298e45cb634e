"""`opensam3 segment` end to end with a tiny checkpoint."""

import json

import numpy as np
from PIL import Image

from opensam3.cli import main as cli_main
from opensam3.data.rle import decode as decode_mask


def test_segment_writes_overlay_and_rle_per_image(tmp_path, capsys, tiny_checkpoint):
    images = []
    for i in range(2):
        path = tmp_path / f"scene{i}.png"
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (60, 80, 3), dtype=np.uint8)).save(path)
        images.append(str(path))
    out = tmp_path / "out"
    code = cli_main(["segment", *images, "--text", "a red dog", "--text", "a cat",
                     "--box", "0.5,0.5,0.4,0.4", "--box", "0.2,0.2,0.2,0.2:neg",
                     "--checkpoint", str(tiny_checkpoint), "--threshold", "0.0", "--out", str(out), "--quiet"])
    assert code == 0
    stdout = capsys.readouterr().out
    assert "scene0.png" in stdout and "a cat" in stdout and "found" in stdout
    for i in range(2):
        picture = Image.open(out / f"scene{i}.png")
        assert picture.size == (80, 60)
        record = json.loads((out / f"scene{i}.json").read_text())
        assert (record["height"], record["width"]) == (60, 80)
        prompts = {d["prompt"] for d in record["detections"]}
        assert prompts == {"a red dog", "a cat"}
        mask = decode_mask(record["detections"][0]["segmentation"])
        assert mask.shape == (60, 80)
