"""Third training stage: the video tracker's memory path, on synthetic clips.

What learns: the memory encoder, memory attention, object-pointer projections and temporal
encodings (``TrackerMemory``, sized by ``TrackerMemoryConfig.from_model_config``), with the
interactive heads fine-tuned at a lower rate (their object-score head only learns here: a single
image never asks whether the object is gone). The ViT trunk and the tracker neck stay as trained,
so the trunk output of every clip frame is computed once.

Recipe (SAM 2's, shortened): per step one window of consecutive frames of one clip. Every object
visible on the window's first frame is prompted there, all the same way: its mask (the video
concept pipeline hands the tracker detector masks), a jittered box or a click. The following
frames are tracked from memory, all objects in one batch. Losses per frame: focal + dice on the
best of the candidate masks of each visible object (on the raw decoder masks, so an object
wrongly judged absent still learns its mask), MSE between predicted and actual IoU, and binary
cross-entropy on the object score (visible or not). Memories keep their gradients, so the loss
of a later frame trains how earlier frames were written (back-propagation through the window).

    opensam3 train-memory --init runs/interactive/model.safetensors --out runs/memory
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from opensam3.data.image_io import preprocess
from opensam3.errors import CheckpointError, InvalidInputError
from opensam3.model.sam3 import Sam3ImageModel
from opensam3.model.tracker.config import TrackerMemoryConfig
from opensam3.model.tracker.heads import TrackerHeads
from opensam3.model.tracker.memory_bank import MemoryBank, MemoryFrame
from opensam3.model.tracker.prompt_encoder import BOX_BOTTOM_RIGHT, BOX_TOP_LEFT
from opensam3.model.tracker.tracker_memory import TrackerMemory
from opensam3.model.tracker.tracking import mask_as_output, memory_score, run_heads, select_outputs, use_multimask
from opensam3.train.interactive import MODEL_FILE, mask_terms
from opensam3.train.interactive_prompts import jittered_box
from opensam3.train.loop import optimise
from opensam3.train.optim import param_groups

MIN_PROMPT_PIXELS = 20  # an object is prompted on the window's first frame only if this much of it shows


@dataclass
class MemorySettings:
    init: str                           # detector + tracker neck + heads (``train-interactive`` output)
    out: str = "runs/memory"
    steps: int = 20000                  # upper bound; the time budget usually decides
    time_budget: float | None = 1800.0  # seconds for the optimisation loop (None = run all steps)
    train_clips: int = 200
    clip_frames: int = 16
    window: int = 6                     # frames per step: one prompted, the rest tracked
    # a window takes every s-th frame, s drawn from 1..max_stride per step: objects then move
    # further between memory frames, so the memory must find them away from where they were
    max_stride: int = 1
    reappear_prob: float = 0.0          # share of steps drawn from windows where an object vanishes and returns
    occlusion_weight: float = 1.0       # loss weight of an object once it has been hidden in the window
    max_objects: int = 6
    mask_prompt_prob: float = 0.4       # the window starts from the objects' masks ...
    box_prob: float = 0.3               # ... or jittered boxes (else one click per object)
    lr: float = 5e-4
    heads_lr_scale: float = 0.2         # the interactive heads are trained already
    weight_decay: float = 0.01
    warmup: int = 100
    clip: float = 1.0
    focal_weight: float = 20.0
    dice_weight: float = 1.0
    iou_weight: float = 1.0
    score_weight: float = 1.0
    seed: int = 0
    data_seed: int = 20                 # synthetic clips (scenes used seeds 0-2 and 10-11)
    log_every: int = 10
    progress: bool = True


@dataclass
class ClipCache:
    """Frozen trunk outputs (N, T, D, g, g) float16 and per clip the visible masks (T, K, S, S) bool
    and boxes (T, K, 4) xyxy."""

    trunk: torch.Tensor
    masks: list[torch.Tensor]
    boxes: list[np.ndarray]


@torch.inference_mode()
def build_clip_cache(model: Sam3ImageModel, num_clips: int, seed: int, num_frames: int,
                     progress: bool = False) -> ClipCache:
    from opensam3.synth.clip import ClipConfig, clip_stream

    cfg = model.config
    trunk = model.backbone.vision_backbone.trunk
    weight = next(trunk.parameters())
    stream = clip_stream(seed, size=cfg.image_size, config=ClipConfig(num_frames=num_frames))
    chunks, masks, boxes = [], [], []
    iterator = range(num_clips)
    if progress:
        from tqdm import tqdm

        iterator = tqdm(iterator, desc="caching clips", dynamic_ncols=True, leave=False)
    for _ in iterator:
        clip = next(stream)
        pixels = preprocess(list(clip.frames), cfg.image_size, cfg.pixel_mean, cfg.pixel_std,
                            device=weight.device, dtype=weight.dtype)
        chunks.append(trunk(pixels).to(torch.float16))
        masks.append(torch.from_numpy(clip.masks))
        boxes.append(clip.boxes().astype(np.float32))
    return ClipCache(torch.stack(chunks), masks, boxes)


def fresh_memory(config: TrackerMemoryConfig) -> TrackerMemory:
    """A new memory path, its learned embeddings started as the official code starts them
    (truncated normal, std 0.02) rather than at zero, so temporal slots differ from step one."""
    memory = TrackerMemory(config)
    with torch.no_grad():
        for param in (memory.maskmem_tpos_enc, memory.no_obj_ptr, memory.no_obj_embed_spatial):
            torch.nn.init.trunc_normal_(param, std=0.02)
    return memory


def window_frames(first: int, window: int, stride: int = 1) -> list[int]:
    return list(range(first, first + stride * (window - 1) + 1, stride))


def reappearance_windows(cache: ClipCache, window: int, max_stride: int = 1) -> list[tuple[int, int, int]]:
    """(clip, first frame, stride) of every window (``window`` frames, every stride-th) in which
    an object prompted on the first frame (at least MIN_PROMPT_PIXELS visible) vanishes completely
    and is visible again before the window ends: the windows that teach the memory to re-find an
    object after a full occlusion."""
    found = []
    for clip, masks in enumerate(cache.masks):
        area = masks.flatten(2).sum(2)  # (T, K)
        for stride in range(1, max_stride + 1):
            for first in range(area.shape[0] - stride * (window - 1)):
                span = area[window_frames(first, window, stride)]
                for obj in torch.nonzero(span[0] >= MIN_PROMPT_PIXELS)[:, 0].tolist():
                    gone = torch.nonzero(span[:, obj] == 0)[:, 0]
                    if len(gone) and bool((span[int(gone[0]):, obj] > 0).any()):
                        found.append((clip, first, stride))
                        break
    return found


def _frame_features(model: Sam3ImageModel, heads: TrackerHeads, trunk: torch.Tensor):
    """(T, D, g, g) trunk maps -> per frame (image (1, C, e, e), high-res levels, position)."""
    neck = model.backbone.vision_backbone
    with torch.no_grad():
        levels, positions = neck.tracker_levels(trunk, count=model.config.vision.used_levels)
    s0, s1 = heads.sam_mask_decoder.project_high_res(levels[0], levels[1])
    return [(levels[2][t:t + 1], (s0[t:t + 1], s1[t:t + 1]), positions[2][t:t + 1]) for t in range(trunk.shape[0])]


def _first_prompts(kind: str, boxes: np.ndarray, masks: torch.Tensor, rng: np.random.Generator, size: int):
    """Clicks or jittered boxes for B objects on the first frame: (coords (B, N, 2), labels (B, N))."""
    if kind == "box":
        corners = np.stack([jittered_box(box, rng, size) for box in boxes]).reshape(-1, 2, 2)
        labels = torch.tensor([[BOX_TOP_LEFT, BOX_BOTTOM_RIGHT]]).expand(len(boxes), 2)
        return torch.from_numpy(corners), labels
    clicks = []
    for mask in masks:
        ys, xs = torch.nonzero(mask, as_tuple=True)
        pick = int(rng.integers(len(xs)))
        clicks.append([float(xs[pick]), float(ys[pick])])
    return torch.tensor(clicks)[:, None], torch.ones(len(clicks), 1, dtype=torch.long)


def _frame_loss(out, target: torch.Tensor, visible: torch.Tensor, multimask: bool, s: MemorySettings,
                weight: torch.Tensor | None = None):
    """Losses of one tracked frame for B objects (weighted per object by ``weight`` (B,), a
    weighted mean); returns (total, mask IoU of the chosen masks of visible objects,
    object-score accuracy)."""
    weight = torch.ones_like(visible, dtype=torch.float32) if weight is None else weight
    masks = out.masks[:, 1:] if multimask else out.masks[:, :1]
    ious_pred = out.iou_scores[:, 1:] if multimask else out.iou_scores[:, :1]
    score = F.binary_cross_entropy_with_logits(out.object_score_logits[:, 0], visible.float(), reduction="none")
    score = (score * weight).sum() / weight.sum()
    accuracy = ((out.object_score_logits[:, 0] > 0) == visible).float().mean()
    if not visible.any():
        return s.score_weight * score, None, accuracy
    loss, iou, _ = mask_terms(masks[visible], target[visible], s)
    seen = weight[visible]
    best = (loss.min(dim=1).values * seen).sum() / seen.sum()
    iou_loss = (((ious_pred[visible] - iou) ** 2).mean(dim=1) * seen).sum() / seen.sum()
    chosen = iou[torch.arange(iou.shape[0]), ious_pred[visible].detach().argmax(dim=1)]
    return best + s.iou_weight * iou_loss + s.score_weight * score, chosen.mean(), accuracy


def window_loss(model: Sam3ImageModel, heads: TrackerHeads, memory: TrackerMemory, cache: ClipCache, clip: int,
                start: int, rng: np.random.Generator, s: MemorySettings, stride: int = 1
                ) -> dict[str, torch.Tensor] | None:
    """Prompt the objects visible on frame ``start`` of clip ``clip``, track them through the
    window (every ``stride``-th frame), and return the mean losses (None if no object shows
    enough on the first frame)."""
    picked = window_frames(start, s.window, stride)
    # the tracker sees the picked frames as consecutive ones (as if the clip were filmed sparser)
    frames = range(start, start + s.window)
    clip_length = start + (cache.trunk.shape[1] - 1 - start) // stride + 1  # of that sparser clip
    masks = cache.masks[clip][picked]  # (W, K, S, S)
    first = masks[0].flatten(1).sum(1) >= MIN_PROMPT_PIXELS
    objects = torch.nonzero(first)[:, 0].tolist()
    if not objects:
        return None
    objects = [objects[i] for i in rng.permutation(len(objects))[:s.max_objects]]
    masks = masks[:, objects]
    batch, size = len(objects), model.config.image_size
    features = _frame_features(model, heads, cache.trunk[clip, picked].float())
    bank = MemoryBank()
    draw = rng.random()
    kind = "mask" if draw < s.mask_prompt_prob else ("box" if draw < s.mask_prompt_prob + s.box_prob else "click")
    totals, ious, accuracies = [], [], []
    hidden_before = torch.zeros(batch, dtype=torch.bool)
    for offset, frame_idx in enumerate(frames):
        image, (s0, s1), pos = features[offset]
        high_res = (s0.expand(batch, -1, -1, -1), s1.expand(batch, -1, -1, -1))
        target, visible = masks[offset], masks[offset].flatten(1).any(1)
        coords = labels = None
        if offset == 0 and kind == "mask":
            prompt = F.interpolate(masks[0][:, None].float(), size=(memory.config.mask_input_size,) * 2,
                                   mode="nearest")
            _, iou_scores, low, high, obj_ptr, score = mask_as_output(heads, memory, image.expand(batch, -1, -1, -1),
                                                                     high_res, prompt)
            ious.append(torch.ones(()))
        else:
            if offset == 0:
                coords, labels = _first_prompts(kind, cache.boxes[clip][start][objects], masks[0], rng, size)
                conditioned = (image + heads.no_mem_embed.reshape(1, -1, 1, 1)).expand(batch, -1, -1, -1)
            else:
                conditioned = memory.condition(image, frame_idx, bank, clip_length, image_pos=pos)
            multimask = use_multimask(0 if labels is None else labels.shape[1])
            raw = run_heads(heads, conditioned, high_res, coords, labels, None, multimask)
            # objects in an occlusion episode (hidden since the prompt, or back after hiding) weigh more
            hidden_before |= ~visible
            weight = torch.where(hidden_before, s.occlusion_weight, 1.0)
            loss, iou, accuracy = _frame_loss(raw, target, visible, multimask, s, weight)
            totals.append(loss)
            accuracies.append(accuracy)
            if iou is not None:
                ious.append(iou)
            _, iou_scores, low, high, obj_ptr, score = select_outputs(heads, memory, raw, multimask)
        mem_features, mem_pos = memory.encode(image, high, score, from_points=coords is not None)
        frame = MemoryFrame(mem_features, mem_pos, obj_ptr, score, float(memory_score(score, iou_scores).detach()))
        bank.add(frame_idx, frame, is_cond=offset == 0)
    out = {"loss": torch.stack(totals).mean(), "track_iou": torch.stack(ious[1:]).mean() if len(ious) > 1 else None,
           "score_acc": torch.stack(accuracies).mean()}
    return {k: v for k, v in out.items() if v is not None}


def train_memory(s: MemorySettings, device: torch.device | str | None = None) -> dict:
    """Run the stage; writes OUT/model.safetensors (detector, tracker heads and memory) and
    OUT/log.jsonl; returns a summary."""
    from opensam3.api import Sam3, load

    out = Path(s.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(s.seed)
    start = time.time()
    sam = load(s.init, device=device or "cpu")
    if sam.tracker is None:
        raise CheckpointError(f"{s.init} has no tracker heads: train them first (opensam3 train-interactive --init {s.init}), then pass its output to --init")
    model, heads = sam.model.float().eval(), sam.tracker.float()
    memory = sam.memory.float() if sam.memory is not None else fresh_memory(
        TrackerMemoryConfig.from_model_config(model.config)).to(next(heads.parameters()).device)
    cache = build_clip_cache(model, s.train_clips, s.data_seed, s.clip_frames, progress=s.progress)
    cache_time = time.time() - start
    model.requires_grad_(False)
    heads.requires_grad_(True).train()
    memory.requires_grad_(True).train()
    groups = param_groups(memory, s.weight_decay)
    groups += [dict(group, lr=s.lr * s.heads_lr_scale) for group in param_groups(heads, s.weight_decay)]
    rng = np.random.default_rng(s.seed)

    if s.max_stride < 1:
        raise InvalidInputError(f"--max-stride must be at least 1; got {s.max_stride}")
    # the widest stride whose window still fits in a clip
    widest = max(1, min(s.max_stride, (s.clip_frames - 1) // max(s.window - 1, 1)))
    comebacks = reappearance_windows(cache, s.window, s.max_stride)
    if s.reappear_prob > 0 and not comebacks:
        raise InvalidInputError(f"no {s.window}-frame window of the {len(cache.masks)} training clips has an object "
                                "that vanishes and returns: lengthen --window or pass --reappear-prob 0")

    def step_losses():
        if s.reappear_prob > 0 and rng.random() < s.reappear_prob:
            clip, first, stride = comebacks[int(rng.integers(len(comebacks)))]
            return window_loss(model, heads, memory, cache, clip, first, rng, s, stride)
        clip = int(rng.integers(len(cache.masks)))
        stride = int(rng.integers(1, widest + 1))
        span = stride * (s.window - 1) + 1
        return window_loss(model, heads, memory, cache, clip, int(rng.integers(s.clip_frames - span + 1)), rng, s,
                           stride)

    summary = optimise(step_losses, groups, s.lr, s.steps, s.time_budget, s.warmup, s.clip, out / "log.jsonl",
                       s.log_every, s.progress, "train-memory", postfix="track_iou")
    model.half()
    Sam3(model, tracker=heads.eval(), memory=memory.eval()).save(out / MODEL_FILE)
    return {"out": str(out / MODEL_FILE), "cache_s": round(cache_time, 1), "reappearance_windows": len(comebacks),
            **summary}


# -- held-out evaluation through the public video tracker -------------------------------------
EVAL_SEED = 21  # training clips come from seed 20


def evaluate_tracking(model, seed: int = EVAL_SEED, num_clips: int = 20, prompt: str = "mask",
                      progress: bool = False, device: torch.device | str = "cpu") -> dict:
    """Prompt every object visible on frame 0 of held-out clips (its mask, or one click at the
    point farthest from its boundary) through ``Sam3.video_tracker()``, propagate forward and
    compare with the true visible masks. Reported: mean J (mask IoU per object and frame, an
    absent object scoring 1 when predicted absent, else 0), the share of object-frames with
    IoU >= 0.5, and for the object that passes fully behind the occluder, J on the frames after it
    reappears (whether its identity survived the occlusion)."""
    from opensam3.api import load
    from opensam3.synth.clip import clip_stream
    from opensam3.train.interactive_prompts import farthest_interior_point

    sam = load(model, device=device) if not hasattr(model, "video_tracker") else model
    tracker = sam.video_tracker()
    size = sam.model.config.image_size
    scores, reappeared = [], []
    iterator = range(num_clips)
    if progress:
        from tqdm import tqdm

        iterator = tqdm(iterator, desc="eval-tracking", dynamic_ncols=True, leave=False)
    stream = clip_stream(seed, size=size)
    for _ in iterator:
        clip = next(stream)
        state = tracker.init_state(clip.frames)
        objects = [i for i in range(len(clip.objects)) if clip.masks[0, i].sum() >= MIN_PROMPT_PIXELS]
        for i in objects:
            if prompt == "mask":
                tracker.add_new_mask(state, frame_idx=0, obj_id=i, mask=clip.masks[0, i])
            else:
                tracker.add_new_points_or_box(state, frame_idx=0, obj_id=i, points=[farthest_interior_point(clip.masks[0, i])],
                                              labels=[1])
        passer = next((i for i, role in clip.roles.items() if role == "passer"), None)
        hidden_since = None
        for frame in tracker.propagate_in_video(state):
            t = frame.frame_idx
            for row, i in enumerate(frame.obj_ids):
                pred, truth = frame.masks[row].numpy(), clip.masks[t, i]
                union = (pred | truth).sum()
                j = float((pred & truth).sum() / union) if union else 1.0
                if t > 0:
                    scores.append(j)
                if i == passer:
                    if not truth.any():
                        hidden_since = t
                    elif hidden_since is not None:
                        reappeared.append(j)
        tracker.reset_state(state)
    scores = np.array(scores)
    return {"clips": num_clips, "object_frames": int(len(scores)), "mean_j": float(scores.mean()),
            "j_at_least_0.5": float((scores >= 0.5).mean()),
            "passer_after_occlusion_j": float(np.mean(reappeared)) if reappeared else None,
            "passer_after_occlusion_j_at_least_0.5": float(np.mean(np.array(reappeared) >= 0.5)) if reappeared else None,
            "passer_frames": len(reappeared)}


# -- command line (``opensam3 train-memory``) --------------------------------------------------
def add_train_memory_parser(subparsers):
    parser = subparsers.add_parser(
        "train-memory", help="train the video tracker's memory on synthetic clips (after train-interactive)",
        description="Freeze the trunk and tracker neck of a model with trained tracker heads, train the memory "
                    "encoder, memory attention and object pointers (heads fine-tuned at a lower rate) on synthetic "
                    "clips: objects prompted on a window's first frame (mask, box or click) and tracked through the "
                    "rest; save the model with its video memory as OUT/model.safetensors and evaluate tracking on "
                    "held-out clips.")
    defaults = MemorySettings(init="")
    parser.add_argument("--init", required=True, help="model with tracker heads (train-interactive output)")
    parser.add_argument("--out", default=defaults.out, help=f"output folder (default {defaults.out})")
    parser.add_argument("--steps", type=int, default=defaults.steps)
    parser.add_argument("--time-budget", type=float, default=defaults.time_budget,
                        help=f"seconds for the training loop ({defaults.time_budget:g}; 0 = run all steps)")
    parser.add_argument("--train-clips", type=int, default=defaults.train_clips)
    parser.add_argument("--window", type=int, default=defaults.window, help="frames per training window")
    parser.add_argument("--max-stride", type=int, default=defaults.max_stride,
                        help="windows take every s-th frame, s drawn from 1..MAX_STRIDE per step "
                             f"(default {defaults.max_stride}: consecutive frames)")
    parser.add_argument("--reappear-prob", type=float, default=defaults.reappear_prob,
                        help="share of steps on windows where an object is fully hidden and comes back "
                             f"(default {defaults.reappear_prob:g})")
    parser.add_argument("--occlusion-weight", type=float, default=defaults.occlusion_weight,
                        help="loss weight of an object from the frame it is first hidden on "
                             f"(default {defaults.occlusion_weight:g})")
    parser.add_argument("--lr", type=float, default=defaults.lr)
    parser.add_argument("--heads-lr-scale", type=float, default=defaults.heads_lr_scale)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--eval-clips", type=int, default=20, help="held-out clips to evaluate (0 = skip)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--no-progress", action="store_true")
    parser.set_defaults(func=run_train_memory)
    return parser


def run_train_memory(args) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = MemorySettings(init=args.init, out=args.out, steps=args.steps, time_budget=args.time_budget or None,
                              train_clips=args.train_clips, window=args.window, max_stride=args.max_stride,
                              reappear_prob=args.reappear_prob,
                              occlusion_weight=args.occlusion_weight,
                              lr=args.lr,
                              heads_lr_scale=args.heads_lr_scale, seed=args.seed, progress=not args.no_progress)
    summary = train_memory(settings, device=args.device)
    if args.eval_clips:
        start = time.time()
        summary["eval"] = {prompt: evaluate_tracking(summary["out"], num_clips=args.eval_clips, prompt=prompt,
                                                     progress=settings.progress, device=args.device)
                           for prompt in ("mask", "click")}
        summary["eval_s"] = round(time.time() - start, 1)
        (Path(settings.out) / "eval.json").write_text(json.dumps(summary["eval"], indent=1))
    print(json.dumps(summary))
    return 0
