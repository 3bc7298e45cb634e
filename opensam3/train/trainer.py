"""The training loop: batches -> losses -> AdamW step, with checkpoints, resume, logs and eval.

Everything a resumed run needs is a function of the step number (the batch order, see
``data.batch_indices``) or is saved in ``train_state.pt`` (weights, optimizer moments,
scheduler, RNG), so stopping and resuming gives the same losses as an uninterrupted run.

Outputs in ``out``: ``model.safetensors`` (opensam3.load reads it; config in the metadata),
``train_state.pt`` (resume), ``log.jsonl`` (one line per logged step or evaluation).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from opensam3.api import Sam3
from opensam3.config import architecture_differences, config_from_dict, config_to_dict, get_config
from opensam3.errors import InvalidInputError
from opensam3.model.sam3 import ImageFeatures, Sam3ImageModel
from opensam3.model.detector.scoring import masked_mean
from opensam3.train.auxiliary import (AttributeHeads, AttributeMaps, ObjectPhraseAlignment, PhraseAlignment,
                                      QueryAttributeHeads, SceneObjects, binary_auc, phrase_object_targets,
                                      pool_objects)
from opensam3.train.data import (Batch, SacoDataset, batch_indices, collate, find_images_dir, find_split,
                                 grouped_batch_indices)
from opensam3.train.calibrate import DEFAULT_QUERY_OFFSETS, Calibration, calibrate_presence
from opensam3.train.denoise import denoise_loss, make_denoise_queries
from opensam3.train.init import init_box_attention_focus
from opensam3.train.losses import LossWeights, SetCriterion, flat_indices, instance_union
from opensam3.train.model_io import carried_tracker, export_model, load_init_model, starting_model
from opensam3.train.optim import build_optimizer
from opensam3.train.tracker_anchor import TrackerNeckAnchor

MODEL_FILE = "model.safetensors"
STATE_FILE = "train_state.pt"
PRETRAIN_STATE_FILE = "pretrain_state.pt"  # the state when encoder pre-training ends (kept)
LOG_FILE = "log.jsonl"
EVAL_KEYS = {"cgF1": "cgF1", "IL_MCC": "IL_MCC", "pmF1": "positive_micro_F1"}


@dataclass
class TrainSettings:
    config: str = "embedded"
    data: str | None = None           # dataset folder (train.json [+ val.json]) or a train JSON file
    val: str | None = None            # held-out JSON (default: the folder's val/test split)
    out: str = "runs/train"
    init: str | None = None           # weights to fine-tune from (else random init)
    steps: int = 4000
    batch_size: int = 8
    lr: float = 1e-4
    weight_decay: float = 0.1
    warmup: int = 200
    min_lr_ratio: float = 0.01
    clip: float = 0.1                 # max gradient norm (SAM 3 clips at 0.1); 0 = off
    exemplar_prob: float = 0.2        # fraction of positive pairs that also get one exemplar box
    pairs_per_image: int = 1          # phrases asked of each image in a step (>1: images encoded once)
    attribute_weight: float = 0.0     # dense attribute loss weight, when the data has scene records
    alignment_weight: float = 0.0     # phrase-pixel alignment loss weight (train/auxiliary.py)
    pretrain_steps: int = 0           # first steps: encoders only, through the auxiliary losses
    dac: bool = False                 # SAM 3's one-to-many query copy (DAC), supervised with o2m matching
    denoise: bool = False             # denoising queries at jittered boxes of recorded objects (train/denoise.py)
    box_focus: float = 0.0            # from scratch: start the decoder's box attention bias as "look inside
                                      # the box" with this strength (train/init.py); 0 = PyTorch's default
    log_every: int = 10
    save_every: int = 250
    eval_every: int = 500             # 0 = only at the end
    eval_pairs: int = 200             # held-out pairs per periodic evaluation (0 = all)
    final_eval_pairs: int = 0         # held-out pairs of the evaluation after the last step (0 = all)
    time_limit: float | None = None   # seconds; stop (and save) when exceeded
    seed: int = 0
    calibrate: bool = False           # after the last step, fit the score offsets (train/calibrate.py)
    calibration: str | None = None    # its SA-Co JSON (default: the data folder's calib split)
    save_dtype: str = "float32"       # the exported model's parameter dtype (float16 halves the file)
    freeze_trunk: bool = False        # fine-tuning: keep the ViT trunk as it is (what a model's click / box head
                                      # and video memory were trained on); its outputs are computed once per image
    tracker_anchor: float = 0.0       # fine-tuning the trunk of a model with a tracker neck: weight of the loss that
                                      # holds the tracker neck's output where --init had it (train/tracker_anchor.py)
    tracker_anchor_from: str | None = None  # hold it where this file has it instead (the model the heads were
                                            # trained with, so successive fine-tunes do not drift away from it)
    progress: bool = True
    loss_weights: LossWeights = field(default_factory=LossWeights)


# With a frozen trunk, trunk outputs kept in memory (the embedded model's 4000 training images
# take 0.8 GB; one full-size image takes 21 MB).
TRUNK_CACHE_BYTES = 4 * 1024 ** 3

# Weight of the per-pixel attribute heads next to the per-object ones (which teach shape).
DENSE_ATTRIBUTE_SHARE = 0.3

# Per-config recipes: defaults a config gets unless given explicitly. The embedded model
# trains from scratch, so it wants a higher learning rate and looser clipping than fine-tuning,
# and fp16 export keeps its file (mostly the 49408-row token table) under 40 MB.
RECIPES: dict[str, dict] = {
    # 2400 encoder pre-training steps of 8 images, then 6000 detector steps of 2 images x 4 phrases:
    # 0.72 and 0.69-0.77 s per step on 2 threads (2026-11-29); as one command, rendering, evaluations
    # and calibration included, 1 h 45 min on this 2-core machine (2026-11-30). The time limit stops
    # training early rather than overrun 2 hours on a slower machine
    # Mask losses at 6x the default weights: from the same step-8400 state and schedule, 1600 steps
    # with 1x / 3x / 6x gave the best query's mask IoU on instances of two- and three-plus-instance
    # phrases 0.58 / 0.42, 0.68 / 0.52, 0.72 / 0.55 and held-out pmF1 0.159, 0.183, 0.217 (2026-11-30)
    "embedded": dict(steps=8400, pretrain_steps=2400, lr=7e-4, weight_decay=0.05, warmup=200, clip=1.0,
                     time_limit=6700.0, eval_every=1000, save_dtype="float16", pairs_per_image=4, attribute_weight=2.0,
                     alignment_weight=5.0, denoise=True, box_focus=20.0, calibrate=True,
                     loss_weights=dict(mask=1200.0, dice=60.0)),
}


def settings_for(config: str, **overrides) -> TrainSettings:
    """TrainSettings with the config's recipe, then ``overrides`` (None values are ignored).
    ``loss_weights`` (a dict of some weights, or a LossWeights) merges weight by weight."""
    recipe = dict(RECIPES.get(config, {}))
    given = {k: v for k, v in overrides.items() if v is not None}
    weights = {**recipe.pop("loss_weights", {})}
    extra = given.pop("loss_weights", {})
    weights.update(asdict(extra) if isinstance(extra, LossWeights) else extra)
    return TrainSettings(config=config, **{**recipe, **given}, loss_weights=LossWeights(**weights))


def _resolve_data(settings: TrainSettings) -> tuple[Path, Path | None]:
    if not settings.data:
        raise InvalidInputError("no training data: pass --data DIR (an SA-Co-style folder with train.json) "
                                "or --data FILE.json")
    data = Path(settings.data).expanduser()
    if not data.exists():
        raise InvalidInputError(f"training data not found: {data}")
    if data.is_file():
        train = data
        val = find_split(data.parent, "val")
    else:
        train = find_split(data, "train")
        if train is None:
            raise InvalidInputError(f"{data} has no train.json (or annotations/train.json); an SA-Co-style "
                                    f"dataset folder needs one")
        val = find_split(data, "val")
    if val == train:
        val = None  # a lone JSON found as both splits is training data
    if settings.val:
        val = Path(settings.val).expanduser()
        if not val.is_file():
            raise InvalidInputError(f"held-out annotation file not found: {val}")
    return train, val


def _resolve_calibration(settings: TrainSettings) -> Path | None:
    """The calibration split (None when calibration is off); it must be neither split above."""
    if not settings.calibrate:
        return None
    if settings.calibration:
        path = Path(settings.calibration).expanduser()
        if not path.is_file():
            raise InvalidInputError(f"calibration annotation file not found: {path}")
        return path
    data = Path(settings.data).expanduser()
    path = find_split(data if data.is_dir() else data.parent, "calib")
    if path is None or path in _resolve_data(settings):
        raise InvalidInputError(f"--calibrate needs a calibration split that is neither the training nor the "
                                f"held-out data: put one in {data}/calib/ or pass --calibration FILE.json "
                                f"(or --no-calibrate)")
    return path


class Trainer:
    def __init__(self, settings: TrainSettings, model: Sam3ImageModel | None = None,
                 init_tracker: Sequence[nn.Module] | None = None):
        """``model``: the image model to train (default: ``starting_model``'s). ``init_tracker``:
        the tracker parts the export carries when the caller has already read ``settings.init``
        (``starting_model`` gives both), so it is not read twice."""
        self.settings = settings
        self.out = Path(settings.out).expanduser()
        if model is None:
            model, init_tracker = starting_model(settings, get_config(settings.config))
        if settings.box_focus > 0 and not settings.init:
            init_box_attention_focus(model, settings.box_focus)
        # channels-last roughly halves the convolutions' time on CPU (the mask head's pixel
        # decoder dominates a step); exported weights are made contiguous again
        self.model = model.train().to(memory_format=torch.channels_last)
        self._trunk_maps: dict[str, torch.Tensor] = {}  # frozen / starting trunk: file name -> (D, g, g) output
        self._trunk_bytes = 0
        if settings.freeze_trunk:
            self.model.backbone.vision_backbone.trunk.requires_grad_(False)
        self.anchor = None
        if settings.tracker_anchor_from and not settings.tracker_anchor > 0:
            raise InvalidInputError("--tracker-anchor-from names where to hold the tracker neck; give its weight "
                                    "with --tracker-anchor WEIGHT (> 0)")
        if settings.tracker_anchor > 0:
            if settings.freeze_trunk:
                raise InvalidInputError("--tracker-anchor holds the tracker neck while the trunk trains; with "
                                        "--freeze-trunk the trunk does not train: drop one of the two")
            # load_init_model refuses a file of another architecture; the anchor, one without a tracker neck
            start = load_init_model(settings.tracker_anchor_from, self.model.config) \
                if settings.tracker_anchor_from else self.model
            self.anchor = TrackerNeckAnchor(start.backbone.vision_backbone, self.model.config.vision.used_levels)
        self.carried_tracker = carried_tracker(settings, self.model.config, init_tracker)
        train_path, self.val_path = _resolve_data(settings)
        self.calibration_path = _resolve_calibration(settings)
        self.train_set = SacoDataset(train_path, self.model.config, exemplar_prob=settings.exemplar_prob)
        self.criterion = SetCriterion(settings.loss_weights)
        self.attribute_maps = self.attribute_heads = self.query_heads = None
        if settings.attribute_weight > 0:
            self.attribute_maps = AttributeMaps.from_annotation(train_path, self.train_set.mask_size)
        if self.attribute_maps is not None:
            device = next(self.model.parameters()).device
            self.attribute_heads = AttributeHeads(self.model.config.detector.d_model,
                                                  self.attribute_maps.num_classes()).to(device)
            # objects are pooled on the level the detector reads (stride = patch size)
            self.object_level = self.model.config.vision.scale_factors.index(1.0)
            self.query_heads = QueryAttributeHeads(self.model.config.detector.d_model,
                                                   self.attribute_maps.num_classes()).to(device)
        # phrase alignment: per object when the data records its objects, else per pixel
        self.alignment = self.object_alignment = None
        if settings.alignment_weight > 0:
            device = next(self.model.parameters()).device
            dim = self.model.config.detector.d_model
            if self.attribute_maps is not None:
                self.object_alignment = ObjectPhraseAlignment(dim).to(device)
            else:
                self.alignment = PhraseAlignment(dim).to(device)
        trained = torch.nn.ModuleList([self.model] + [m for m in (self.attribute_heads, self.query_heads,
                                                                  self.alignment, self.object_alignment) if m])
        if settings.pretrain_steps and self.attribute_heads is None and self.alignment is None:
            raise InvalidInputError("--pretrain-steps trains the encoders through the auxiliary losses: give "
                                    "--alignment-weight (any data) or --attribute-weight (data with scene records)")
        self.optimizer, self.scheduler = build_optimizer(trained, settings.lr, settings.weight_decay,
                                                         settings.steps, settings.warmup, settings.min_lr_ratio,
                                                         first_stage=settings.pretrain_steps)
        self.step = 0
        self.history: list[dict] = []
        if (self.out / STATE_FILE).is_file():
            self.load_state(self.out / STATE_FILE)

    # -- one step ---------------------------------------------------------------------------
    def next_batch(self) -> Batch:
        s = self.settings
        # encoder pre-training asks one phrase per image: the encoders see batch_size images a step
        pairs_per_image = 1 if self.step < s.pretrain_steps else s.pairs_per_image
        if pairs_per_image > 1:
            indices = grouped_batch_indices(self.train_set.pairs_by_image(), s.batch_size, pairs_per_image,
                                            self.step, s.seed)
        else:
            indices = batch_indices(len(self.train_set), s.batch_size, self.step, s.seed)
        return collate(self.train_set, indices, seed=s.seed * 1_000_003 + self.step)

    def compute_loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        model = self.model
        device = next(model.parameters()).device
        images, trunk = self._encode(batch, device)
        features = images.select(batch.image_index)
        # not model.encode_text: its cache holds no-grad encodings
        text = model.backbone.language_backbone(batch.phrases, device=device)
        if self.step < self.settings.pretrain_steps:
            # encoder pre-training (SAM 3 starts from aligned image and text encoders): no detector
            loss, log = features.fpn[0].new_zeros(()), {}
        else:
            loss, log, decoded, output = self._detector_loss(batch, features, text)
            if self.query_heads is not None:
                queried = self._query_attribute_loss(batch, decoded.hidden[-1])
                loss = loss + self.settings.attribute_weight * queried
                log["query_attributes"] = float(queried.detach())
            with torch.no_grad():  # how far presence tells present phrases from absent ones
                presence, present = output.presence_logits.sigmoid(), batch.presence.to(device)
                for name, rows in (("presence_pos", present), ("presence_neg", ~present)):
                    if rows.any():
                        log[name] = float(presence[rows].mean())
        if self.alignment is not None:
            union = instance_union(batch.target_masks)
            aligned = self.alignment.loss([features.fpn[0], features.fpn[-1]], text.features, text.padding_mask,
                                          union.to(device))
            loss = loss + self.settings.alignment_weight * aligned
            log["alignment"] = float(aligned.detach())
        if self.attribute_heads is not None:
            level = images.fpn[self.object_level]
            objects = [self.attribute_maps.objects(name, level.shape[-1]) for name in batch.file_names]
            if all(o is not None for o in objects):
                targets = [self.attribute_maps(name) for name in batch.file_names]
                attribute = (DENSE_ATTRIBUTE_SHARE * self.attribute_heads.loss(images.fpn, targets)
                             + self.attribute_heads.object_loss(level, objects))
                loss = loss + self.settings.attribute_weight * attribute
                log["attributes"] = float(attribute.detach())
                if self.object_alignment is not None:
                    aligned = self._object_alignment_loss(self.train_set, batch.file_names, level, objects)
                    loss = loss + self.settings.alignment_weight * aligned
                    log["alignment"] = float(aligned.detach())
        if self.anchor is not None:
            held = self.anchor.loss(model.backbone.vision_backbone, trunk,
                                    self._cached_trunk(self.anchor.trunk, batch, device))
            loss = loss + self.settings.tracker_anchor * held
            log["tracker_anchor"] = float(held.detach())
        log["loss"] = float(loss.detach())
        return loss, log

    def _encode(self, batch: Batch, device: torch.device) -> tuple[ImageFeatures, torch.Tensor]:
        """The batch's detector features and trunk output. With a frozen trunk, each image's trunk
        output is computed once (no augmentation and no dropout in the ViT, so it never changes)
        and only the necks run with gradients."""
        neck = self.model.backbone.vision_backbone
        if self.settings.freeze_trunk:
            trunk = self._cached_trunk(neck.trunk, batch, device)
        else:
            trunk = neck.trunk(batch.pixels.to(device).contiguous(memory_format=torch.channels_last))
        fpn, fpn_pos = neck.detector_levels(trunk, self.model.config.vision.used_levels)
        return ImageFeatures(fpn, fpn_pos), trunk

    def _cached_trunk(self, trunk_module: torch.nn.Module, batch: Batch, device: torch.device) -> torch.Tensor:
        """A trunk that never changes (the frozen one, or the anchor's copy of the starting one)
        run on the batch's images, each image's output kept in memory within the budget."""
        missing = [i for i, name in enumerate(batch.file_names) if name not in self._trunk_maps]
        computed = {}
        if missing:
            pixels = batch.pixels[missing].to(device).contiguous(memory_format=torch.channels_last)
            with torch.no_grad():
                maps = trunk_module(pixels)
            for i, trunk in zip(missing, maps):
                computed[batch.file_names[i]] = trunk
                # a full-size map is 21 MB: beyond the budget, later images are recomputed each time
                if self._trunk_bytes + trunk.numel() * trunk.element_size() <= TRUNK_CACHE_BYTES:
                    self._trunk_maps[batch.file_names[i]] = trunk.cpu()
                    self._trunk_bytes += trunk.numel() * trunk.element_size()
        return torch.stack([computed[name] if name in computed else self._trunk_maps[name].to(device)
                            for name in batch.file_names])

    def _detector_loss(self, batch: Batch, features, text):
        """The matching losses (and, with ``denoise``, the denoising queries' losses); returns
        (loss, log, decoder output, grounding output) without the denoising rows."""
        device = next(self.model.parameters()).device
        denoise = None
        if self.settings.denoise and self.attribute_maps is not None:
            generator = torch.Generator().manual_seed(self.settings.seed * 1_000_003 + self.step + 2)
            denoise = make_denoise_queries(batch, self.attribute_maps, generator)
        output, decoded, layer_logits = self.model.ground(
            features, text, batch.prompt_boxes.to(device), batch.prompt_labels.to(device),
            batch.prompt_padding.to(device), all_layers=True, dac=self.settings.dac,
            extra_boxes=denoise.start_boxes.to(device) if denoise is not None else None)
        dn_loss, dn_log = None, {}
        if denoise is not None:  # the denoising rows come last; the matching losses never see them
            keep = slice(0, layer_logits.shape[2] - denoise.count)
            extra = slice(keep.stop, None)
            dn_loss, dn_log = denoise_loss(denoise, layer_logits[:, :, extra, 0], decoded.pred_boxes[:, :, extra],
                                           output.masks[:, extra], decoded.hidden[-1][:, extra], batch.target_masks,
                                           self.settings.loss_weights, self.query_heads)
            output = dataclasses.replace(output, logits=output.logits[:, keep], boxes=output.boxes[:, keep],
                                         masks=output.masks[:, keep])
            decoded = dataclasses.replace(decoded, hidden=decoded.hidden[:, :, keep],
                                          ref_boxes=decoded.ref_boxes[:, :, keep],
                                          pred_boxes=decoded.pred_boxes[:, :, keep])
            layer_logits = layer_logits[:, :, keep]
        loss, log = self.criterion(output, decoded, layer_logits, batch.target_boxes, batch.target_masks,
                                   batch.exhaustive, dac=self.settings.dac)
        if dn_loss is not None:
            loss = loss + dn_loss
            log.update(dn_log)
        return loss, log, decoded, output

    def _query_attribute_loss(self, batch: Batch, hidden: torch.Tensor) -> torch.Tensor:
        """The query heads' loss on the queries matched (last layer, one-to-one) to instances
        whose object the scene records name."""
        counts = [t.shape[0] for t in batch.target_boxes]
        pair_idx, query_idx, target_idx = flat_indices(self.criterion.last_matches, counts, hidden.device)
        keys = len(self.attribute_maps.vocabulary)
        labels = []
        for row, ids in zip(batch.image_index, batch.target_ids or [[None] * c for c in counts]):
            known = self.attribute_maps.labels_by_id(batch.file_names[row])
            labels.extend(known.get(oid, [-100] * keys) for oid in ids)
        labels = torch.tensor(labels, dtype=torch.long, device=hidden.device).reshape(-1, keys)
        return self.query_heads.loss(hidden[pair_idx, query_idx], labels[target_idx])

    def _object_alignment_inputs(self, dataset: SacoDataset, file_names: list[str], level: torch.Tensor,
                                 objects: list[SceneObjects]):
        """Pooled objects, pooled text of every phrase asked of each image, and (P, N) targets."""
        asked = [dataset.phrases_of(name) for name in file_names]
        texts = [text for phrases in asked for text, _ in phrases]
        encoded = self.model.backbone.language_backbone(texts, device=level.device)
        pooled_text = masked_mean(encoded.features, encoded.padding_mask).split([len(a) for a in asked])
        targets = [phrase_object_targets(a, o.ids).to(level.device) for a, o in zip(asked, objects)]
        return pool_objects(level, objects), list(pooled_text), targets

    def _object_alignment_loss(self, dataset: SacoDataset, file_names: list[str], level: torch.Tensor,
                               objects: list[SceneObjects]) -> torch.Tensor:
        return self.object_alignment.loss(*self._object_alignment_inputs(dataset, file_names, level, objects))

    def train_step(self) -> dict[str, float]:
        batch = self.next_batch()
        loss, log = self.compute_loss(batch)
        if not math.isfinite(log["loss"]):
            raise FloatingPointError(f"loss became {log['loss']} at step {self.step}; lower --lr or --clip")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.settings.clip > 0:
            params = [p for group in self.optimizer.param_groups for p in group["params"]]
            log["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(params, self.settings.clip))
        log["lr"] = self.scheduler.get_last_lr()[0]
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        log["step"] = self.step
        return log

    # -- the loop ---------------------------------------------------------------------------
    def run(self) -> dict[str, float]:
        s = self.settings
        self.out.mkdir(parents=True, exist_ok=True)
        start = time.monotonic()
        bar = None
        if s.progress:
            from tqdm import tqdm

            bar = tqdm(total=s.steps, initial=self.step, desc="train", dynamic_ncols=True)
        metrics: dict[str, float] = {}
        while self.step < s.steps:
            log = self.train_step()
            self.history.append(log)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{log['loss']:.3f}", lr=f"{log['lr']:.2e}")
            if self.step % s.log_every == 0 or self.step == s.steps:
                self._log({**log, "time": round(time.monotonic() - start, 1)})
            out_of_time = s.time_limit is not None and time.monotonic() - start > s.time_limit
            if self.step % s.save_every == 0 or self.step in (s.steps, s.pretrain_steps) or out_of_time:
                self.save()
            if self.val_path and s.eval_every and self.step % s.eval_every == 0 and self.step < s.steps:
                if self.step <= s.pretrain_steps:  # no detector yet: how well the encoders know objects
                    if self.attribute_heads is not None:
                        self._log({"step": self.step, **self.evaluate_attributes()})
                else:
                    metrics = self.evaluate()
            if out_of_time:
                break
        if bar is not None:
            bar.close()
        if self.calibration_path is not None:
            self.calibrate()
        if self.val_path:
            metrics = self.evaluate(limit=s.final_eval_pairs)
        return metrics

    def calibrate(self) -> Calibration:
        """Fit the presence and query-logit offsets on the calibration split and re-export the
        model with them. ``train_state.pt`` keeps the uncalibrated model, so a resumed run
        calibrates afresh."""
        result = calibrate_presence(self.model, self.calibration_path, find_images_dir(self.calibration_path),
                                    query_offsets=DEFAULT_QUERY_OFFSETS)
        self._log({"step": self.step, "calibration": {"offset": result.offset, "query_offset": result.query_offset,
                                                      **result.metrics}})
        self._export()
        return result

    def _log(self, record: dict) -> None:
        with (self.out / LOG_FILE).open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")

    # -- evaluation ---------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate_attributes(self, images: int = 48) -> dict[str, float]:
        """Held-out accuracy of the per-object attribute heads ("val_shape_acc", ...) on the first
        ``images`` held-out images, when the held-out data has scene records."""
        maps = AttributeMaps.from_annotation(self.val_path, self.train_set.mask_size)
        if maps is None:
            return {}
        val = SacoDataset(self.val_path, self.model.config)
        files = list(dict.fromkeys(pair["file_name"] for pair in val.pairs))[:images]
        self.model.eval()
        try:
            device = next(self.model.parameters()).device
            level = self.model.encode_image(val.pixels(files).to(device)).fpn[self.object_level]
            # the training vocabulary indexes the heads' classes
            objects = [self.attribute_maps.objects_of(maps.scenes[name], level.shape[-1]) for name in files]
            features, labels = self.attribute_heads.pool(level, objects)
            logits = self.attribute_heads.object_logits(features)
            report = {f"val_{key}_acc": round(float((logits[key].argmax(1) == labels[:, index]).float().mean()), 4)
                      for index, key in enumerate(logits)}
            if self.object_alignment is not None:
                pooled, phrases, targets = self._object_alignment_inputs(val, files, level, objects)
                scores = [self.object_alignment.logits(o, p).flatten() for o, p in zip(pooled, phrases)]
                report["val_align_auc"] = round(binary_auc(torch.cat(scores), torch.cat([t.flatten() for t in targets])), 4)
        finally:
            self.model.train()
        return report

    @torch.no_grad()
    def evaluate(self, limit: int | None = None) -> dict[str, float]:
        """cgF1 / IL_MCC / pmF1 (masks) on the held-out pairs, through opensam3.eval."""
        from opensam3.eval.image_eval import evaluate_image_cgf1
        from opensam3.eval.predict import predict_dataset
        from opensam3.eval.saco_io import with_coco_defaults

        limit = self.settings.eval_pairs if limit is None else limit
        # a fixed subset, the same at every evaluation, with its own annotations
        gt = with_coco_defaults(json.loads(self.val_path.read_text(encoding="utf-8")), limit)
        subset = self.out / "eval_gt.json"
        subset.write_text(json.dumps(gt), encoding="utf-8")
        self.model.eval()
        try:
            predictions = predict_dataset(Sam3(self.model), subset, find_images_dir(self.val_path))
        finally:
            self.model.train()
        raw = evaluate_image_cgf1([subset], predictions, iou_type="segm")
        metrics = {short: raw[f"cgF1_eval_segm_{name}"] for short, name in EVAL_KEYS.items()}
        self._log({"step": self.step, "eval": metrics})
        return metrics

    # -- checkpoints ---------------------------------------------------------------------------
    def save(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        self._export()
        state = {
            "step": self.step,
            "model": self.model.state_dict(),
            "attribute_heads": self.attribute_heads.state_dict() if self.attribute_heads is not None else None,
            "alignment": self.alignment.state_dict() if self.alignment is not None else None,
            "object_alignment": self.object_alignment.state_dict() if self.object_alignment is not None else None,
            "query_heads": self.query_heads.state_dict() if self.query_heads is not None else None,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "settings": {k: v for k, v in asdict(self.settings).items() if k != "loss_weights"},
            "config": config_to_dict(self.model.config),
        }
        tmp = self.out / (STATE_FILE + ".tmp")
        torch.save(state, tmp)
        if self.step == self.settings.pretrain_steps:
            # the pre-trained encoders stay available: a detector stage with other settings can
            # start from them (copy it to OUT/train_state.pt of a new run folder)
            import shutil

            shutil.copyfile(tmp, self.out / PRETRAIN_STATE_FILE)
        tmp.replace(self.out / STATE_FILE)

    def _export(self) -> None:
        dtype = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[self.settings.save_dtype]
        export_model(self.model, self.out / MODEL_FILE, dtype, tracker=self.carried_tracker)

    def load_state(self, path: Path) -> None:
        state = torch.load(path, map_location="cpu", weights_only=True)
        saved = state.get("config")
        differing = ["(no config saved)"] if saved is None else \
            architecture_differences(config_from_dict(saved), self.model.config)
        if differing:
            raise InvalidInputError(f"{path} was written for config {(saved or {}).get('name')!r} with other sizes than "
                                    f"config {self.model.config.name!r} ({', '.join(differing[:5])}); use another "
                                    "--out folder to start afresh")
        self.model.load_state_dict(state["model"])
        if self.attribute_heads is not None and state.get("attribute_heads") is not None:
            self.attribute_heads.load_state_dict(state["attribute_heads"])
        if self.alignment is not None and state.get("alignment") is not None:
            self.alignment.load_state_dict(state["alignment"])
        if self.object_alignment is not None and state.get("object_alignment") is not None:
            self.object_alignment.load_state_dict(state["object_alignment"])
        if self.query_heads is not None and state.get("query_heads") is not None:
            self.query_heads.load_state_dict(state["query_heads"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        self.step = int(state["step"])
