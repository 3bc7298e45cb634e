"""``opensam3 train``: argparse wiring for the trainer (the main CLI calls add_train_parser)."""

from __future__ import annotations

import argparse
import json

from opensam3.config import CONFIGS
from opensam3.train.losses import LOSS_NAMES as _LOSS_NAMES


def add_train_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "train", help="train or fine-tune the detector on an SA-Co/COCO-style dataset",
        description="Train SAM 3's detector (Hungarian matching, focal/IoU-aware classification, L1+GIoU boxes, "
                    "mask focal+dice, presence; every decoder layer supervised). Re-running with the same --out "
                    "resumes from its train_state.pt. Unset options take the config's recipe, then the defaults.")
    parser.add_argument("--config", default="embedded", help=f"model config: {', '.join(sorted(CONFIGS))} "
                        "(default embedded)")
    parser.add_argument("--data", help="dataset folder with train.json (+ val.json / test.json) and images/ "
                        "(or train/ and val/ subfolders), or a train JSON file; for --config embedded the "
                        "default renders the synthetic shapes world into OUT/data")
    parser.add_argument("--val", help="held-out SA-Co JSON for cgF1 (default: the folder's val/test split)")
    parser.add_argument("--out", default="runs/train", help="output folder (model.safetensors, train_state.pt, "
                        "log.jsonl); default runs/train")
    parser.add_argument("--init", help="checkpoint to fine-tune from (sam3.pt / .safetensors); default random init")
    parser.add_argument("--steps", type=int, help="total optimizer steps")
    parser.add_argument("--batch-size", type=int, help="image-phrase pairs per step (default 8)")
    parser.add_argument("--lr", type=float, help="peak learning rate")
    parser.add_argument("--weight-decay", type=float)
    parser.add_argument("--warmup", type=int, help="linear warm-up steps")
    parser.add_argument("--clip", type=float, help="max gradient norm (0 = off)")
    parser.add_argument("--exemplar-prob", type=float, help="fraction of positive pairs given one exemplar box")
    parser.add_argument("--pairs-per-image", type=int,
                        help="phrases asked of each image per step; >1 encodes each image once for all of them "
                             "and puts present phrases beside hard negatives (embedded recipe: 4)")
    parser.add_argument("--attribute-weight", type=float,
                        help="weight of the dense attribute loss (needs a dataset with 'scenes' records of objects "
                             "with attributes and masks, as opensam3.synth writes; 0 = off; embedded recipe: 2)")
    parser.add_argument("--alignment-weight", type=float,
                        help="weight of the phrase-pixel alignment loss (a training-only head; 0 = off)")
    parser.add_argument("--pretrain-steps", type=int,
                        help="first steps train only the image and text encoders through the auxiliary losses "
                             "(needs --alignment-weight or --attribute-weight); the detector then gets its own "
                             "warm-up and cosine over the remaining steps")
    parser.add_argument("--eval-every", type=int, help="steps between held-out evaluations (0 = only at the end)")
    parser.add_argument("--eval-pairs", type=int, help="held-out pairs per evaluation (0 = all)")
    parser.add_argument("--save-every", type=int, help="steps between checkpoints")
    parser.add_argument("--log-every", type=int)
    parser.add_argument("--time-limit", type=float, help="stop and save after this many seconds")
    parser.add_argument("--save-dtype", choices=["float32", "float16", "bfloat16"],
                        help="parameter dtype of the exported model.safetensors")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--freeze-trunk", action="store_true", default=None,
                        help="fine-tuning: keep the ViT trunk as --init has it (its click / box head and video memory "
                             "stay valid, and the exported model carries them) and compute each image's trunk "
                             "output once")
    parser.add_argument("--tracker-anchor", type=float, metavar="WEIGHT",
                        help="fine-tuning the trunk of a model with a click / box head and video memory (the shipped "
                             "embedded one): weight of the loss that holds the tracker neck's output where --init "
                             "has it, so those heads stay valid and the exported model carries them (0 = off)")
    parser.add_argument("--tracker-anchor-from", metavar="CHECKPOINT",
                        help="with --tracker-anchor: hold the tracker neck's output where this file has it instead of "
                             "--init (the model the heads were trained with, so successive fine-tunes do not drift)")
    parser.add_argument("--dac", action="store_true", default=None,
                        help="add SAM 3's one-to-many query copy (DAC) with one-to-many supervision")
    parser.add_argument("--denoise", action=argparse.BooleanOptionalAction, default=None,
                        help="denoising queries: one extra training query per recorded object, starting at its "
                             "jittered box, scored by whether the phrase names it (needs scene records; on in the "
                             "embedded recipe)")
    parser.add_argument("--box-focus", type=float,
                        help="from scratch: start the decoder's box attention bias as 'look inside the box' with this "
                             "strength (0 = PyTorch's default; embedded recipe: 20)")
    parser.add_argument("--calibrate", action=argparse.BooleanOptionalAction, default=None,
                        help="after the last step, shift the presence logit so the 0.5 score threshold fits the "
                             "model best (cgF1 on a calibration split; on in the embedded recipe)")
    parser.add_argument("--calibration", help="SA-Co JSON for --calibrate (default: the data folder's calib split; "
                        "for --config embedded one is rendered)")
    parser.add_argument("--loss-weight", action="append", metavar="NAME=VALUE",
                        help="override one loss weight (repeatable): " + ", ".join(_LOSS_NAMES)
                             + "; e.g. --loss-weight mask=1200 --loss-weight dice=60 (the embedded recipe's)")
    parser.add_argument("--official-init", action="store_true",
                        help="from scratch: the official initialisation (Xavier transformer, zero last box layer, "
                             "std-0.02 ViT) instead of PyTorch's defaults")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (logs still go to log.jsonl)")
    parser.set_defaults(func=run_train)
    return parser


