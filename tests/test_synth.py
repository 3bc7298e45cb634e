"""The synthetic concept world: scenes, phrases, clips, the SA-Co JSON it writes, the CLI."""

import argparse
import json
from collections import Counter

import numpy as np
import pytest

from opensam3.data import rle
from opensam3.eval import evaluate_images, evaluate_videos
from opensam3.synth import (
    COLORS, PATTERNS, SHAPES, SIZES, ClipConfig, SceneConfig, SynthConfigError, clip_stream, generate_clip,
    generate_scene, scene_stream, write_image_dataset, write_video_dataset,
)
from opensam3.synth.cli import add_synth_parser
from opensam3.synth.render import place

SIZE = 160  # small images keep the suite fast; the world scales with the image side


@pytest.fixture(scope="module")
def scenes():
    rng = np.random.default_rng(123)
    return [generate_scene(rng, SIZE) for _ in range(40)]


@pytest.fixture(scope="module")
def clips():
    return [generate_clip(np.random.default_rng([7, k]), SIZE, ClipConfig(num_frames=12)) for k in range(3)]


@pytest.fixture(scope="module")
def image_dataset(tmp_path_factory):
    return write_image_dataset(tmp_path_factory.mktemp("synth_images"), 8, seed=3, size=SIZE)


@pytest.fixture(scope="module")
def video_dataset(tmp_path_factory):
    return write_video_dataset(tmp_path_factory.mktemp("synth_videos"), 2, seed=3, size=SIZE, num_frames=8)


def matches_by_words(phrase: str, attributes: dict) -> bool:
    """Independent re-derivation: the last word is the shape, every other word is an attribute
    value the object must have (the vocabularies of size, pattern and colour are disjoint)."""
    *words, shape = phrase.split()
    return attributes["shape"] == shape and all(w in attributes.values() for w in words)


def test_vocabulary_is_large_enough():
    assert len(SHAPES) >= 8 and len(COLORS) >= 8 and len(SIZES) == 3 and set(PATTERNS) == {"solid", "striped", "dotted"}
    words = [*COLORS, *SIZES, *PATTERNS]
    assert len(words) == len(set(words)) and not set(words) & set(SHAPES)


def test_scene_masks_are_visible_parts_of_each_object(scenes):
    for scene in scenes:
        assert scene.image.shape == (SIZE, SIZE, 3) and scene.image.dtype == np.uint8
        assert len(scene.objects) >= 1
        # Visible masks never overlap and each keeps at least half of its object.
        assert scene.masks.sum(axis=0).max() <= 1
        for obj, mask, box in zip(scene.objects, scene.masks, scene.boxes):
            raster = place(obj).raster
            full = np.zeros((SIZE + 2 * 100, SIZE + 2 * 100), dtype=bool)  # room for parts outside
            h, w = raster.mask.shape
            full[raster.top + 100:raster.top + 100 + h, raster.left + 100:raster.left + 100 + w] = raster.mask
            inside = full[100:100 + SIZE, 100:100 + SIZE]
            assert not (mask & ~inside).any(), "a mask reaches outside its own object"
            assert mask.sum() >= 0.5 * raster.mask.sum()
            ys, xs = np.nonzero(mask)
            assert list(box) == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


def test_positive_pairs_are_exhaustive_and_negatives_empty(scenes):
    for scene in scenes:
        for pair in scene.pairs():
            expected = [o.object_id for o in scene.objects if matches_by_words(pair.phrase, o.attributes())]
            assert list(pair.object_ids) == expected, pair.phrase
            assert pair.is_negative == (not expected)
            index = [next(i for i, o in enumerate(scene.objects) if o.object_id == oid) for oid in expected]
            assert np.array_equal(pair.masks, scene.masks[index].reshape(-1, SIZE, SIZE))
            if expected:
                assert any(np.array_equal(pair.exemplar_box, b) for b in pair.boxes)
            else:
                assert pair.exemplar_box is None and pair.masks.shape == (0, SIZE, SIZE)


def test_phrase_mix_negatives_specificities_and_kinds(scenes):
    pairs = [p for s in scenes for p in s.pairs()]
    negatives = [p for p in pairs if p.is_negative]
    assert len(negatives) / len(pairs) >= 0.3
    assert all(sum(p.is_negative for p in s.pairs()) / len(s.pairs()) >= 0.3 for s in scenes)
    assert {p.negative for p in negatives} == {"hard", "easy"}
    assert set(Counter(p.concept.specificity for p in pairs if not p.is_negative)) == {1, 2, 3, 4}
    assert all(len({p.phrase for p in s.pairs()}) == len(s.pairs()) for s in scenes)
    # A hard negative shares its shape or an attribute with something in the image.
    for scene in scenes:
        for pair in scene.pairs():
            if pair.negative == "hard":
                words = set(pair.phrase.split())
                assert any(words & set(o.attributes().values()) for o in scene.objects)


