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


def test_demo_renders_a_scene_and_segments_its_phrases(tmp_path, monkeypatch, capsys, tiny_checkpoint):
    from opensam3 import demo

    monkeypatch.setenv("OPENSAM3_CHECKPOINT", str(tiny_checkpoint))
    monkeypatch.setattr(demo, "OUT_DIR", tmp_path / "demo_out")
    assert demo.main() == 0
    out = capsys.readouterr().out
    written = sorted(p.name for p in (tmp_path / "demo_out").glob("*"))
    # the scene, the combined overlay + JSON, and one overlay per phrase (general, specific, negative)
    assert "scene.png" in written and "scene.json" in written
    assert sum(name.startswith("scene_") and name.endswith(".png") for name in written) == 3, written
    for phrase in ("'star'", "'small striped red star'", "'pink star'"):
        assert phrase in out


def test_demo_without_any_model_explains_what_to_do(tmp_path, monkeypatch, capsys):
    from opensam3 import demo

    monkeypatch.delenv("OPENSAM3_CHECKPOINT", raising=False)
    monkeypatch.setattr(demo, "embedded_weights", lambda: tmp_path / "missing.safetensors")
    monkeypatch.setattr(demo, "OUT_DIR", tmp_path / "demo_out")
    assert demo.main() == 0
    assert "OPENSAM3_CHECKPOINT" in capsys.readouterr().out
    assert (tmp_path / "demo_out" / "scene.png").is_file()
