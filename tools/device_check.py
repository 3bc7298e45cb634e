"""Device check: run opensam3 on one torch device and compare with the CPU fixtures in tests/fixtures.

Proves the package is device-ready (the device comes from the caller everywhere, no CPU/GPU tensor
mixing) and measures timings for the README. Every check runs on its own; a failing one is recorded
(error + traceback) and the next one runs. The JSON report is rewritten after every check.

    PYTHONPATH=. python tools/device_check.py --device cuda --out REPORT.json [--full] [--only NAME,...]

Checks: tiny_image, tiny_interactive, video_concept, video_tracker, cli, train, train_interactive,
and (with --full) full: the seeded 848M-parameter model, fp32 parity and fp32/bf16 timings.
fp32 comparisons run with TF32 off; errors are reported (and flagged against 1e-4), not asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
FIXTURES = ROOT / "tests" / "fixtures"
TOL = 1e-4  # the CPU parity tolerance
FULL_REFERENCE_BY_CPU = {"AVX512": "full_reference.safetensors", "AVX2": "full_reference_avx2.safetensors"}

sys.path.insert(0, str(ROOT / "tests"))  # the video fixtures' clip and mask unpacking, shared with the tests
import opensam3  # noqa: E402
from opensam3 import TINY, Sam3, Sam3Processor, build_model  # noqa: E402
from opensam3.seeded import apply_weight_overrides, seed_module, seeded_state_dict, seeded_value  # noqa: E402
from test_video_tracker_parity import (  # noqa: E402  (arrays: no video decoder needed)
    expected_report, make_frames, replay_steps, unpack)

Result = dict  # what a check records (JSON-serialisable); it fills it as it goes


# ---- helpers -----------------------------------------------------------------------------------
def timed(dev: torch.device, fn: Callable[[], object]) -> tuple[object, float]:
    """fn's result and its wall time (the device synchronised before and after)."""
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    out = fn()
    sync()
    return out, time.perf_counter() - start


def gpu_peak(dev: torch.device) -> float | None:
    """Peak GPU memory (GiB) since the last call, then resets the counter; None off CUDA."""
    gc.collect()
    if dev.type != "cuda":
        return None
    peak = torch.cuda.max_memory_allocated(dev) / 2**30
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(dev)
    return peak