def parse_loss_weights(items: list[str] | None) -> dict[str, float]:
    """``["mask=600", "dice=30"]`` -> ``{"mask": 600.0, "dice": 30.0}``; unknown names are an error."""
    from opensam3.errors import InvalidInputError

    weights = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or name not in _LOSS_NAMES:
            raise InvalidInputError(f"--loss-weight {item!r}: expected NAME=VALUE with NAME one of "
                                    f"{', '.join(_LOSS_NAMES)}")
        try:
            weights[name] = float(value)
        except ValueError:
            raise InvalidInputError(f"--loss-weight {item!r}: {value!r} is not a number") from None
        if not weights[name] >= 0 or weights[name] == float("inf"):
            raise InvalidInputError(f"--loss-weight {item!r}: weights must be finite and >= 0")
    return weights


def run_train(args: argparse.Namespace) -> int:
    import torch

    from opensam3.config import get_config
    from opensam3.train.model_io import starting_model
    from opensam3.train.trainer import Trainer, _resolve_calibration, _resolve_data, settings_for

    if args.threads:
        torch.set_num_threads(args.threads)
    from opensam3.errors import InvalidInputError

    try:
        config = get_config(args.config)
    except ValueError as exc:  # unknown name: the message lists the known ones
        raise InvalidInputError(f"--config: {exc}") from None
    settings = settings_for(
        args.config, data=args.data, val=args.val, out=args.out, init=args.init, steps=args.steps,
        batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay, warmup=args.warmup, clip=args.clip,
        exemplar_prob=args.exemplar_prob, pairs_per_image=args.pairs_per_image,
        attribute_weight=args.attribute_weight, alignment_weight=args.alignment_weight,
        pretrain_steps=args.pretrain_steps, eval_every=args.eval_every, eval_pairs=args.eval_pairs,
        save_every=args.save_every, log_every=args.log_every, time_limit=args.time_limit,
        save_dtype=args.save_dtype, seed=args.seed, freeze_trunk=args.freeze_trunk,
        tracker_anchor=args.tracker_anchor, tracker_anchor_from=args.tracker_anchor_from, dac=args.dac, denoise=args.denoise, box_focus=args.box_focus,
        calibrate=args.calibrate, calibration=args.calibration, progress=False if args.no_progress else None,
        loss_weights=parse_loss_weights(args.loss_weight))
    if settings.data is None and args.config == "embedded":
        from pathlib import Path

        from opensam3.train.synthdata import prepare_synthetic_data

        settings.data = str(prepare_synthetic_data(Path(settings.out) / "data", config.image_size,
                                                   progress=settings.progress))
    _resolve_data(settings)  # fail on bad --data / --val / --calibration before building a model
    _resolve_calibration(settings)
    torch.manual_seed(settings.seed)
    model, init_tracker = starting_model(settings, config, device=args.device)  # --init read once
    if args.official_init and not settings.init:
        from opensam3.train.init import init_from_scratch

        init_from_scratch(model)
    trainer = Trainer(settings, model=model, init_tracker=init_tracker)
    metrics = trainer.run()
    print(json.dumps({"step": trainer.step, "out": str(trainer.out), **metrics}))
    return 0
