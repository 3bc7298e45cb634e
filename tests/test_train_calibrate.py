"""Score calibration (train/calibrate.py): the offsets' re-scoring is exactly what the shifted
model predicts, the trainer applies them to the exported model only, and a split is required."""

from __future__ import annotations

import json

import pytest
import torch
from test_train_smoke import MICRO, make_dataset, trainer

from opensam3.api import Sam3, build_model, load
from opensam3.errors import InvalidInputError
from opensam3.eval.image_eval import evaluate_image_cgf1
from opensam3.eval.predict import predict_dataset
from opensam3.train.calibrate import calibrate_presence, presence_bias
from opensam3.train.data import find_split
from opensam3.train.trainer import MODEL_FILE, STATE_FILE


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("calib_shapes"), num_images=8)


def test_rescored_predictions_are_what_the_shifted_model_predicts(data):
    torch.manual_seed(1)
    model = build_model(MICRO).eval()
    before = presence_bias(model).detach().clone()
    result = calibrate_presence(model, data / "val.json", data / "images", offsets=(2.5,))
    assert result.offset == 2.5
    assert torch.allclose(presence_bias(model), before + 2.5)
    predictions = predict_dataset(Sam3(model, confidence_threshold=0.5), data / "val.json", data / "images")
    assert predictions, "the shifted random model should keep some queries, or the check proves nothing"
    raw = evaluate_image_cgf1([data / "val.json"], predictions, iou_type="segm")
    assert raw["cgF1_eval_segm_IL_MCC"] == pytest.approx(result.metrics["IL_MCC"], abs=1e-9)
    assert raw["cgF1_eval_segm_positive_micro_F1"] == pytest.approx(result.metrics["pmF1"], abs=1e-9)


def test_best_offset_maximises_cgf1_and_no_apply_leaves_the_model(data):
    torch.manual_seed(2)
    model = build_model(MICRO)
    before = presence_bias(model).detach().clone()
    result = calibrate_presence(model, data / "val.json", data / "images", offsets=(-2.0, 0.0, 2.0, 4.0), apply=False)
    assert torch.equal(presence_bias(model), before)
    best = max(m["cgF1"] for m in result.by_offset.values())
    assert result.metrics["cgF1"] == best and result.by_offset[result.offset, 0.0] == result.metrics


def test_query_offset_rescoring_is_what_the_shifted_model_predicts(data):
    torch.manual_seed(3)
    model = build_model(MICRO).eval()
    before = Sam3(model, confidence_threshold=0.5)
    unshifted = predict_dataset(before, data / "val.json", data / "images")
    result = calibrate_presence(model, data / "val.json", data / "images", offsets=(1.0,), query_offsets=(2.0,))
    assert (result.offset, result.query_offset) == (1.0, 2.0)
    assert model.config.query_logit_offset == 2.0 and MICRO.query_logit_offset == 0.0
    predictions = predict_dataset(Sam3(model, confidence_threshold=0.5), data / "val.json", data / "images")
    assert len(predictions) > len(unshifted), "the shift should let more queries through, or this proves nothing"
    raw = evaluate_image_cgf1([data / "val.json"], predictions, iou_type="segm")
    assert raw["cgF1_eval_segm_IL_MCC"] == pytest.approx(result.metrics["IL_MCC"], abs=1e-9)
    assert raw["cgF1_eval_segm_positive_micro_F1"] == pytest.approx(result.metrics["pmF1"], abs=1e-9)


def test_trainer_calibrates_the_export_and_keeps_train_state_uncalibrated(data, tmp_path):
    run = trainer(tmp_path, data, steps=2, calibrate=True, calibration=str(data / "val.json"))
    run.run()
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    calibration = next(r["calibration"] for r in records if "calibration" in r)
    saved = torch.load(tmp_path / STATE_FILE, weights_only=True)
    key = "transformer.decoder.presence_token_head.layers.2.bias"
    exported = load(tmp_path / MODEL_FILE).model
    assert torch.allclose(presence_bias(exported).detach(), saved["model"][key] + calibration["offset"])
    assert exported.config.query_logit_offset == calibration["query_offset"]
    assert saved["config"]["query_logit_offset"] == 0.0


def test_calibration_needs_its_own_split(data, tmp_path):
    with pytest.raises(InvalidInputError, match="calib"):
        trainer(tmp_path, data, calibrate=True)
    with pytest.raises(InvalidInputError, match="not found"):
        trainer(tmp_path, data, calibrate=True, calibration=str(tmp_path / "missing.json"))


def test_embedded_data_has_a_calibration_split(tmp_path):
    from opensam3.train.synthdata import prepare_synthetic_data

    root = prepare_synthetic_data(tmp_path, 128, train_images=2, val_images=1, calib_images=1, progress=False)
    calib, val = find_split(root, "calib"), find_split(root, "val")
    assert calib is not None and calib.parent.name == "calib" and val.parent.name == "val"
