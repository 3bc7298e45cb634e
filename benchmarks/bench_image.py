"""Image benchmark: opensam3 next to the official code, same seeded full-size weights, same image.

    .venv/bin/python benchmarks/bench_image.py [--dtypes float32,bfloat16] [--reference-dir ../shared/reference]
        [--transformers] [--embedded RUN/model.safetensors --embedded-data DATA/val]

Each system runs in its own process (so peak RSS is its own): encode the image (set_image) and
answer text prompts (a new phrase each time, as a user would). Prints seconds, peak RSS and
ratios to opensam3. The reference column needs ../shared/reference (the official sam3 package
run on CPU through its run.sh); without it only opensam3 is measured. ``--transformers`` adds
Hugging Face's ``Sam3Model`` in bfloat16 (transformers 5.23.0 with torch 2.13.0, installed once into
a side venv under the cache folder; see transformers_worker.py for what it runs).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from peak_memory import peak_rss_gb  # this folder (the script's own); see there why not ru_maxrss

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PHRASES = ["a person in a red shirt", "a dog", "the white car on the left", "a tree"]
TRANSFORMERS_PACKAGES = ["torch==2.13.0", "transformers==5.23.0"]  # torch first: the local CPU build


def seeded_checkpoint(cache_dir: Path) -> Path:
    """An official-layout sam3.pt filled with the fixtures' seeded rule (built once, cached)."""
    import torch

    sys.path.insert(0, str(ROOT))
    from opensam3.seeded import seeded_value

    path = cache_dir / "sam3_seeded.pt"
    if path.exists():
        return path
    cache_dir.mkdir(parents=True, exist_ok=True)
    manifest = json.loads((ROOT / "tests" / "fixtures" / "sam3_checkpoint_manifest.json").read_text())
    state = {k: seeded_value(k, v["shape"]) for k, v in manifest.items() if v["dtype"] == "float32"}
    torch.save({"model": state}, path.with_suffix(".tmp"))
    os.replace(path.with_suffix(".tmp"), path)
    return path


def seeded_safetensors(checkpoint: Path) -> Path:
    """The same weights as ``.safetensors`` (float32, official keys): what opensam3 reads, so a
    bfloat16 load casts tensor by tensor instead of holding the float32 file in memory."""
    sys.path.insert(0, str(ROOT))
    from opensam3.checkpoint import convert_checkpoint

    path = checkpoint.with_suffix(".safetensors")
    if not path.exists():
        convert_checkpoint(checkpoint, path)
    return path


def bench_image():
    import numpy as np

    return np.random.default_rng(1).integers(0, 256, size=(480, 640, 3), dtype=np.uint8)


def run_opensam3(checkpoint: str, dtype_name: str, repeats: int) -> dict:
    import torch

    sys.path.insert(0, str(ROOT))
    import opensam3

    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype_name]
    start = time.perf_counter()
    sam = opensam3.load(checkpoint, dtype=dtype)
    load_s = time.perf_counter() - start
    image = bench_image()
    encode = []
    for _ in range(repeats):
        start = time.perf_counter()
        state = sam.set_image(image)
        encode.append(time.perf_counter() - start)
    prompt = []
    for phrase in PHRASES:
        start = time.perf_counter()
        sam.segment(state, text=phrase)
        prompt.append(time.perf_counter() - start)
    peak_rss = peak_rss_gb()  # before the floor measurements below add their own buffers
    attention = fusion_attention_floor(sam.model, dtype, repeats)
    other_flops = prompt_flops_without_attention(sam, state, "a blue bus")
    rate = gemm_rate(sam.model, dtype, repeats)
    return {"system": f"opensam3 {dtype_name}", "load_s": load_s, "set_image_s": statistics.median(encode),
            "prompt_s": statistics.median(prompt), "peak_rss_gb": peak_rss,
            "attention_floor_s": attention, "prompt_gflop": other_flops / 1e9, "gemm_gflops": rate / 1e9,
            "prompt_floor_s": attention + other_flops / rate}