@contextlib.contextmanager
def exact(dev: torch.device) -> Iterator[None]:
    """fp32 really in fp32 on CUDA (no TF32), restored afterwards."""
    if dev.type != "cuda":
        yield
        return
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def max_err(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    ours, theirs = torch.as_tensor(ours).detach().cpu(), torch.as_tensor(theirs).detach().cpu()
    if tuple(ours.shape) != tuple(theirs.shape):
        raise ValueError(f"shape {tuple(ours.shape)} != {tuple(theirs.shape)}")
    return float((ours.float() - theirs.float()).abs().max()) if ours.numel() else 0.0


def compare(pairs: dict[str, tuple], tol: dict[str, float] | None = None) -> dict:
    """Max abs error per name, the worst (relative to its tolerance, default 1e-4), and which exceed it."""
    errors = {name: max_err(a, b) for name, (a, b) in pairs.items()}
    tol = tol or {}
    over = [n for n, e in errors.items() if not e <= tol.get(n, TOL)]
    worst = max(errors, key=lambda n: errors[n] / tol.get(n, TOL)) if errors else None
    return {"max_abs_err": errors, "worst": worst, "worst_err": errors.get(worst, 0.0),
            "within_tol": not over, "over_tol": over}


def iou(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = torch.as_tensor(a).cpu().bool(), torch.as_tensor(b).cpu().bool()
    union = (a | b).sum().item()
    return 1.0 if union == 0 else (a & b).sum().item() / union


def read_fixture(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        return {k: handle.get_tensor(k) for k in handle.keys()}, handle.metadata()  # noqa: SIM118


def tracker_config():
    return TINY.replace(vision=dataclasses.replace(TINY.vision, tracker_neck=True))


def tiny_interactive_checkpoint(tmp: Path) -> Path:
    """The seeded tiny model with tracker neck and heads (tests/conftest.py), saved once."""
    from opensam3.model.tracker import TrackerHeads, TrackerHeadsConfig

    path = tmp / "tiny_interactive.safetensors"
    if not path.is_file():
        config = tracker_config()
        model = build_model(config)
        seed_module(model)
        heads = TrackerHeads(TrackerHeadsConfig.from_model_config(config))
        seed_module(heads, prefix="tracker.")
        Sam3(model, tracker=heads).save(path)
    return path


def video_modules(meta: dict, dev: torch.device, seed_detector: bool, use_memory_selection: bool):
    """Image model, tracker heads and memory seeded as the video fixtures' generators do, on ``dev``."""
    from opensam3.model.sam3 import Sam3ImageModel
    from opensam3.model.tracker import TrackerHeads, TrackerHeadsConfig, TrackerMemory, TrackerMemoryConfig

    config = json.loads(meta["config"])
    model_config = tracker_config()
    image_model = Sam3ImageModel(model_config).eval()
    if seed_detector:
        seed_module(image_model)
    else:
        seed_module(image_model.backbone.vision_backbone, prefix="backbone.vision_backbone.")
    heads = TrackerHeads(TrackerHeadsConfig.from_model_config(model_config)).eval()
    seed_module(heads, prefix="tracker.")
    memory = TrackerMemory(TrackerMemoryConfig(image_size=config["image_size"], attention_layers=config["attention_layers"],
                                               attention_ffn=config["attention_ffn"],
                                               use_memory_selection=use_memory_selection)).eval()
    seed_module(memory, prefix="tracker.")
    overrides = {"detector.": image_model, "tracker.": heads} if seed_detector else {"": heads}
    apply_weight_overrides(overrides, meta["weight_override"])
    return image_model.to(dev), heads.to(dev), memory.to(dev)


# ---- checks ------------------------------------------------------------------------------------
def check_tiny_image(dev: torch.device, tmp: Path, r: Result) -> None:
    """tests/test_tiny_parity.py on the device: text prompt, then two exemplar boxes."""
    tensors, meta = read_fixture(FIXTURES / "tiny_reference.safetensors")
    model = build_model(TINY, seeded_state_dict(json.loads(meta["state_dict_shapes"])), device=dev)
    processor = Sam3Processor(model, resolution=TINY.image_size, device=dev, confidence_threshold=0.0)

    def raw(state, boxes):
        text = model.encode_text([state["text_prompt"]])
        box = torch.tensor([[b["box_cxcywh_norm"] for b in boxes]], device=dev).reshape(1, len(boxes), 4)
        labels = torch.tensor([[b["label"] for b in boxes]], dtype=torch.bool, device=dev).reshape(1, len(boxes))
        with torch.inference_mode():
            return model.ground(state["image_state"].features, text, box, labels, torch.zeros_like(labels))

    with exact(dev):
        state = processor.set_image(tensors["input.image_uint8_hwc"].numpy())
        text_out = dict(processor.set_text_prompt(meta["text_prompt"], state))
        text_raw = raw(state, [])
        boxes = json.loads(meta["box_prompts"])
        for box in boxes:
            box_out = dict(processor.add_geometric_prompt(box["box_cxcywh_norm"], box["label"], state))
        box_raw = raw(state, boxes)
        text = model.encode_text([meta["text_prompt"]])
    features = state["image_state"].features
    r["features_on_device"] = all(t.device.type == dev.type for t in features.fpn + features.fpn_pos)
    r["language_mask_equal"] = torch.equal(text.language_mask.cpu(), tensors["out.text.language_mask"])
    pairs = {"backbone_fpn[-1]": (features.fpn[-1], tensors["out.backbone_fpn.last"]),
             "vision_pos_enc[-1]": (features.fpn_pos[-1], tensors["out.vision_pos_enc.last"]),
             "language_features": (text.language_features, tensors["out.text.language_features"]),
             "text.masks_prob_fp16": (text_out["masks_logits"].half(), tensors["out.text.masks_prob_fp16"]),
             "text.scores": (text_out["scores"], tensors["out.text.scores"]),
             "text.boxes_xyxy": (text_out["boxes"], tensors["out.text.boxes_xyxy"]),
             "boxes.scores": (box_out["scores"], tensors["out.boxes.scores"])}
    for prefix, out in (("text", text_raw), ("boxes", box_raw)):
        pairs.update({f"{prefix}.pred_logits": (out.logits[..., None], tensors[f"out.{prefix}.pred_logits"]),
                      f"{prefix}.pred_boxes": (out.boxes, tensors[f"out.{prefix}.pred_boxes"]),
                      f"{prefix}.pred_masks": (out.masks, tensors[f"out.{prefix}.pred_masks"]),
                      f"{prefix}.presence_logit_dec": (out.presence_logits[:, None],
                                                       tensors[f"out.{prefix}.presence_logit_dec"])})
    pairs["text.semantic_seg"] = (text_raw.semantic_logits, tensors["out.text.semantic_seg"])
    r.update(compare(pairs, {"text.masks_prob_fp16": 1e-3}))  # the fixture stores fp16 probabilities
    r["summary"] = f"worst {r['worst']} {r['worst_err']:.2e} within_tol={r['within_tol']}"


def check_tiny_interactive(dev: torch.device, tmp: Path, r: Result) -> None:
    """Points, box and mask_input refinement on the tiny model with tracker heads; device vs CPU."""
    path = tiny_interactive_checkpoint(tmp)
    image = np.random.default_rng(3).integers(0, 256, size=(90, 130, 3), dtype=np.uint8)
    runs, best = {}, 0
    for where in (torch.device("cpu"), dev):
        sam = opensam3.load(path, device=where)
        with exact(where):
            state = sam.set_image(image)
            click = sam.predict(state, points=[[60, 40]], point_labels=[1])
            best = int(click.iou_scores.argmax()) if where.type == "cpu" else best
            refined = sam.predict(state, points=[[60, 40], [10, 10]], point_labels=[1, 0],
                                  mask_input=click.low_res_logits[best][None], multimask_output=False)
            from_numpy = sam.predict(state, mask_input=click.low_res_logits[best].numpy()[None])
            boxed = sam.predict(state, box=[20, 10, 100, 80])
            concept = sam.segment(state, text="a dog", threshold=0.0)
        runs[where.type] = {"click": click, "refined": refined, "mask_only": from_numpy, "box": boxed,
                            "concept": concept}
    cpu, ours = runs["cpu"], runs[dev.type]
    pairs = {}
    for name in ("click", "refined", "mask_only", "box"):
        pairs[f"{name}.iou_scores"] = (ours[name].iou_scores, cpu[name].iou_scores)
        pairs[f"{name}.low_res_logits"] = (ours[name].low_res_logits, cpu[name].low_res_logits)
    pairs["concept.scores"] = (ours["concept"].scores, cpu["concept"].scores)
    r.update(compare(pairs))
    r["mask_pixels_differing"] = {n: int((ours[n].masks != cpu[n].masks).sum()) for n in ("click", "refined", "box")}
    r["summary"] = (f"worst {r['worst']} {r['worst_err']:.2e} within_tol={r['within_tol']} "
                    f"pixels differing {sum(r['mask_pixels_differing'].values())}")


def check_video_concept(dev: torch.device, tmp: Path, r: Result) -> None:
    """tests/test_video_concept_parity.py's session replay on the device vs its fixture."""
    from opensam3.predictor.video_concept_prompts import ConceptVideoPredictor
    from opensam3.predictor.video_session import Sam3VideoPredictor
    from opensam3.predictor.video_tracker import VideoTracker

    tensors, meta = read_fixture(FIXTURES / "modules" / "video_concept.safetensors")
    config = json.loads(meta["config"])
    height, width = config["height"], config["width"]
    frames = make_frames(config["num_frames"], height, width)
    assert str(int(frames.astype(np.int64).sum())) == meta["frames_sum"], "frames differ from the fixture's"
    predictor = Sam3VideoPredictor(ConceptVideoPredictor(VideoTracker(*video_modules(meta, dev, True, True))))
    steps, results, sessions = json.loads(meta["steps"]), {}, {}
    with exact(dev):
        start = time.perf_counter()
        for step in steps:
            if step["session"] not in sessions:
                sessions[step["session"]] = predictor.handle_request({"type": "start_session",
                                                                      "resource_path": frames})["session_id"]
            request = {**step["request"], "session_id": sessions[step["session"]]}
            if request["type"] == "propagate_in_video":
                results[step["name"]] = [(i["frame_index"], i["outputs"]) for i in predictor.handle_stream_request(request)]
            else:
                out = predictor.handle_request(request)
                results[step["name"]] = [(out["frame_index"], out["outputs"])] if "outputs" in out else []
        for sid in sessions.values():
            predictor.handle_request({"type": "close_session", "session_id": sid})
        r["replay_s"] = round(time.perf_counter() - start, 3)
    id_mismatch = [s["name"] for s in steps if [(t, [int(i) for i in o["out_obj_ids"]]) for t, o in results[s["name"]]]
                   != [(f["frame"], f["obj_ids"]) for f in s["frames"]]]
    overlap = union = flipped = 0
    prob_err = box_err = 0.0
    for step in steps:
        for t, out in results[step["name"]]:
            key = f"{step['name']}.{t}"
            if tensors[f"{key}.probs"].numel() == 0:
                continue
            prob_err = max(prob_err, max_err(torch.from_numpy(out["out_probs"]), tensors[f"{key}.probs"]))
            box_err = max(box_err, max_err(torch.from_numpy(out["out_boxes_xywh"]), tensors[f"{key}.boxes_xywh"]))
            for a, b in zip(torch.from_numpy(out["out_binary_masks"]), unpack(tensors[f"{key}.masks"], height, width)):
                overlap, union = overlap + (a & b).sum().item(), union + (a | b).sum().item()
                flipped = max(flipped, (a ^ b).sum().item())
    pooled = overlap / max(union, 1)
    r.update(same_object_ids=not id_mismatch, id_mismatch_steps=id_mismatch, pooled_mask_iou=pooled,
             max_flipped_pixels=flipped, max_prob_err=prob_err, max_box_err=box_err,
             within_test_tol=not id_mismatch and pooled >= 0.99 and flipped <= 2 and prob_err <= 1e-3 and box_err <= 1e-2)
    r["summary"] = f"ids same={not id_mismatch} pooled IoU {pooled:.5f} flipped<={flipped} prob err {prob_err:.2e}"


def check_video_tracker(dev: torch.device, tmp: Path, r: Result) -> None:
    """tests/test_video_tracker_parity.py (points / box / mask prompts, propagation, removal)."""
    from opensam3.predictor.video_tracker import VideoTracker

    tensors, meta = read_fixture(FIXTURES / "modules" / "video_tracker.safetensors")
    config = json.loads(meta["config"])
    height, width = config["height"], config["width"]
    tracker = VideoTracker(*video_modules(meta, dev, False, config["use_memory_selection"]))
    state = tracker.init_state(make_frames(config["num_frames"], height, width))
    steps = json.loads(meta["steps"])
    with exact(dev):
        ours, seen = replay_steps(tracker, state, steps, tensors, height, width)
    mismatched = [step["name"] for step in steps if seen[step["name"]] != expected_report(step)]
    logits = compare({k: (ours[k], v) for k, v in tensors.items() if k.endswith((".low_res", ".scores"))})
    ious = {f"{k}[{i}]": iou(ours[k][i], m) for k, bits in tensors.items() if ".video_masks" in k
            for i, m in enumerate(unpack(bits, height, width))}
    worst = min(ious, key=ious.get)
    r.update(same_object_ids=not mismatched, id_mismatch_steps=mismatched, logits_worst=logits["worst"],
             logits_worst_err=logits["worst_err"], logits_within_tol=logits["within_tol"], compared_logits=len(
                 logits["max_abs_err"]), min_mask_iou=ious[worst], min_mask_iou_key=worst)
    r["summary"] = f"ids same={not mismatched} logits err {logits['worst_err']:.2e} min mask IoU {ious[worst]:.5f}"


def check_cli(dev: torch.device, tmp: Path, r: Result) -> None:
    """`opensam3 segment` and `opensam3 click` as subprocesses with --device."""
    from PIL import Image

    ckpt = tiny_interactive_checkpoint(tmp)
    image = tmp / "scene.png"
    Image.fromarray(np.random.default_rng(5).integers(0, 256, (70, 90, 3), dtype=np.uint8)).save(image)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    commands = {"segment": ["segment", str(image), "--text", "star", "--threshold", "0"],
                "click": ["click", str(image), "--point", "40,30", "--point", "5,5:neg", "--box", "10,10,80,60"]}
    for name, args in commands.items():
        out = tmp / f"cli_{name}"
        proc, seconds = timed(dev, lambda: subprocess.run(
            [sys.executable, "-m", "opensam3.cli", *args, "--checkpoint", str(ckpt), "--device", str(dev),
             "--out", str(out)], capture_output=True, text=True, env=env, timeout=300))
        written = sorted(p.name for p in out.glob("*.json")) if out.is_dir() else []
        r[name] = {"returncode": proc.returncode, "json": written, "seconds": round(seconds, 2)}
        if proc.returncode != 0 or not written:
            r[name]["output_tail"] = (proc.stdout + proc.stderr)[-2000:]
            raise RuntimeError(f"{name} exited {proc.returncode}, wrote {written}")
    r["summary"] = f"segment {r['segment']['seconds']}s click {r['click']['seconds']}s"


def check_train(dev: torch.device, tmp: Path, r: Result) -> None:
    """The embedded recipe on a small synthetic set: s/step of encoder pre-training and detector
    steps (batch 8), detector steps at batch 32, and the held-out evaluation."""
    from opensam3.config import get_config
    from opensam3.synth import write_image_dataset
    from opensam3.train.trainer import Trainer, settings_for

    data = tmp / "train_data"
    _, r["render_s"] = timed(dev, lambda: (write_image_dataset(data / "train", 24, seed=0, size=224),
                                           write_image_dataset(data / "val", 8, seed=1, size=224),
                                           write_image_dataset(data / "calib", 8, seed=2, size=224)))

    def trainer(out: str, **overrides) -> Trainer:
        torch.manual_seed(0)
        settings = settings_for("embedded", data=str(data), out=str(tmp / out), eval_every=0, progress=False,
                                **overrides)
        return Trainer(settings, model=build_model(get_config("embedded"), device=dev))

    def steps(t: Trainer, count: int) -> tuple[list[dict], list[float]]:
        logs, seconds = zip(*[timed(dev, t.train_step) for _ in range(count)])
        return list(logs), list(seconds)

    gpu_peak(dev)
    main = trainer("run", steps=40, pretrain_steps=10)
    logs, seconds = steps(main, 40)
    detector = [x["loss"] for x in logs[10:]]
    r.update(losses_finite=all(math.isfinite(v) for x in logs for v in x.values()),
             pretrain_s_per_step=statistics.mean(seconds[3:10]), detector_s_per_step=statistics.mean(seconds[13:40]),
             first_detector_loss=detector[0], last_detector_loss=detector[-1],
             detector_loss_first3_mean=statistics.mean(detector[:3]), detector_loss_last3_mean=statistics.mean(detector[-3:]))
    r["peak_gpu_mem_gb_batch8"] = gpu_peak(dev)
    main.out.mkdir(parents=True, exist_ok=True)
    r["evaluate"], r["evaluate_s"] = timed(dev, lambda: main.evaluate(limit=8))
    calibration, r["calibrate_s"] = timed(dev, main.calibrate)
    r["calibration_offset"] = calibration.offset
    del main
    gpu_peak(dev)
    big = trainer("run32", steps=13, pretrain_steps=0, batch_size=32)
    logs32, seconds32 = steps(big, 13)
    r["detector_s_per_step_batch32"] = statistics.mean(seconds32[3:])
    r["losses_finite_batch32"] = all(math.isfinite(v) for x in logs32 for v in x.values())
    r["peak_gpu_mem_gb_batch32"] = gpu_peak(dev)
    r["summary"] = (f"finite={r['losses_finite']} det loss {detector[0]:.3f}->{detector[-1]:.3f} s/step pre "
                    f"{r['pretrain_s_per_step']:.3f} det {r['detector_s_per_step']:.3f} det@32 "
                    f"{r['detector_s_per_step_batch32']:.3f}")


def check_train_interactive(dev: torch.device, tmp: Path, r: Result) -> None:
    """The interactive stage's pieces (as tests/test_train_interactive.py drives them) with the model
    on the device; then evaluate_interactive on a device-loaded combined model."""
    from opensam3.config import get_config
    from opensam3.train.interactive import (InteractiveSettings, build_cache, interactive_loss, load_for_interactive,
                                            trainable_modules)
    from opensam3.train.interactive_eval import evaluate_interactive
    from opensam3.train.model_io import export_model

    torch.manual_seed(0)
    detector = tmp / "embedded_random.safetensors"
    export_model(build_model(get_config("embedded")), detector)
    settings = InteractiveSettings(init=str(detector), clicks=1, progress=False)
    model, heads = load_for_interactive(detector, settings.neck_init_scale)
    model, heads = model.to(dev), heads.to(dev)
    combined = tmp / "embedded_interactive.safetensors"
    Sam3(model, tracker=heads).save(combined)
    r["evaluate"], r["evaluate_s"] = timed(dev, lambda: evaluate_interactive(opensam3.load(combined, device=dev),
                                                                             num_scenes=4))
    r["evaluate"].pop("per_shape", None)
    cache, r["cache_s"] = timed(dev, lambda: build_cache(model, 8, seed=settings.data_seed))
    trainable = trainable_modules(model, heads)
    trainable.train()
    optimizer = torch.optim.AdamW(trainable.parameters(), lr=settings.lr)
    rng, gen = np.random.default_rng(0), torch.Generator().manual_seed(0)

    def step() -> float:
        out = interactive_loss(model, heads, cache, [int(rng.integers(len(cache.masks)))], rng, gen, settings)
        optimizer.zero_grad(set_to_none=True)
        out["loss"].backward()
        optimizer.step()
        return float(out["loss"].detach())

    losses, seconds = zip(*[timed(dev, step) for _ in range(8)])
    r.update(losses=losses, losses_finite=all(math.isfinite(x) for x in losses), s_per_step=statistics.mean(seconds[3:]))
    r["summary"] = f"finite={r['losses_finite']} s/step {r['s_per_step']:.3f} eval objects {r['evaluate']['objects']}"


REPS = 3  # timed repetitions after one warm-up (--reps)
PHRASE = "a person in a red shirt"


def check_full(dev: torch.device, tmp: Path, r: Result) -> None:
    """The seeded official-layout sam3.pt: tests/test_full_parity.py and the two-click predict of
    tests/test_interactive_full_parity.py in fp32; then set_image / text prompt / click timings and
    peak memory in fp32 and bf16, and bf16's agreement with fp32."""
    from opensam3.device import cpu_has_native_bf16

    r["cpu_capability"] = capability = torch.backends.cpu.get_cpu_capability()
    r["fixture"] = FULL_REFERENCE_BY_CPU.get(capability, FULL_REFERENCE_BY_CPU["AVX512"])
    ref, _ = read_fixture(FIXTURES / r["fixture"])
    image = ref["input.image_uint8_hwc"].numpy()
    path = Path(os.environ.get("OPENSAM3_SEEDED_CHECKPOINT") or tmp / "sam3.pt")
    if not path.is_file():  # as tests/conftest.py full_checkpoint
        manifest = json.loads((FIXTURES / "sam3_checkpoint_manifest.json").read_text())
        _, r["build_checkpoint_s"] = timed(dev, lambda: torch.save({"model": {
            k: seeded_value(k, v["shape"]) for k, v in manifest.items() if v["dtype"] == "float32"}}, path))
    fp32 = None
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        if dtype == torch.bfloat16 and dev.type == "cpu" and cpu_has_native_bf16() is False:
            r["bf16"] = "skipped: this CPU has no native bf16 arithmetic"
            continue
        gpu_peak(dev)
        sam, r[f"{name}_load_s"] = timed(dev, lambda: opensam3.load(path, device=dev, dtype=dtype))
        if dev.type == "cuda":
            r[f"{name}_weights_gpu_mem_gb"] = torch.cuda.memory_allocated(dev) / 2**30
        if name == "fp32":
            with exact(dev):
                r["parity"] = full_parity(sam, ref, image)
            r["within_tol"] = r["parity"]["within_tol"]
        times: dict[str, list[float]] = {"set_image": [], "text_prompt": [], "click": []}
        phrases = ["a dog", "a red car", "a tree", "a blue ball", "a window", "a cat"]
        for i in range(1 + REPS):  # the first round is the warm-up; each round asks a new phrase
            state, took = timed(dev, lambda: sam.set_image(image))
            times["set_image"].append(took)
            times["text_prompt"].append(timed(dev, lambda: sam.segment(state, text=phrases[i % len(phrases)]))[1])
            times["click"].append(timed(dev, lambda: sam.predict(state, points=[[320, 240]], point_labels=[1]))[1])
        for key, values in times.items():
            r[f"{name}_{key}_s"] = statistics.median(values[1:])
        r[f"{name}_peak_gpu_mem_gb"] = gpu_peak(dev)
        with torch.inference_mode():
            out = sam.run_prompts(state.features, [PHRASE], None, None)
        scores = out.scores()[0].float().cpu()
        if fp32 is None:
            top = int(scores.argmax())
            fp32 = scores, top, out.masks[0, top].float().cpu() > 0
        else:
            r["bf16_vs_fp32"] = {"top_mask_iou": iou(out.masks[0, fp32[1]].float().cpu() > 0, fp32[2]),
                                 "max_score_diff": max_err(scores, fp32[0]),
                                 "same_top_query": int(scores.argmax()) == fp32[1]}
        del sam, state, out
        gpu_peak(dev)
    r["summary"] = (f"parity worst {r['parity']['worst']} {r['parity']['worst_err']:.2e} within_tol={r['within_tol']}; "
                    f"fp32 set_image {r['fp32_set_image_s']:.3f}s prompt {r['fp32_text_prompt_s']:.3f}s")
    if "bf16_vs_fp32" in r:
        r["summary"] += (f"; bf16 set_image {r['bf16_set_image_s']:.3f}s prompt {r['bf16_text_prompt_s']:.3f}s "
                         f"top-mask IoU {r['bf16_vs_fp32']['top_mask_iou']:.4f}")


def full_parity(sam: Sam3, ref: dict, image: np.ndarray) -> dict:
    dev = sam.device
    processor = Sam3Processor(sam.model, device=dev, confidence_threshold=0.0)
    state = processor.set_image(image)
    text_out = dict(processor.set_text_prompt(PHRASE, state))
    empty = torch.zeros(1, 0, dtype=torch.bool, device=dev)
    with torch.inference_mode():
        raw = sam.model.ground(state["image_state"].features, sam.model.encode_text([PHRASE]),
                               torch.zeros(1, 0, 4, device=dev), empty, empty)
    box_out = dict(processor.add_geometric_prompt([0.5, 0.5, 0.25, 0.5], True, state))
    clicks = sam.predict(state["image_state"], points=[[320.0, 240.0], [100.0, 100.0]], point_labels=[1, 0])
    result = compare({
        "backbone_fpn[-1]": (state["image_state"].features.fpn[-1], ref["out.backbone_fpn.last"]),
        "pred_logits": (raw.logits[..., None], ref["out.text.pred_logits"]),
        "pred_boxes": (raw.boxes, ref["out.text.pred_boxes"]),
        "presence_logit": (raw.presence_logits[:, None], ref["out.text.presence_logit_dec"]),
        "top8_mask_logits": (raw.masks[0, ref["out.text.top8_index"].to(dev)], ref["out.text.top8_pred_masks"]),
        "text.scores": (text_out["scores"], ref["out.text.scores"]),
        "text.boxes_xyxy": (text_out["boxes"], ref["out.text.boxes_xyxy"]),
        "box.scores": (box_out["scores"], ref["out.box.scores"]),
        "points.ious": (clicks.iou_scores, ref["out.points.ious"]),
        "points.low_res_logits": (clicks.low_res_logits, ref["out.points.low_res_logits"]),
    }, {"text.boxes_xyxy": 1e-3})  # pixels, as tests/test_full_parity.py
    result["points.mask_pixels_differing"] = int((clicks.masks != ref["out.points.masks"].bool()).sum())
    return result


CHECKS: dict[str, Callable[[torch.device, Path, Result], None]] = {
    "tiny_image": check_tiny_image, "tiny_interactive": check_tiny_interactive, "video_concept": check_video_concept,
    "video_tracker": check_video_tracker, "cli": check_cli, "train": check_train,
    "train_interactive": check_train_interactive, "full": check_full,
}


def summary_line(name: str, result: Result) -> str:
    detail = result.get("summary", "") if result["ok"] else result["error"]
    return f"{name:18s} {'ok  ' if result['ok'] else 'FAIL'} {result['seconds']:7.1f}s  {detail}"


def main() -> int:
    global REPS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--out", required=True, help="JSON report (rewritten after every check)")
    parser.add_argument("--full", action="store_true", help="also the full-size model (~3.4 GB checkpoint)")
    parser.add_argument("--only", help=f"comma-separated subset of {', '.join(CHECKS)}")
    parser.add_argument("--reps", type=int, default=REPS, help="timed repetitions in full (after one warm-up)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: 1 with --device cpu, else torch's)")
    args = parser.parse_args()
    REPS = args.reps
    dev = torch.device(args.device)
    if args.threads or dev.type == "cpu":
        torch.set_num_threads(args.threads or 1)
    names = args.only.split(",") if args.only else [n for n in CHECKS if n != "full" or args.full]
    unknown = [n for n in names if n not in CHECKS]
    if unknown:
        parser.error(f"unknown checks {unknown}; known: {list(CHECKS)}")
    report = {"device": str(dev), "torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
              "threads": torch.get_num_threads(), "checks": {}}
    if dev.type == "cuda":
        report.update(gpu=torch.cuda.get_device_name(dev), cuda=torch.version.cuda,
                      tf32_defaults={"matmul": torch.backends.cuda.matmul.allow_tf32,
                                     "cudnn": torch.backends.cudnn.allow_tf32})
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="opensam3_devcheck_"))
    print(f"device {dev} torch {torch.__version__} checks {names} tmp {tmp}", flush=True)
    total = time.perf_counter()
    try:
        for name in names:
            result: Result = {}
            start = time.perf_counter()
            print(f"-- {name} ...", flush=True)
            try:
                CHECKS[name](dev, tmp, result)
                result["ok"] = True
            except Exception as exc:  # noqa: BLE001 - every failure is recorded, the next check runs
                result.update(ok=False, error=f"{type(exc).__name__}: {exc}",
                              traceback="".join(traceback.format_exc().splitlines(keepends=True)[-15:]))
                print(result["traceback"], flush=True)
            result["seconds"] = round(time.perf_counter() - start, 2)
            report["checks"][name] = result
            report["total_s"] = round(time.perf_counter() - total, 2)
            out.write_text(json.dumps(report, indent=1, default=str))
            print(summary_line(name, result), flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"== summary ({report['total_s']}s, report {out})", flush=True)
    for name, result in report["checks"].items():
        print(summary_line(name, result), flush=True)
    return 0 if all(r["ok"] for r in report["checks"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
