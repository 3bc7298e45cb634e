"""AdamW with decoupled weight decay on matrices only, and a warm-up + cosine learning rate."""

from __future__ import annotations

import math

import torch
from torch import nn

# Parameters that are tables rather than maps (embeddings, learned tokens and positions):
# decaying them pulls rarely used rows to zero, so like norms and biases they get no decay.
_NO_DECAY_NAMES = ("embed", "token", "positional", "reference_points", "query")


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups: decayed weight matrices / conv kernels, and everything else."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        tail = name.split(".")[-2:]  # the owning module and the parameter's own name
        if param.ndim < 2 or any(key in part for part in tail for key in _NO_DECAY_NAMES):
            no_decay.append(param)
        else:
            decay.append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def warmup_cosine(step: int, total_steps: int, warmup_steps: int, min_ratio: float = 0.01) -> float:
    """Learning-rate multiplier at ``step``: linear 0 -> 1 over ``warmup_steps`` (starting at
    1/warmup, so step 0 already learns), then cosine 1 -> ``min_ratio`` at ``total_steps``."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(total_steps - warmup_steps, 1)
    progress = min(max(step - warmup_steps, 0) / span, 1.0)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def two_stage(step: int, total_steps: int, warmup_steps: int, min_ratio: float, first_stage: int) -> float:
    """Warm-up + cosine over the first ``first_stage`` steps, then again over the rest (a second
    stage starts modules that the first left untouched, which want their own warm-up)."""
    if step < first_stage:
        return warmup_cosine(step, first_stage, warmup_steps, min_ratio)
    return warmup_cosine(step - first_stage, total_steps - first_stage, warmup_steps, min_ratio)


def build_optimizer(model: nn.Module, lr: float, weight_decay: float, total_steps: int, warmup_steps: int,
                    min_ratio: float = 0.01, betas: tuple[float, float] = (0.9, 0.999), first_stage: int = 0,
                    ) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR]:
    optimizer = torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, betas=betas)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: two_stage(step, total_steps, warmup_steps, min_ratio, first_stage))
    return optimizer, scheduler


class TimeBudget:
    """The number of steps that fits a wall-clock budget, re-estimated every ``every`` steps from
    the recent step rate (the last ``window`` steps), so a slow start -- data caching, a busy
    machine -- neither cuts the run short for good nor lets it overrun. Never more than
    ``max_steps``, never fewer than the steps already done plus one."""

    def __init__(self, seconds: float, max_steps: int, window: int = 50, every: int = 20):
        self.seconds, self.max_steps, self.window, self.every = seconds, max_steps, window, every
        self.total = max_steps
        self._times: dict[int, float] = {0: 0.0}

    def update(self, step: int, elapsed: float) -> int:
        self._times[step] = elapsed
        if step >= self.every and step % self.every == 0:
            start = max(0, step - self.window)
            start = min(s for s in self._times if s >= start)
            rate = (elapsed - self._times[start]) / max(step - start, 1)
            fit = step + int(max(self.seconds - elapsed, 0.0) / max(rate, 1e-9))
            self.total = max(step + 1, min(self.max_steps, fit))
            self._times = {s: t for s, t in self._times.items() if s >= step - self.window}
        return self.total
