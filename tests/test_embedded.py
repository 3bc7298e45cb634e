"""The embedded default model: shipped inside the package, loaded when no checkpoint is given,
and measured on held-out synthetic scenes and clips, so that a regression anywhere in the model
code (vision, text, fusion, decoder, masks, post-processing, calibration, the tracker heads and
its video memory) fails here."""

import itertools
import json

import numpy as np
import pytest
import torch

import opensam3
from opensam3.api import embedded_weights
from opensam3.data import rle
from opensam3.eval.image_eval import evaluate_image_cgf1
from opensam3.eval.predict import predict_dataset
from opensam3.synth import scene_stream, write_image_dataset

# The detector comes from `opensam3 train --config embedded` (the run of 2026-11-30), the tracker
# heads and memory from `train-interactive` and `train-memory` on top of it (README). They do not
# meet issue 5's bar yet (held-out cgF1 50, IL_MCC 0.80, pmF1 0.60); the thresholds below sit
# under what they measure, so they catch regressions anywhere in the model code.
pytestmark = pytest.mark.skipif(not embedded_weights().is_file(),
                                reason="embedded weights missing (opensam3/assets/embedded.safetensors)")

HELD_OUT_SEED = 11  # the embedded model trained on seed 0 and was validated on seed 1
MAX_FILE_BYTES = 40 * 1024 * 1024


@pytest.fixture(scope="module")
def embedded(monkeypatch_module):
    monkeypatch_module.delenv("OPENSAM3_CHECKPOINT", raising=False)
    return opensam3.load()  # no checkpoint, no environment: the embedded model


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def test_shipped_weights_are_small_and_load_by_default(embedded):
    path = embedded_weights()
    assert path.is_file(), f"{path} must ship with the package"
    assert path.stat().st_size <= MAX_FILE_BYTES
    assert embedded.model.config.name == "embedded"
    assert opensam3.load("embedded").model.config == embedded.model.config


def test_held_out_quality(embedded, tmp_path):
    # 8 unseen scenes, 64 image-phrase pairs (3 of 8 negative). The shipped weights measure
    # cgF1 41.9, IL_MCC 0.663, pmF1 0.633 here with the embedded config's mask refinement, pmF1
    # 0.595 without (2026-12-02; 57.6 / 0.808 / 0.713 on 1200 pairs of seed 1). 64 pairs are a
    # noisy sample: earlier shipped models measured 40.1 / 0.627 / 0.640, 41.1 / 0.627 / 0.656,
    # 35.4 / 0.527 / 0.672 and 37.1 / 0.592 / 0.627 here with 55.1 / 0.779 / 0.707,
    # 53.1 / 0.761 / 0.697, 51.2 / 0.739 / 0.693 and 45.2 / 0.675 / 0.669 on those 1200 pairs, so
    # the floors guard against breakage, not drift.
    summary = write_image_dataset(tmp_path, num_images=8, seed=HELD_OUT_SEED, size=embedded.model.config.image_size)
    assert summary.pairs >= 60 and summary.negative_ratio >= 0.3
    assert embedded.refine_masks
    predictions = predict_dataset(embedded, summary.gt_path, summary.media_dir)
    metrics = evaluate_image_cgf1([summary.gt_path], predictions, iou_type="segm")
    # the evaluator reports pmF1 x IL_MCC on a 0-1 scale, as the official one; papers quote x100
    cgf1, il_mcc = 100 * metrics["cgF1_eval_segm_cgF1"], metrics["cgF1_eval_segm_IL_MCC"]
    assert cgf1 >= 33.0, json.dumps(metrics, indent=1)
    assert il_mcc >= 0.50, json.dumps(metrics, indent=1)
    assert metrics["cgF1_eval_segm_positive_micro_F1"] >= 0.60, json.dumps(metrics, indent=1)
    # the detector's own masks are coarser: refinement from the boxes is what lifts pmF1
    plain = opensam3.load(refine_masks=False)
    unrefined = evaluate_image_cgf1([summary.gt_path], predict_dataset(plain, summary.gt_path, summary.media_dir),
                                    iou_type="segm")
    assert (metrics["cgF1_eval_segm_positive_micro_F1"]
            >= unrefined["cgF1_eval_segm_positive_micro_F1"] + 0.03), (metrics, unrefined)