def test_same_rng_state_same_scene():
    a, b = (generate_scene(np.random.default_rng(99), SIZE) for _ in range(2))
    assert np.array_equal(a.image, b.image) and np.array_equal(a.masks, b.masks)
    assert [p.phrase for p in a.pairs()] == [p.phrase for p in b.pairs()]


def test_clip_roles_occlusion_entry_exit_and_stable_ids(clips):
    for clip in clips:
        present = clip.present()
        roles = {role: clip.object_index(oid) for oid, role in clip.roles.items()}
        assert {"passer", "occluder", "enterer", "leaver"} <= set(roles)
        frames = clip.num_frames
        assert not present[0, roles["enterer"]] and present[-1, roles["enterer"]]
        assert present[0, roles["leaver"]] and not present[-1, roles["leaver"]]
        assert not present[frames // 2, roles["passer"]]  # fully behind the occluder
        assert present[:, roles["passer"]].any()
        assert clip.masks.sum(axis=1).max() <= 1
        # Each frame's mask lies on the object drawn at that frame's track position (ids stable).
        for t in range(frames):
            for i, obj in enumerate(clip.objects):
                x, y, angle = clip.tracks[t, i]
                raster = place(obj.moved((x, y), angle)).raster
                rows, cols, crop_rows, crop_cols = raster.clipped(SIZE, SIZE)
                drawn = np.zeros((SIZE, SIZE), dtype=bool)
                drawn[rows, cols] = raster.mask[crop_rows, crop_cols]
                assert not (clip.masks[t, i] & ~drawn).any()
        for pair in clip.pairs():
            expected = [o.object_id for o in clip.objects if matches_by_words(pair.phrase, o.attributes())]
            assert list(pair.object_ids) == expected


def test_image_json_layout_and_exhaustive_annotations(image_dataset):
    gt = json.loads(image_dataset.gt_path.read_text())
    assert gt["categories"] == [{"id": 1, "name": "object"}]
    scenes = {s["file_name"]: s for s in gt["scenes"]}
    by_pair = {}
    for ann in gt["annotations"]:
        by_pair.setdefault(ann["image_id"], []).append(ann)
        assert ann["category_id"] == 1 and ann["iscrowd"] == 0
        assert all(0.0 <= v <= 1.0 for v in ann["bbox"]) and ann["area"] == rle.area(ann["segmentation"])
    for entry in gt["images"]:
        assert (image_dataset.media_dir / entry["file_name"]).is_file()
        assert entry["is_instance_exhaustive"] == 1 and entry["height"] == entry["width"] == SIZE
        objects = scenes[entry["file_name"]]["objects"]
        expected = {o["object_id"] for o in objects if matches_by_words(entry["text_input"], o)}
        anns = by_pair.get(entry["id"], [])
        assert {a["object_id"] for a in anns} == expected
        assert (entry["negative_type"] is None) == bool(expected)
        if expected:
            (exemplar,) = entry["exemplar_boxes_xyxy"]
            (ann,) = [a for a in anns if a["id"] in entry["exemplar_annotation_ids"]]
            x, y, w, h = rle.to_bbox(ann["segmentation"])
            assert exemplar == [x, y, x + w, y + h]
    assert image_dataset.negative_ratio >= 0.3


def test_streams_yield_the_written_items(image_dataset, video_dataset):
    from PIL import Image

    written = [np.asarray(Image.open(image_dataset.media_dir / f"{i:06d}.png")) for i in range(4)]
    stream = scene_stream(3, SIZE)
    assert all(np.array_equal(next(stream).image, image) for image in written)
    second_worker = scene_stream(3, SIZE, start=1, step=2)
    assert np.array_equal(next(second_worker).image, written[1]) and np.array_equal(next(second_worker).image, written[3])
    clip = next(clip_stream(3, SIZE, ClipConfig(num_frames=8)))
    first_frame = np.asarray(Image.open(video_dataset.media_dir / "synth_000000" / "00000.png"))
    assert np.array_equal(clip.frames[0], first_frame)


def test_image_ground_truth_scores_perfectly_against_itself(image_dataset):
    gt = json.loads(image_dataset.gt_path.read_text())
    predictions = [{"image_id": a["image_id"], "category_id": 1, "segmentation": a["segmentation"],
                    "bbox": a["bbox"], "score": 1.0} for a in gt["annotations"]]
    perfect = evaluate_images(image_dataset.gt_path, predictions)
    assert 100 * perfect["cgF1_eval_segm_cgF1"] == pytest.approx(100, abs=0.01)
    assert perfect["coco_eval_segm_AP"] == pytest.approx(1.0)
    assert evaluate_images(image_dataset.gt_path, [], with_map=False)["cgF1_eval_segm_cgF1"] == 0.0


def test_video_ground_truth_layout_and_self_evaluation(video_dataset):
    gt = json.loads(video_dataset.gt_path.read_text())
    assert {v["length"] for v in gt["videos"]} == {8}
    for video in gt["videos"]:
        assert all((video_dataset.media_dir / name).is_file() for name in video["file_names"])
    names = {c["id"]: c["name"] for c in gt["categories"]}
    counts = Counter((m["video_id"], m["category_id"]) for m in gt["annotations"])
    for pair in gt["video_np_pairs"]:
        assert names[pair["category_id"]] == pair["noun_phrase"]
        assert counts.get((pair["video_id"], pair["category_id"]), 0) == pair["num_masklets"]
    assert any(p["num_masklets"] == 0 for p in gt["video_np_pairs"])
    for masklet in gt["annotations"]:
        assert len(masklet["segmentations"]) == 8
        assert any(s is not None for s in masklet["segmentations"])
        for seg, box in zip(masklet["segmentations"], masklet["bboxes"]):
            assert (seg is None) == (box is None) and (seg is None or rle.to_bbox(seg) == box)
    predictions = [{"video_id": m["video_id"], "category_id": m["category_id"], "segmentations": m["segmentations"],
                    "bboxes": m["bboxes"], "score": 1.0} for m in gt["annotations"]]
    perfect = evaluate_videos(video_dataset.gt_path, predictions)["dataset_results"]
    assert 100 * perfect["video_mask_demo_cgf1_micro_50_95"] == pytest.approx(100, abs=0.01)
    assert perfect["video_mask_all_phrase_HOTA"] == pytest.approx(1.0)
    empty = evaluate_videos(video_dataset.gt_path, [], iou_types=("segm",))["dataset_results"]
    assert empty["video_mask_demo_cgf1_micro_50_95"] == 0.0


def test_same_seed_writes_identical_files(tmp_path):
    for folder in ("a", "b"):
        write_image_dataset(tmp_path / folder, 3, seed=11, size=SIZE)
        write_video_dataset(tmp_path / folder, 1, seed=11, size=SIZE, num_frames=5)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert len(files) == 3 + 5 + 2
    for name in files:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    other = write_image_dataset(tmp_path / "c", 3, seed=12, size=SIZE)
    assert other.gt_path.read_bytes() != (tmp_path / "a" / "synth_images.json").read_bytes()


@pytest.mark.parametrize("call, fragment", [
    (lambda: generate_scene(np.random.default_rng(0), 64), "size"),
    (lambda: generate_scene(np.random.default_rng(0), 256, SceneConfig(min_objects=5, max_objects=2)), "min_objects"),
    (lambda: generate_clip(np.random.default_rng(0), 256, ClipConfig(num_frames=2)), "num_frames"),
    (lambda: write_image_dataset("/tmp", -1), "number of images"),
    (lambda: write_video_dataset("/tmp", 1, num_frames=-3), "number of frames"),
    (lambda: write_image_dataset("/tmp", 1, seed=-5), "seed"),
    (lambda: next(scene_stream(0, 256, step=0)), "step"),
])
def test_bad_arguments_say_what_to_fix(call, fragment):
    with pytest.raises(ValueError, match=fragment):
        call()


def test_unwritable_output_folder(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(SynthConfigError, match="--out"):
        write_image_dataset(blocker / "inside", 1, size=SIZE)
    with pytest.raises(SynthConfigError, match="not a folder"):
        write_image_dataset(blocker, 1, size=SIZE)


def _cli(argv):
    parser = argparse.ArgumentParser(prog="opensam3")
    add_synth_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_writes_both_datasets_and_rejects_bad_input(tmp_path, capsys):
    out = tmp_path / "world"
    assert _cli(["synth", "--out", str(out), "--seed", "1", "--images", "2", "--size", "128",
                 "--videos", "1", "--frames", "4", "--quiet"]) == 0
    assert (out / "synth_images.json").is_file() and (out / "synth_videos.json").is_file()
    assert len(list((out / "images").glob("*.png"))) == 2
    assert "negative" in capsys.readouterr().out
    assert _cli(["synth", "--out", str(out), "--images", "1", "--size", "32", "--quiet"]) == 2
    assert "size" in capsys.readouterr().err
    assert _cli(["synth", "--out", str(out)]) == 2
    assert "--images" in capsys.readouterr().err