def prompt_flops_without_attention(sam, state, phrase: str) -> float:
    """FLOPs of one new text prompt that torch's counter sees (matrix products, convolutions;
    not attention, which fusion_attention_floor times instead)."""
    from unittest import mock

    import torch
    import torch.nn.functional as F
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    # the counter sees bf16 attention's chunked matrix products (ops.attention); SDPA it skips
    with torch.inference_mode(), counter, mock.patch("opensam3.model.common.attention", F.scaled_dot_product_attention):
        sam.segment(state, text=phrase)
    return float(counter.get_total_flops())


def gemm_rate(model, dtype, repeats: int) -> float:
    """FLOP/s of one large matrix product of the fusion encoder's shape (its feed-forward layer)."""
    import torch
    import torch.nn.functional as F

    cfg = model.config
    tokens, width, hidden = cfg.vision.grid_size ** 2, cfg.detector.d_model, cfg.detector.fusion_ffn
    inputs, weight = torch.randn(tokens, hidden, dtype=dtype), torch.randn(width, hidden, dtype=dtype)
    with torch.inference_mode():
        F.linear(inputs, weight)
        calls = []
        for _ in range(max(repeats, 3)):
            start = time.perf_counter()
            F.linear(inputs, weight)
            calls.append(time.perf_counter() - start)
    return 2 * tokens * width * hidden / statistics.median(calls)


