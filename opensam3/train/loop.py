"""The optimisation loop shared by the second and third training stages (``train-interactive``,
``train-memory``): AdamW over given parameter groups, warm-up + cosine learning rate, gradient
clipping, a wall-clock budget, JSON-lines loss logging and a progress bar."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from opensam3.train.optim import TimeBudget, warmup_cosine


def optimise(step_losses: Callable[[], dict[str, torch.Tensor] | None], groups: list[dict], lr: float, steps: int,
             time_budget: float | None, warmup: int, clip: float, log_path: Path, log_every: int,
             progress: bool, desc: str, postfix: str) -> dict:
    """Run optimizer steps until ``steps`` (or what fits ``time_budget`` seconds). Each step calls
    ``step_losses()`` for a dict of losses holding ``"loss"`` (None: nothing to learn from this
    draw, draw again without counting a step). Every ``log_every`` steps the mean of each loss is
    written to ``log_path``; the bar shows ``loss`` and ``postfix``. Returns steps, train_s,
    loss_first, loss_last."""
    optimizer = torch.optim.AdamW(groups, lr=lr)
    schedule = {"total": steps}
    budget = TimeBudget(time_budget, steps) if time_budget else None
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: warmup_cosine(step, schedule["total"], warmup))
    params = [p for group in groups for p in group["params"]]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=steps, desc=desc, dynamic_ncols=True)
    start = time.time()
    step, history = 0, []
    with open(log_path, "w") as log:
        while step < schedule["total"]:
            losses = step_losses()
            if losses is None:
                continue
            optimizer.zero_grad(set_to_none=True)
            losses["loss"].backward()
            if clip:
                torch.nn.utils.clip_grad_norm_(params, clip)
            optimizer.step()
            scheduler.step()
            step += 1
            history.append({k: float(v.detach()) for k, v in losses.items()})
            elapsed = time.time() - start
            if budget is not None:
                schedule["total"] = budget.update(step, elapsed)
                if bar is not None:
                    bar.total = schedule["total"]
            if step % log_every == 0 or step == schedule["total"]:
                recent = history[-log_every:]
                keys = sorted({k for h in recent for k in h})
                entry = {k: float(np.mean([h[k] for h in recent if k in h])) for k in keys}
                entry.update(step=step, lr=scheduler.get_last_lr()[0], time=round(elapsed, 1))
                log.write(json.dumps(entry) + "\n")
                log.flush()
                if bar is not None:
                    bar.set_postfix(loss=f"{entry['loss']:.3f}", **{postfix: f"{entry.get(postfix, 0.0):.4f}"})
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    first, last = history[:log_every], history[-log_every:]
    return {"steps": step, "train_s": round(time.time() - start, 1),
            "loss_first": float(np.mean([h["loss"] for h in first])),
            "loss_last": float(np.mean([h["loss"] for h in last]))}
