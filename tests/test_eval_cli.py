"""CLI functions for `opensam3 eval` / `opensam3 predict-dataset`, end to end with a fake model."""

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from opensam3.eval.cli import add_eval_parser, add_predict_dataset_parser, run_eval, run_predict_dataset

FIXTURES = Path(__file__).parent / "fixtures" / "eval"


def parse(argv):
    parser = argparse.ArgumentParser()
    subparsers = parser.add_subparsers()
    add_eval_parser(subparsers)
    add_predict_dataset_parser(subparsers)
    return parser.parse_args(argv)


def test_eval_oracle_from_files(tmp_path, capsys):
    data = json.loads((FIXTURES / "image_random.json").read_text())
    gts = []
    for i, gt in enumerate(data["ground_truths"]):
        gts += ["--gt", str(tmp_path / f"gt{i}.json")]
        (tmp_path / f"gt{i}.json").write_text(json.dumps(gt))
    (tmp_path / "pred.json").write_text(json.dumps(data["predictions"]))
    args = parse(["eval", *gts, "--pred", str(tmp_path / "pred.json"), "--out", str(tmp_path / "res.json")])
    assert args.func(args) == 0
    results = json.loads((tmp_path / "res.json").read_text())
    assert results["cgF1_eval_segm_cgF1"] == pytest.approx(data["official"]["cgf1_oracle_segm"]["cgF1_eval_segm_cgF1"], abs=1e-9)
    assert "cgF1_eval_segm_cgF1" in capsys.readouterr().out


def test_eval_bad_input_returns_error_code(tmp_path, capsys):
    args = parse(["eval", "--gt", str(tmp_path / "nope.json"), "--pred", str(tmp_path / "p.json")])
    assert run_eval(args) == 2
    assert "not found" in capsys.readouterr().err


class FakeModel:
    """Same interface as opensam3.load(...): set_image, then segment(state, text=[...]) -> Segmentations."""

    def __init__(self):
        self.calls = []

    def set_image(self, image):
        return image

    def segment(self, state, text):
        from opensam3.predictor.results import Segmentation

        self.calls.append(list(text))
        w, h = state.size
        results = []
        for phrase in text:
            if phrase == "nothing":
                results.append(Segmentation(torch.zeros(0, h, w, dtype=torch.bool), torch.zeros(0, 4), torch.zeros(0), 0.1))
                continue
            mask = torch.zeros(1, h, w, dtype=torch.bool)
            mask[0, 2:6, 1:5] = True
            results.append(Segmentation(mask, torch.tensor([[1.0, 2.0, 5.0, 6.0]]), torch.tensor([0.8]), 0.9))
        return results


def test_predict_dataset_then_eval_end_to_end(tmp_path):
    from opensam3.data import rle

    Image.fromarray(np.zeros((8, 10, 3), np.uint8)).save(tmp_path / "a.jpg")
    truth = np.zeros((8, 10), bool); truth[2:6, 1:5] = True
    gt = {"images": [{"id": 1, "file_name": "a.jpg", "text_input": "square", "height": 8, "width": 10,
                      "is_instance_exhaustive": 1},
                     {"id": 2, "file_name": "a.jpg", "text_input": "nothing", "height": 8, "width": 10,
                      "is_instance_exhaustive": 1}],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "segmentation": rle.encode(truth),
                           "bbox": [1, 2, 4, 4], "area": 16, "iscrowd": 0}],
          "categories": [{"id": 1, "name": "object"}]}
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    model = FakeModel()
    args = parse(["predict-dataset", "--gt", str(tmp_path / "gt.json"), "--images", str(tmp_path),
                  "--out", str(tmp_path / "pred.json")])
    assert run_predict_dataset(args, model=model) == 0
    assert model.calls == [["square", "nothing"]]  # one image encoding, one batch of phrases
    preds = json.loads((tmp_path / "pred.json").read_text())
    assert len(preds) == 1 and preds[0]["bbox"] == [1.0, 2.0, 4.0, 4.0] and preds[0]["image_id"] == 1
    args = parse(["eval", "--gt", str(tmp_path / "gt.json"), "--pred", str(tmp_path / "pred.json"),
                  "--out", str(tmp_path / "res.json")])
    assert run_eval(args) == 0
    results = json.loads((tmp_path / "res.json").read_text())
    assert results["cgF1_eval_segm_IL_MCC"] == pytest.approx(1.0, abs=1e-5)   # one TP pair, one TN pair
    assert results["cgF1_eval_segm_cgF1"] == pytest.approx(1.0, abs=1e-3)


def test_predict_dataset_missing_image_is_reported(tmp_path, capsys):
    gt = {"images": [{"id": 1, "file_name": "missing.jpg", "text_input": "x"}], "categories": [{"id": 1}]}
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    args = parse(["predict-dataset", "--gt", str(tmp_path / "gt.json"), "--images", str(tmp_path),
                  "--out", str(tmp_path / "p.json")])
    assert run_predict_dataset(args, model=FakeModel()) == 2
    assert "missing.jpg" in capsys.readouterr().err


def test_predict_dataset_with_a_real_model(tmp_path, tiny_sam):
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(tmp_path / "b.png")
    gt = {"images": [{"id": 7, "file_name": "b.png", "text_input": "a dog", "height": 40, "width": 50},
                     {"id": 8, "file_name": "b.png", "text_input": "a cat", "height": 40, "width": 50}],
          "annotations": [], "categories": [{"id": 1, "name": "object"}]}
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    args = parse(["predict-dataset", "--gt", str(tmp_path / "gt.json"), "--images", str(tmp_path),
                  "--out", str(tmp_path / "pred.json")])
    assert run_predict_dataset(args, model=tiny_sam) == 0
    preds = json.loads((tmp_path / "pred.json").read_text())
    per_pair = {7: 0, 8: 0}
    for p in preds:
        per_pair[p["image_id"]] += 1
        assert p["segmentation"]["size"] == [40, 50] and 0.0 <= p["score"] <= 1.0
    # tiny_sam keeps every query (threshold 0): one prediction per query per phrase
    assert per_pair == {7: 20, 8: 20}


def test_predict_dataset_loads_the_checkpoint_in_the_dtype_asked(tmp_path, tiny_checkpoint, capsys, monkeypatch):
    """--checkpoint / --dtype load the model like `opensam3 segment` (bfloat16 predictions)."""
    import opensam3.cli as cli

    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(tmp_path / "b.png")
    gt = {"images": [{"id": 7, "file_name": "b.png", "text_input": "a dog", "height": 40, "width": 50}],
          "annotations": [], "categories": [{"id": 1, "name": "object"}]}
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    loaded, real = [], cli._load_model

    def spy(args):
        model = real(args)
        loaded.append(next(model.model.parameters()).dtype)
        return model

    monkeypatch.setattr(cli, "_load_model", spy)
    args = parse(["predict-dataset", "--gt", str(tmp_path / "gt.json"), "--images", str(tmp_path),
                  "--out", str(tmp_path / "pred.json"), "--checkpoint", str(tiny_checkpoint), "--dtype", "bfloat16"])
    assert run_predict_dataset(args) == 0
    assert loaded == [torch.bfloat16]
    assert "wrote" in capsys.readouterr().out and (tmp_path / "pred.json").is_file()