def _best_mask_on_a_true_instance(result, pair) -> bool:
    if len(result) == 0:
        return False
    best = result.masks[0].numpy()
    return max((best & m).sum() / max((best | m).sum(), 1) for m in pair.masks) >= 0.5


def test_masks_sit_on_the_named_objects(embedded):
    # every positive phrase of six held-out scenes: the best detection overlaps a true instance
    # (IoU >= 0.5) for 25 of their 30 phrases with the shipped weights (2026-12-01)
    size = embedded.model.config.image_size
    hits = total = 0
    for scene in itertools.islice(scene_stream(seed=HELD_OUT_SEED, size=size, start=3), 6):
        pairs = [p for p in scene.pairs() if not p.is_negative]
        results = embedded.segment(scene.image, text=[p.phrase for p in pairs])
        hits += sum(_best_mask_on_a_true_instance(r, p) for r, p in zip(results, pairs))
        total += len(pairs)
    assert total >= 25 and hits >= 0.65 * total, f"{hits} of {total} phrases found on a true instance"


def test_same_prompt_same_output(embedded):
    scene = next(scene_stream(seed=HELD_OUT_SEED, size=embedded.model.config.image_size, start=5))
    phrase = scene.pairs()[0].phrase
    first = embedded.segment(scene.image, text=phrase)
    second = embedded.segment(scene.image, text=phrase)
    assert torch.equal(first.scores, second.scores)
    assert torch.equal(first.boxes, second.boxes)
    assert np.array_equal(first.masks.numpy(), second.masks.numpy())


def test_demo_writes_overlays_for_its_phrases(tmp_path, monkeypatch, capsys):
    from opensam3 import demo

    monkeypatch.delenv("OPENSAM3_CHECKPOINT", raising=False)
    monkeypatch.setattr(demo, "OUT_DIR", tmp_path / "demo_out")
    assert demo.main() == 0
    out = capsys.readouterr().out
    written = sorted(p.name for p in (tmp_path / "demo_out").glob("*"))
    assert "scene.json" in written and "scene.png" in written
    assert sum(name.startswith("scene_") and name.endswith(".png") for name in written) == 3
    detections = json.loads((tmp_path / "demo_out" / "scene.json").read_text())["detections"]
    scene = next(scene_stream(seed=demo.DEMO_SEED, size=demo.IMAGE_SIZE, start=demo.DEMO_SCENE))
    phrases = demo.demo_phrases(scene.pairs())
    found = {phrase: sum(d["prompt"] == phrase for d in detections) for phrase, _ in phrases}
    (general, n_general), (specific, n_specific), (negative, _) = phrases
    assert found[negative] == 0 and 1 <= found[general] <= n_general and 1 <= found[specific] <= n_specific, \
        (found, out)
    # the top detection of each positive phrase sits on one of its true instances
    truths = {pair.phrase: pair for pair in scene.pairs()}
    for phrase in (general, specific):
        best = max((d for d in detections if d["prompt"] == phrase), key=lambda d: d["score"])
        mask = rle.decode(best["segmentation"]).astype(bool)
        assert max((mask & m).sum() / (mask | m).sum() for m in truths[phrase].masks) >= 0.5, phrase


# ---- points and boxes (the tracker heads shipped with the embedded model) --------------------
def test_clicks_and_boxes_on_held_out_objects(embedded):
    # one click at each object's most interior point (best of three masks by predicted IoU) and
    # its tight box, on the 62 objects of 12 held-out scenes, shipped weights (2026-12-02; issue 6
    # asks 80% / 85%, met on 200 scenes: 81.9% / 86.3%). IoU >= 0.8 for clicks / >= 0.85 for
    # boxes: as configured 77.4% / 85.5%; without the zoom, without the box clip: see the asserts
    # (2026-11-30 weights, all three off: 69.4% / 67.7%)
    from opensam3.train.interactive_eval import evaluate_interactive

    config = embedded.model.config
    assert (config.interactive_zoom, config.interactive_feedback, config.interactive_box_clip) == (3.0, True, True)
    predictor = embedded.interactive
    configured = evaluate_interactive(embedded, num_scenes=12)
    no_zoom = evaluate_interactive(embedded, num_scenes=12, zoom=False)
    try:
        predictor.box_clip = False
        no_clip = evaluate_interactive(embedded, num_scenes=12)
    finally:
        predictor.box_clip = True
    assert configured["objects"] >= 40
    assert configured["point_success"] >= 0.74, configured
    assert configured["box_success"] >= 0.77, configured
    # the second look is what lifts the small objects
    assert configured["point_success"] >= no_zoom["point_success"] + 0.05, (configured, no_zoom)
    assert configured["box_success"] >= no_zoom["box_success"] + 0.08, (configured, no_zoom)
    # keeping box masks in their boxes loses none
    assert configured["box_success"] >= no_clip["box_success"], (configured, no_clip)