def fusion_attention_floor(model, dtype, repeats: int) -> float:
    """Seconds per prompt that no implementation of the same model avoids on this CPU: the
    fusion encoder's self-attention over every image token, as bare attention calls (the op
    opensam3 runs, ``ops.attention``: SDPA in float32, chunked in bfloat16), in each layer but the
    first (whose result opensam3 keeps per image)."""
    import torch

    from opensam3.ops.attention import attention

    cfg = model.config
    heads, width = cfg.detector.num_heads, cfg.detector.d_model
    query = torch.randn(1, heads, cfg.vision.grid_size ** 2, width // heads, dtype=dtype)
    with torch.inference_mode():
        attention(query, query, query)
        calls = []
        for _ in range(max(repeats, 3)):
            start = time.perf_counter()
            attention(query, query, query)
            calls.append(time.perf_counter() - start)
    return statistics.median(calls) * (cfg.detector.fusion_layers - 1)


def run_reference(reference_dir: Path, checkpoint: Path, repeats: int, timeout: int) -> dict:
    script = HERE / "reference_worker.py"
    cmd = ["bash", str(reference_dir / "run.sh"), str(script), str(checkpoint), str(repeats), json.dumps(PHRASES)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"reference run failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def transformers_venv(cache_dir: Path) -> Path:
    """The side venv's python, created once: transformers must not enter opensam3's own venv."""
    venv = cache_dir / "transformers-venv"
    python = venv / "bin" / "python"
    stamp = venv / ".installed"
    if not stamp.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        for package in TRANSFORMERS_PACKAGES:
            subprocess.run([str(python), "-m", "pip", "install", "-q", package], check=True)
        stamp.write_text(" ".join(TRANSFORMERS_PACKAGES))
    return python


def run_transformers(cache_dir: Path, repeats: int, timeout: int) -> dict:
    sys.path.insert(0, str(ROOT))
    from opensam3.model.text.tokenizer import BPETokenizer

    tokenizer = BPETokenizer()
    ids = tokenizer(PHRASES, context_length=32)
    spec = {"repeats": repeats, "input_ids": ids.tolist(), "attention_mask": (ids != 0).long().tolist()}
    cmd = [str(transformers_venv(cache_dir)), str(HERE / "transformers_worker.py"), json.dumps(spec)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"transformers run failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _worker(args) -> int:
    print(json.dumps(run_opensam3(args.checkpoint, args.dtype, args.repeats)))
    return 0


def _table(rows: list[dict]) -> None:
    base = rows[0]
    print(f"{'system':<22}{'set_image s':>12}{'prompt s':>10}{'peak RSS GB':>13}{'set_image x':>13}{'prompt x':>10}")
    for row in rows:
        print(f"{row['system']:<22}{row['set_image_s']:>12.2f}{row['prompt_s']:>10.2f}{row['peak_rss_gb']:>13.2f}"
              f"{row['set_image_s'] / base['set_image_s']:>13.2f}{row['prompt_s'] / base['prompt_s']:>10.2f}")
    print("(x = time relative to the first row; median over repeats / prompts)")
    for row in rows:
        if "attention_floor_s" in row:
            print(f"{row['system']}: fusion self-attention alone (bare attention op, layers 2..n) "
                  f"{row['attention_floor_s']:.2f} s of each prompt; the prompt's other {row['prompt_gflop']:.0f} GFLOP "
                  f"at this CPU's matrix-product rate ({row['gemm_gflops']:.0f} GFLOPS) {row['prompt_floor_s'] - row['attention_floor_s']:.2f} s; "
                  f"floor {row['prompt_floor_s']:.2f} s a prompt")


def top_mask_agreement(first: list[dict], second: list[dict]) -> tuple[float, float, int]:
    """Mean IoU of the two runs' highest-scored masks and mean |score difference|, over the pairs
    where both kept a prediction (and how many those are)."""
    import numpy as np

    from opensam3.data import rle

    def best(predictions):
        top = {}
        for p in predictions:
            if p["image_id"] not in top or p["score"] > top[p["image_id"]]["score"]:
                top[p["image_id"]] = p
        return top

    a, b = best(first), best(second)
    ious, gaps = [], []
    for pair in a.keys() & b.keys():
        ma, mb = (rle.decode(x[pair]["segmentation"]).astype(bool) for x in (a, b))
        union = (ma | mb).sum()
        ious.append((ma & mb).sum() / union if union else 1.0)
        gaps.append(abs(a[pair]["score"] - b[pair]["score"]))
    return float(np.mean(ious)), float(np.mean(gaps)), len(ious)


def fixture_accuracy(checkpoint: Path) -> None:
    """bfloat16 against the official float32 outputs of the full-size fixture (seeded weights,
    tests/fixtures/full_reference.safetensors): for the fixture's eight best queries of its text
    prompt, the IoU of each binarised mask (logit > 0) and the largest score difference; and
    whether both runs rank the same query first. Seeded weights score many queries alike, so a
    rank swap says little; the per-query masks say whether bf16 computes the same thing."""
    import torch
    from safetensors.torch import load_file

    sys.path.insert(0, str(ROOT))
    import opensam3

    fixture = load_file(str(ROOT / "tests" / "fixtures" / "full_reference.safetensors"))
    top8 = fixture["out.text.top8_index"].flatten().long()
    reference_masks = fixture["out.text.top8_pred_masks"] > 0
    reference_scores = fixture["out.text.pred_logits"].flatten().sigmoid()
    empty = torch.zeros(1, 0, dtype=torch.bool)
    sam = opensam3.load(str(checkpoint), dtype=torch.bfloat16)
    with torch.inference_mode():
        state = sam.set_image(fixture["input.image_uint8_hwc"].numpy())
        text = sam.model.encode_text(["a person in a red shirt"])
        raw = sam.model.ground(state.features, text, torch.zeros(1, 0, 4), empty, empty)
    masks = raw.masks[0, top8].float() > 0
    ious = [((a & b).sum() / (a | b).sum().clamp(min=1)).item() for a, b in zip(masks, reference_masks)]
    scores = raw.logits[0].float().sigmoid()
    print(f"full fixture, bfloat16 vs the official float32: mask IoU of the top query {ious[0]:.4f}, "
          f"of the top 8 mean {sum(ious) / len(ious):.4f} (min {min(ious):.4f}); max |score difference| over "
          f"200 queries {(scores - reference_scores).abs().max().item():.4f}; same top query: "
          f"{int(scores.argmax()) == int(reference_scores.argmax())}")


def embedded_accuracy(checkpoint: str, gt: str, images: str) -> None:
    """cgF1 of a trained (embedded-config) model in float32 and bfloat16 on held-out pairs, and
    how far the bfloat16 top masks are from the float32 ones."""
    import torch

    sys.path.insert(0, str(ROOT))
    import opensam3
    from opensam3.eval import evaluate_image_cgf1
    from opensam3.eval.predict import predict_dataset

    runs = {}
    for name, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
        runs[name] = predict_dataset(opensam3.load(checkpoint, dtype=dtype), gt, images)
        result = evaluate_image_cgf1([gt], runs[name], iou_type="segm")
        print(f"held-out {name:<9} cgF1 {100 * result['cgF1_eval_segm_cgF1']:6.2f}  IL_MCC "
              f"{result['cgF1_eval_segm_IL_MCC']:.3f}  pmF1 {result['cgF1_eval_segm_positive_micro_F1']:.3f}")
    iou, gap, pairs = top_mask_agreement(runs["float32"], runs["bfloat16"])
    print(f"bfloat16 vs float32 top masks: mean IoU {iou:.4f}, mean |score difference| {gap:.4f} ({pairs} pairs)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference-dir", default=str(ROOT.parent / "shared" / "reference"))
    parser.add_argument("--cache-dir", default=str(Path.home() / ".cache" / "opensam3-bench"))
    parser.add_argument("--dtypes", default="float32", help="comma list: float32,bfloat16")
    parser.add_argument("--repeats", type=int, default=3,
                        help="set_image repeats (median; with 3 or more the first, cold call drops out)")
    parser.add_argument("--no-reference", action="store_true")
    parser.add_argument("--transformers", action="store_true",
                        help="also Hugging Face transformers' Sam3Model in bfloat16 (side venv, built once)")
    parser.add_argument("--fixture-accuracy", action="store_true",
                        help="also: bfloat16 against the official float32 outputs of the full-size fixture")
    parser.add_argument("--embedded", metavar="CHECKPOINT",
                        help="also: a trained embedded-config model's held-out cgF1 in float32 vs bfloat16")
    parser.add_argument("--embedded-data", metavar="DIR",
                        help="its held-out split: DIR/synth_images.json and DIR/images (opensam3 synth output)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint", help=argparse.SUPPRESS)
    parser.add_argument("--dtype", default="float32", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return _worker(args)
    if args.embedded and not args.embedded_data:
        parser.error("--embedded needs --embedded-data DIR (the held-out split)")

    checkpoint = seeded_checkpoint(Path(args.cache_dir))
    ours = seeded_safetensors(checkpoint)
    rows = []
    for dtype in args.dtypes.split(","):
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--checkpoint", str(ours),
               "--dtype", dtype, "--repeats", str(args.repeats)]
        done = subprocess.run(cmd, capture_output=True, text=True, check=True)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(f"measured {rows[-1]['system']}", file=sys.stderr)
    reference_dir = Path(args.reference_dir)
    if not args.no_reference and (reference_dir / "run.sh").exists():
        rows.append(run_reference(reference_dir, checkpoint, args.repeats, timeout=3600))
    else:
        print("(reference not found: pass --reference-dir; measuring opensam3 only)", file=sys.stderr)
    if args.transformers:
        rows.append(run_transformers(Path(args.cache_dir), args.repeats, timeout=3600))
        print(f"measured {rows[-1]['system']}", file=sys.stderr)
    _table(rows)
    if args.fixture_accuracy:
        fixture_accuracy(ours)
    if args.embedded:
        data = Path(args.embedded_data)
        embedded_accuracy(args.embedded, str(data / "synth_images.json"), str(data / "images"))
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
