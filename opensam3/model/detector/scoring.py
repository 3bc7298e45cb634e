"""Query classification by dot product with the pooled prompt.

Parameter names follow the official ``dot_prod_scoring`` so a checkpoint loads after a prefix
strip.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from opensam3.config import DetectorConfig
from opensam3.model.common import MLP


def masked_mean(tokens: torch.Tensor, padding_mask: torch.Tensor | None) -> torch.Tensor:
    """(B, P, C) tokens, (B, P) bool True=padding -> (B, C) mean over the valid tokens
    (the count is floored at 1, so an all-padding row gives zeros)."""
    if padding_mask is None:
        return tokens.mean(dim=1)
    valid = (~padding_mask).to(tokens.dtype)[..., None]
    count = valid.sum(dim=1).clamp(min=1.0)
    return (tokens * valid).sum(dim=1) / count


class DotProductScoring(nn.Module):
    """forward(hidden, prompt, prompt_padding_mask) -> logits

    hidden: (L, B, Q, C) decoder states (after the decoder's final norm).
    prompt: (B, P, C) prompt tokens (the un-encoded prompt given to the fusion encoder).
    prompt_padding_mask: (B, P) bool, True marks padding; None means none.
    logits: (L, B, Q, 1), clamped to [-12, 12] as in the official.
    """

    clamp = 12.0

    def __init__(self, cfg: DetectorConfig):
        super().__init__()
        dim = cfg.d_model
        self.prompt_mlp = MLP(dim, cfg.scoring_hidden, dim, 2, residual=True, out_norm=True)
        self.prompt_proj = nn.Linear(dim, dim)
        self.hs_proj = nn.Linear(dim, dim)
        self.scale = 1.0 / math.sqrt(dim)

    def forward(
        self,
        hidden: torch.Tensor,
        prompt: torch.Tensor,
        prompt_padding_mask: torch.Tensor | None,
    ) -> torch.Tensor:
        pooled = self.prompt_proj(masked_mean(self.prompt_mlp(prompt), prompt_padding_mask))  # (B, C)
        queries = self.hs_proj(hidden)  # (L, B, Q, C)
        logits = torch.matmul(queries, pooled[:, :, None]) * self.scale
        return logits.clamp(min=-self.clamp, max=self.clamp)