def test_click_feedback_helps_on_the_scenes_it_was_chosen_on(embedded):
    # feeding each click's answer back is a small average gain (2026-12-02, shipped weights: 85.5%
    # against 83.2% on the 80 scenes of seed 12345 it was chosen on; 81.9% against 80.9% on the
    # 200 held-out scenes), too small for 12 scenes to show (there: 77.4% against 79.0%)
    from opensam3.train.interactive_eval import evaluate_interactive

    predictor = embedded.interactive
    configured = evaluate_interactive(embedded, seed=12345, num_scenes=80)
    try:
        predictor.feedback = False
        no_feedback = evaluate_interactive(embedded, seed=12345, num_scenes=80)
    finally:
        predictor.feedback = True
    assert configured["point_success"] >= no_feedback["point_success"] + 0.015, (configured, no_feedback)
    assert configured["box_success"] == no_feedback["box_success"]  # feedback is for clicks only


def _neighbour_cases(embedded, scenes: int):
    """(scene, state, target, neighbour, click, result) where one click on the target gives a mask
    covering at least half of another object."""
    from opensam3.train.interactive_prompts import farthest_interior_point

    size = embedded.model.config.image_size
    for scene in itertools.islice(scene_stream(seed=HELD_OUT_SEED, size=size), scenes):
        if not len(scene.objects):
            continue
        state = embedded.set_image(scene.image)
        for i, target in enumerate(scene.masks):
            click = farthest_interior_point(target)
            result = embedded.predict(state, points=[click], point_labels=[1])
            best = int(result.iou_scores.argmax())
            mask = result.masks[best].numpy()
            for j, other in enumerate(scene.masks):
                if j != i and other.sum() >= 30 and (mask & other).sum() >= 0.5 * other.sum():
                    yield state, target, other, click, result, best


def test_a_negative_click_shrinks_a_wrongly_included_neighbour(embedded):
    # In 30 held-out scenes one click's mask covers half or more of another object 23 times; a
    # negative click inside that neighbour (the earlier logits fed back) lowers its mean coverage
    # from 0.89 to 0.48 and removes it (to a fifth or less) 7 times (2026-11-30).
    from opensam3.train.interactive_prompts import farthest_interior_point

    cases = removed = 0
    coverage_before = coverage_after = 0.0
    for state, target, neighbour, click, first, best in _neighbour_cases(embedded, scenes=30):
        negative = farthest_interior_point(neighbour & ~target)
        fixed = embedded.predict(state, points=[click, negative], point_labels=[1, 0],
                                 mask_input=first.low_res_logits[best][None], multimask_output=False)
        before = (first.masks[best].numpy() & neighbour).sum() / neighbour.sum()
        after = (fixed.masks[0].numpy() & neighbour).sum() / neighbour.sum()
        cases += 1
        removed += after <= 0.2 * before
        coverage_before += before
        coverage_after += after
    assert cases >= 15, f"only {cases} wrongly included neighbours in 30 scenes"
    assert coverage_after <= 0.7 * coverage_before, (coverage_before / cases, coverage_after / cases)
    assert removed >= 5, f"the negative click removed the neighbour in {removed} of {cases} cases"


# ---- video: the memory shipped with the embedded model ---------------------------------------
def test_tracks_objects_through_held_out_clips(embedded):
    # every object visible on frame 0 of 4 unseen clips, prompted with its mask or one click and
    # propagated: mean J 0.766 / 0.774 and J >= 0.5 on 86% / 87% of 270 object-frames with the
    # shipped weights (2026-12-01). The object that passes fully behind the occluder is mostly
    # not re-found yet (J 0.15 / 0.16 after it on 20 clips).
    from opensam3.train.memory import evaluate_tracking

    for prompt in ("mask", "click"):
        metrics = evaluate_tracking(embedded, num_clips=4, prompt=prompt)
        assert metrics["object_frames"] >= 200
        assert metrics["mean_j"] >= 0.75 and metrics["j_at_least_0.5"] >= 0.83, (prompt, metrics)
