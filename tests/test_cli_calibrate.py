"""`opensam3 calibrate`: fit the score offsets on a calibration split and write the model with them."""

from __future__ import annotations

import re

import pytest
import torch
from safetensors import safe_open

import opensam3
from opensam3.api import embedded_weights
from opensam3.cli import main as cli_main
from opensam3.synth import write_image_dataset
from opensam3.train.calibrate import presence_bias

pytestmark = pytest.mark.skipif(not embedded_weights().is_file(), reason="the embedded weights are not built")


@pytest.fixture(scope="module")
def calibration_split(tmp_path_factory):
    # the seed of the embedded recipe's calibration split: neither its training nor its held-out scenes
    return write_image_dataset(tmp_path_factory.mktemp("calib"), num_images=3, seed=2, size=224).gt_path


def test_calibrate_writes_the_model_with_the_offsets_it_reports(calibration_split, tmp_path, capsys):
    source = tmp_path / "start.safetensors"
    start = opensam3.load("embedded")
    with torch.no_grad():
        presence_bias(start.model).sub_(4.0)  # a model whose presence is far too low
    start.save(source)
    out = tmp_path / "calibrated.safetensors"
    assert cli_main(["calibrate", str(source), "--gt", str(calibration_split), "--out", str(out),
                     "--dtype", "float16"]) == 0
    printed = capsys.readouterr().out
    found = re.search(r"presence offset ([+-][\d.]+), query-logit offset ([+-][\d.]+): cgF1 ([\d.]+)", printed)
    assert found, printed
    offset, query_offset = float(found[1]), float(found[2])
    assert offset > 0  # it moves the presence back up
    calibrated = opensam3.load(out)
    shifted = presence_bias(calibrated.model) - presence_bias(start.model)
    assert torch.allclose(shifted, torch.tensor([offset]), atol=2e-3)  # float16 storage
    assert calibrated.model.config.query_logit_offset == pytest.approx(start.model.config.query_logit_offset
                                                                      + query_offset)
    # the click / box head and the video memory travel with it
    assert calibrated.tracker is not None and calibrated.memory is not None
    with safe_open(str(out), framework="pt") as handle:
        assert {handle.get_tensor(k).dtype for k in handle.keys() if handle.get_tensor(k).is_floating_point()} \
            == {torch.float16}


def test_calibrate_refuses_to_overwrite_its_input_and_names_a_missing_split(calibration_split, tmp_path, capsys):
    source = tmp_path / "model.safetensors"
    opensam3.load("embedded").save(source)
    before = source.read_bytes()
    assert cli_main(["calibrate", str(source), "--gt", str(calibration_split), "--out", str(source)]) == 2
    assert "is the checkpoint being calibrated" in capsys.readouterr().err
    assert source.read_bytes() == before
    missing = tmp_path / "nowhere.json"
    assert cli_main(["calibrate", str(source), "--gt", str(missing), "--out", str(tmp_path / "o.safetensors")]) == 2
    assert str(missing) in capsys.readouterr().err
    assert not (tmp_path / "o.safetensors").exists()
    # the evaluator's own input errors reach the user as one line too
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    assert cli_main(["calibrate", str(source), "--gt", str(broken), "--out", str(tmp_path / "o.safetensors")]) == 2
    assert "broken.json" in capsys.readouterr().err and not (tmp_path / "o.safetensors").exists()
