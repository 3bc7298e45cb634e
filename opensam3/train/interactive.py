"""Second training stage: the interactive (point / box / mask prompt) tracker path.

The detector, trunk included, stays as trained; what learns is the tracker neck (the second
FPN over the same ViT trunk, initialised from the detector's neck) and the SAM 2 style heads
(prompt encoder, mask decoder, no-memory embedding), sized by
``TrackerHeadsConfig.from_model_config``. The trunk is frozen, so its output is computed once
per training scene and each step only runs the neck and the heads.

Recipe (SAM's): per object a first prompt (a positive click, uniform inside the object or at
its centre, or a jittered box), then corrective clicks sampled in the error region of the
previous prediction (positive on missed pixels, negative on wrong ones) with the previous
low-res logits fed back as the mask prompt. Losses: focal (20) + dice (1) on the mask, MSE
between predicted and actual IoU; a single click is ambiguous, so it gets three masks and only
the lowest-loss one is trained. AdamW with warm-up + cosine; the step count is cut to fit a
time budget. The result (detector + tracker neck + heads) loads with ``opensam3.load``.

    opensam3 train-interactive --init runs/embedded/model.safetensors --out runs/interactive

From scratch the heads first sit on a plateau (every mask empty) for a few hundred steps before
prompts start to steer them (higher learning rates stay stuck longer); ``--tracker-from`` starts
from the tracker neck and heads of an earlier run instead (they carry over to a newer detector
snapshot), which skips the plateau and continues training.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from opensam3.checkpoint import load_into, read_checkpoint, split_checkpoint
from opensam3.config import Sam3Config
from opensam3.data.image_io import preprocess
from opensam3.errors import CheckpointError
from opensam3.model.sam3 import Sam3ImageModel
from opensam3.model.tracker.config import TrackerHeadsConfig
from opensam3.model.tracker.heads import TrackerHeads, tracker_image_state
from opensam3.model.tracker.prompt_encoder import BOX_BOTTOM_RIGHT, BOX_TOP_LEFT
from opensam3.synth.render import mask_boxes
from opensam3.train.interactive_prompts import corrective_clicks, farthest_interior_point, jittered_box
from opensam3.train.loop import optimise
from opensam3.train.optim import param_groups
from opensam3.train.zoom_views import zoomed_view

MODEL_FILE = "model.safetensors"
_TRACKER_NECK = "backbone.vision_backbone.sam2_convs."


@dataclass
class InteractiveSettings:
    init: str
    out: str = "runs/interactive"
    tracker_from: str | None = None     # warm start: tracker neck + heads of an earlier combined model
    steps: int = 20000                  # upper bound; the time budget usually decides
    time_budget: float | None = 1140.0  # seconds for the optimisation loop (None = run all steps)
    train_scenes: int = 1000
    # share of the training entries that are zoom windows around a small object, the views the
    # predictor's second look encodes (0: whole scenes only)
    zoom_share: float = 0.0
    images_per_step: int = 4
    objects_per_image: int = 8
    clicks: int = 1                     # corrective iterations after the first prompt
    box_prob: float = 0.5               # first prompt is a box (else one positive click)
    center_prob: float = 0.3            # a first click at the object's centre (else uniform inside)
    # with 4 images a step (2026-11-30): 1e-3 leaves the empty-mask plateau after ~300 steps,
    # 2e-3 was still on it after 600 (box IoU 0.11); dice alone (focal_weight=0) stayed near 0.2
    lr: float = 1e-3
    neck_lr_scale: float = 0.1          # the tracker neck starts as the trained detector neck
    # ... with its outputs scaled down: the official neck's features are about as large as the
    # decoder's position encodings; the detector neck's are ~3x larger, which slows learning
    neck_init_scale: float = 0.25
    # the ViT trunk is frozen by default (its output cached); > 0 trains it too at this share of
    # the head rate, with ``trunk_keep_weight`` x the normalised squared distance of its output to
    # the frozen trunk's, which keeps the detector (it reads the same trunk) close to its training
    trunk_lr_scale: float = 0.0
    trunk_keep_weight: float = 1.0
    weight_decay: float = 0.01
    warmup: int = 100
    clip: float = 1.0
    focal_weight: float = 20.0
    dice_weight: float = 1.0
    iou_weight: float = 1.0
    seed: int = 0
    data_seed: int = 10                 # synthetic training scenes (the detector used seeds 0 and 1)
    log_every: int = 10
    progress: bool = True


def with_tracker_neck(config: Sam3Config) -> Sam3Config:
    return config.replace(vision=dataclasses.replace(config.vision, tracker_neck=True))


def load_for_interactive(init: str | Path, neck_init_scale: float = 1.0, tracker_from: str | Path | None = None
                         ) -> tuple[Sam3ImageModel, TrackerHeads]:
    """The detector of ``init`` with a tracker neck (its own if the file has one, else a copy of
    the detector neck with its outputs scaled by ``neck_init_scale``) and tracker heads (loaded if
    present, else freshly initialised). ``tracker_from``: take the tracker neck and heads from
    this combined checkpoint instead (a warm start from a run on an earlier detector)."""
    from opensam3.api import _metadata_config, infer_config, resolve_checkpoint

    path = resolve_checkpoint(init)
    state = split_checkpoint(read_checkpoint(path))
    config = with_tracker_neck(_metadata_config(path) or infer_config(state.detector))
    model = Sam3ImageModel(config)
    expected = model.state_dict()
    missing = sorted(k for k in expected if k not in state.detector)
    unexpected = sorted(k for k in state.detector if k not in expected)
    if unexpected or any(not k.startswith(_TRACKER_NECK) for k in missing):
        raise CheckpointError(f"{path} does not fit {config.name}: missing {missing[:5]}, unexpected {unexpected[:5]}")
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.detector.items()}, strict=False)
    neck = model.backbone.vision_backbone
    if missing:
        neck.sam2_convs.load_state_dict(neck.convs.state_dict())
        with torch.no_grad():
            for level in neck.sam2_convs:
                level.conv_3x3.weight.mul_(neck_init_scale)
                level.conv_3x3.bias.mul_(neck_init_scale)
    heads = TrackerHeads(TrackerHeadsConfig.from_model_config(config))
    if tracker_from is not None:
        donor = split_checkpoint(read_checkpoint(resolve_checkpoint(tracker_from)))
        neck_state = {k[len(_TRACKER_NECK):]: v.float() for k, v in donor.detector.items() if k.startswith(_TRACKER_NECK)}
        if not neck_state or not donor.tracker:
            raise CheckpointError(f"{tracker_from} has no tracker neck and heads to start from")
        load_into(neck.sam2_convs, neck_state, f"{tracker_from} (tracker neck)")
        state.tracker = donor.tracker
    if state.tracker:
        load_into(heads, {k: v.float() for k, v in tracker_image_state(state.tracker).items()}, "tracker checkpoint")
    return model.eval(), heads


@dataclass
class SceneCache:
    """Frozen trunk outputs (N, D, g, g) float16 (on the model's device) and per scene the visible
    masks (K, S, S) bool, tight boxes (K, 4) and centre clicks (K, 2) (the point farthest from the
    boundary); masks, boxes and clicks stay on the CPU, where the prompts are sampled."""

    trunk: torch.Tensor
    masks: list[torch.Tensor]
    boxes: list[np.ndarray]
    centers: list[np.ndarray]
    pixels: torch.Tensor | None = None  # (N, 3, S, S) float16 model inputs, kept when the trunk trains


@torch.inference_mode()
def build_cache(model: Sam3ImageModel, num_scenes: int, seed: int, batch: int = 16, progress: bool = False,
                keep_pixels: bool = False, zoom_share: float = 0.0) -> SceneCache:
    """zoom_share: the share of entries that are zoom windows around a small object of a scene
    (``zoom_views.zoomed_view``) instead of the whole scene."""
    from opensam3.synth import scene_stream

    cfg = model.config
    stream = scene_stream(seed, size=cfg.image_size)
    trunk = model.backbone.vision_backbone.trunk
    weight = next(trunk.parameters())  # the pixels go where the trunk is, in its dtype
    views = np.random.default_rng([seed, 1])  # which entries are zoom windows, and where
    chunks, masks, boxes, centers, inputs = [], [], [], [], []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=num_scenes, desc="caching trunk", dynamic_ncols=True, leave=False)
    while len(masks) < num_scenes:
        entries = []  # (image, masks (K, S, S) bool, boxes (K, 4))
        while len(entries) < min(batch, num_scenes - len(masks)):
            scene = next(stream)
            if not len(scene.objects):
                continue
            view = zoomed_view(scene.image, scene.masks, views, cfg.image_size) if views.random() < zoom_share else None
            if view is not None:
                entries.append((view[0], view[1], mask_boxes(view[1].numpy())))
            else:
                entries.append((scene.image, torch.from_numpy(scene.masks), scene.boxes.astype(np.float32)))
        pixels = preprocess([e[0] for e in entries], cfg.image_size, cfg.pixel_mean, cfg.pixel_std,
                            device=weight.device, dtype=weight.dtype)
        chunks.append(trunk(pixels).to(torch.float16))
        if keep_pixels:
            inputs.append(pixels.to(torch.float16))
        for _, entry_masks, entry_boxes in entries:
            masks.append(entry_masks)
            boxes.append(entry_boxes)
            centers.append(np.array([farthest_interior_point(m) for m in entry_masks], dtype=np.float32))
        if bar is not None:
            bar.update(len(entries))
    if bar is not None:
        bar.close()
    return SceneCache(torch.cat(chunks), masks, boxes, centers, torch.cat(inputs) if keep_pixels else None)


def _focal(logits: torch.Tensor, targets: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0) -> torch.Tensor:
    """(n, k, H, W) -> (n, k) mean sigmoid focal loss per mask."""
    prob = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = prob * targets + (1 - prob) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma * (alpha * targets + (1 - alpha) * (1 - targets))
    return loss.flatten(2).mean(-1)


def _dice(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    prob = logits.sigmoid().flatten(2)
    targets = targets.flatten(2)
    return 1 - (2 * (prob * targets).sum(-1) + 1) / (prob.sum(-1) + targets.sum(-1) + 1)


def mask_terms(low_res: torch.Tensor, target: torch.Tensor, s: InteractiveSettings):
    """low_res (n, k, L, L) logits, target (n, S, S) bool -> per-mask loss (n, k), actual IoU
    (n, k) of the thresholded upsampled masks, and the upsampled logits (n, k, S, S)."""
    size = target.shape[-1]
    up = F.interpolate(low_res, size=(size, size), mode="bilinear", align_corners=False)
    t = target[:, None].float().expand_as(up)
    loss = s.focal_weight * _focal(up, t) + s.dice_weight * _dice(up, t)
    with torch.no_grad():
        pred = up > 0
        inter = (pred & target[:, None]).flatten(2).sum(-1).float()
        union = (pred | target[:, None]).flatten(2).sum(-1).float()
        iou = torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))
    return loss, iou, up


def _decode(heads: TrackerHeads, image, high_res, coords, labels, mask_in):
    sparse, dense = heads.sam_prompt_encoder(coords, labels, mask_in)
    pe = heads.sam_prompt_encoder.dense_positions()
    out = heads.sam_mask_decoder.predict_all(image, pe, sparse, dense, high_res)
    return out.masks, out.iou_scores  # every token: single-mask first, then the multimask ones


def interactive_loss(model: Sam3ImageModel, heads: TrackerHeads, cache: SceneCache, images: list[int],
                     rng: np.random.Generator, gen: torch.Generator, s: InteractiveSettings) -> dict[str, torch.Tensor]:
    """The losses of one step on the cached scenes ``images``. Everything runs on the tracker
    neck's device; prompts are sampled on the CPU (``rng``, and ``gen`` on its own device) and
    moved there, so a given seed picks the same prompts on every device."""
    neck = model.backbone.vision_backbone
    weight = next(neck.sam2_convs.parameters())
    frozen = cache.trunk[images].to(device=weight.device, dtype=weight.dtype)
    keep = None
    if cache.pixels is not None and s.trunk_lr_scale > 0:
        trunk_out = neck.trunk(cache.pixels[images].to(device=weight.device, dtype=weight.dtype))
        # squared distance to the frozen output relative to that output's own power
        keep = (trunk_out - frozen).pow(2).mean() / frozen.pow(2).mean()
    else:
        trunk_out = frozen
    with torch.set_grad_enabled(torch.is_grad_enabled() and (s.neck_lr_scale > 0 or keep is not None)):
        levels, _ = neck.tracker_levels(trunk_out, 3)
    embedding = heads.embed_image(levels)
    device = embedding.image.device
    size = model.config.image_size
    rows, targets, first = [], [], []
    for row, index in enumerate(images):
        count = cache.masks[index].shape[0]
        for obj in rng.permutation(count)[:s.objects_per_image]:
            rows.append(row)
            targets.append(cache.masks[index][obj])
            if rng.random() < s.box_prob:
                first.append(("box", jittered_box(cache.boxes[index][obj], rng, size)))
            elif rng.random() < s.center_prob:
                first.append(("point", cache.centers[index][obj]))
            else:
                ys, xs = torch.nonzero(cache.masks[index][obj], as_tuple=True)
                pick = int(rng.integers(len(xs)))
                first.append(("point", np.array([int(xs[pick]), int(ys[pick])], dtype=np.float32)))
    totals = {"mask": 0.0, "iou": 0.0}
    count = 0
    first_iou = {}  # actual IoU of the first prompt's output (the chosen one), for the log
    for kind in ("point", "box"):
        members = [i for i, (k, _) in enumerate(first) if k == kind]
        if not members:
            continue
        pick = torch.tensor([rows[i] for i in members], device=device)
        image = embedding.image.index_select(0, pick)
        high_res = tuple(level.index_select(0, pick) for level in embedding.high_res)
        target = torch.stack([targets[i] for i in members]).to(device)
        prompts = torch.from_numpy(np.stack([first[i][1] for i in members])).to(device)
        if kind == "point":
            coords = prompts[:, None]
            labels = torch.ones(len(members), 1, dtype=torch.long, device=device)
        else:
            coords = prompts.reshape(-1, 2, 2)
            labels = torch.tensor([[BOX_TOP_LEFT, BOX_BOTTOM_RIGHT]], device=device).expand(len(members), 2)
        mask_in = None
        for step in range(1 + s.clicks):
            masks, iou_pred = _decode(heads, image, high_res, coords, labels, mask_in)
            n = len(members)
            if step == 0:
                # the three multimask outputs, lowest loss trained (for a box as well: they are the
                # predictor's fallback for an unstable single mask)
                loss, iou, up = mask_terms(masks[:, 1:], target, s)
                best = loss.argmin(dim=1)
                mask_loss = loss[torch.arange(n, device=device), best]
                iou_loss = F.mse_loss(iou_pred[:, 1:], iou, reduction="none").mean(1)
                chosen = iou_pred[:, 1:].detach().argmax(dim=1) + 1
                if kind == "box":
                    single, single_iou, single_up = mask_terms(masks[:, :1], target, s)
                    mask_loss = mask_loss + single[:, 0]
                    iou_loss = iou_loss + F.mse_loss(iou_pred[:, 0], single_iou[:, 0], reduction="none")
                    chosen = torch.zeros_like(chosen)
                    up = torch.cat((single_up, up), dim=1)
                else:
                    up = torch.cat((up[:, :1], up), dim=1)  # index by token (0 unused here)
            else:
                loss, iou, up = mask_terms(masks[:, :1], target, s)
                mask_loss, iou_loss = loss[:, 0], F.mse_loss(iou_pred[:, 0], iou[:, 0], reduction="none")
                chosen = torch.zeros(n, dtype=torch.long, device=device)
            if step == 0:
                first_iou[kind] = single_iou[:, 0] if kind == "box" else iou[torch.arange(n, device=device), chosen - 1]
            totals["mask"] = totals["mask"] + mask_loss.sum()
            totals["iou"] = totals["iou"] + iou_loss.sum()
            count += n
            if step == s.clicks:
                break
            ar = torch.arange(n, device=device)
            mask_in = masks[ar, chosen][:, None].detach()
            pred = up[ar, chosen].detach() > 0
            xy, click = corrective_clicks(pred, target, gen)
            coords = torch.cat((coords, xy[:, None]), dim=1)
            labels = torch.cat((labels, click[:, None]), dim=1)
    out = {k: v / count for k, v in totals.items()}
    out["loss"] = out["mask"] + s.iou_weight * out["iou"]
    if keep is not None:
        out["trunk_keep"] = keep
        out["loss"] = out["loss"] + s.trunk_keep_weight * keep
    for kind, values in first_iou.items():
        out[f"{kind}_iou"] = values.float().mean()
    return out


def trainable_modules(model: Sam3ImageModel, heads: TrackerHeads, train_neck: bool = True,
                      train_trunk: bool = False) -> nn.Module:
    """The tracker neck levels the heads use (unless ``train_neck`` is False), the heads and,
    with ``train_trunk``, the ViT trunk; freezes everything else."""
    model.requires_grad_(False)
    neck = model.backbone.vision_backbone.sam2_convs
    used = model.config.vision.used_levels
    for level in list(neck)[:used]:
        level.requires_grad_(train_neck)
    heads.requires_grad_(True)
    trunk = model.backbone.vision_backbone.trunk
    trunk.requires_grad_(train_trunk)
    return nn.ModuleDict({"neck": nn.ModuleList(list(neck)[:used]), "heads": heads, "trunk": trunk})


def train_interactive(s: InteractiveSettings, device: torch.device | str | None = None) -> dict:
    """Run the stage; writes OUT/model.safetensors and OUT/log.jsonl; returns a summary.

    device: where the model, the heads and the trunk cache live (None: the CPU, where
    ``load_for_interactive`` builds them). Prompt sampling stays on the CPU with the same seeded
    generators, so a seed draws the same prompts on every device."""
    from opensam3.api import Sam3, load

    out = Path(s.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(s.seed)
    start = time.time()
    model, heads = load_for_interactive(s.init, s.neck_init_scale, s.tracker_from)
    if device is not None:
        model, heads = model.to(device), heads.to(device)
    train_trunk = s.trunk_lr_scale > 0
    cache = build_cache(model, s.train_scenes, s.data_seed, progress=s.progress, keep_pixels=train_trunk,
                        zoom_share=s.zoom_share)
    cache_time = time.time() - start
    trainable = trainable_modules(model, heads, train_neck=s.neck_lr_scale > 0, train_trunk=train_trunk)
    trainable.train()
    groups = param_groups(trainable["heads"], s.weight_decay)
    if s.neck_lr_scale > 0:
        groups += [dict(group, lr=s.lr * s.neck_lr_scale) for group in param_groups(trainable["neck"], s.weight_decay)]
    if train_trunk:
        groups += [dict(group, lr=s.lr * s.trunk_lr_scale) for group in param_groups(trainable["trunk"], s.weight_decay)]
    rng = np.random.default_rng(s.seed)
    gen = torch.Generator().manual_seed(s.seed)

    def step_losses():
        images = rng.choice(len(cache.masks), size=min(s.images_per_step, len(cache.masks)), replace=False).tolist()
        return interactive_loss(model, heads, cache, images, rng, gen, s)

    summary = optimise(step_losses, groups, s.lr, s.steps, s.time_budget, s.warmup, s.clip, out / "log.jsonl",
                       s.log_every, s.progress, "train-interactive", postfix="iou")
    # the detector (tracker neck included) in float16 like the detector export; heads in float32
    model.half()
    # a video memory in the starting model is kept (unchanged: it was trained with the old heads,
    # so after a long run train-memory should follow)
    memory = load(s.tracker_from or s.init, device="cpu").memory
    Sam3(model, tracker=heads.eval(), memory=memory).save(out / MODEL_FILE)
    return {"out": str(out / MODEL_FILE), "cache_s": round(cache_time, 1), "memory_kept": memory is not None,
            **summary}


# -- command line (``opensam3 train-interactive``) ---------------------------------------------
def add_train_interactive_parser(subparsers):
    parser = subparsers.add_parser(
        "train-interactive", help="train the point/box/mask-prompt tracker heads on top of a trained detector",
        description="Freeze a trained detector (ViT trunk included), train the tracker neck and SAM 2 style heads "
                    "on the synthetic shapes world (clicks, jittered boxes, corrective clicks with the previous mask "
                    "fed back; focal + dice + IoU losses), save detector + tracker as OUT/model.safetensors "
                    "(opensam3.load reads it) and evaluate single-click / box IoU on held-out scenes.")
    defaults = InteractiveSettings(init="")
    parser.add_argument("--init", required=True, help="trained detector checkpoint (.safetensors / .pt)")
    parser.add_argument("--out", default=defaults.out, help=f"output folder (default {defaults.out})")
    parser.add_argument("--tracker-from", help="warm start: take the tracker neck and heads from this combined model "
                        "(e.g. a run on an earlier detector snapshot); the detector comes from --init")
    parser.add_argument("--steps", type=int, default=defaults.steps, help=f"max optimizer steps ({defaults.steps})")
    parser.add_argument("--time-budget", type=float, default=defaults.time_budget,
                        help=f"seconds for the training loop; the schedule is cut to fit ({defaults.time_budget:g}; "
                             "0 = run all steps)")
    parser.add_argument("--train-scenes", type=int, default=defaults.train_scenes)
    parser.add_argument("--data-seed", type=int, default=defaults.data_seed,
                        help=f"seed of the synthetic training scenes (default {defaults.data_seed}; evaluation uses 11)")
    parser.add_argument("--zoom-share", type=float, default=defaults.zoom_share,
                        help="share of training entries that are zoom windows around a small object, as the "
                             f"predictor's second look sees them (default {defaults.zoom_share:g}: whole scenes)")
    parser.add_argument("--images-per-step", type=int, default=defaults.images_per_step)
    parser.add_argument("--objects-per-image", type=int, default=defaults.objects_per_image)
    parser.add_argument("--clicks", type=int, default=defaults.clicks, help="corrective clicks per object")
    parser.add_argument("--focal-weight", type=float, default=defaults.focal_weight,
                        help=f"mask focal loss weight (dice weight 1; default {defaults.focal_weight:g})")
    parser.add_argument("--lr", type=float, default=defaults.lr, help=f"peak learning rate of the heads ({defaults.lr:g})")
    parser.add_argument("--neck-lr-scale", type=float, default=defaults.neck_lr_scale,
                        help=f"tracker-neck learning rate / head learning rate ({defaults.neck_lr_scale:g})")
    parser.add_argument("--trunk-lr-scale", type=float, default=defaults.trunk_lr_scale,
                        help="train the ViT trunk too, at this share of the head learning rate (default 0: frozen); "
                             "the detector reads the same trunk, so re-check it afterwards")
    parser.add_argument("--trunk-keep-weight", type=float, default=defaults.trunk_keep_weight,
                        help="weight of the trunk output's normalised squared distance to the frozen trunk "
                             f"(keeps the detector close; default {defaults.trunk_keep_weight:g})")
    parser.add_argument("--warmup", type=int, default=defaults.warmup)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--eval-scenes", type=int, default=200, help="held-out scenes to evaluate (0 = skip)")
    parser.add_argument("--device", default="cpu", help="torch device for training and evaluation (default cpu)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--no-progress", action="store_true")
    parser.set_defaults(func=run_train_interactive)
    return parser


def run_train_interactive(args) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = InteractiveSettings(
        init=args.init, out=args.out, tracker_from=args.tracker_from, steps=args.steps, time_budget=args.time_budget or None,
        train_scenes=args.train_scenes, data_seed=args.data_seed, zoom_share=args.zoom_share, images_per_step=args.images_per_step,
        objects_per_image=args.objects_per_image, clicks=args.clicks, focal_weight=args.focal_weight, lr=args.lr,
        neck_lr_scale=args.neck_lr_scale, trunk_lr_scale=args.trunk_lr_scale,
        trunk_keep_weight=args.trunk_keep_weight, warmup=args.warmup, seed=args.seed,
        progress=not args.no_progress)
    summary = train_interactive(settings, device=args.device)
    if args.eval_scenes:
        from opensam3.train.interactive_eval import evaluate_interactive

        start = time.time()
        summary["eval"] = evaluate_interactive(summary["out"], num_scenes=args.eval_scenes,
                                               progress=settings.progress, device=args.device)
        summary["eval_s"] = round(time.time() - start, 1)
        (Path(settings.out) / "eval.json").write_text(json.dumps(summary["eval"], indent=1))
    print(json.dumps(summary))
    return 0
