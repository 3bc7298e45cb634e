"""SAM prompt encoder: clicks and box corners -> sparse tokens, a mask prompt -> a dense map."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..common import LayerNorm2d
from .config import TrackerHeadsConfig

# point labels understood by the encoder
PAD, NEGATIVE, POSITIVE, BOX_TOP_LEFT, BOX_BOTTOM_RIGHT = -1, 0, 1, 2, 3


class RandomFourierPositions(nn.Module):
    """Encodes [0, 1]^2 coordinates with a fixed random Gaussian projection (sin | cos).

    State dict: ``positional_encoding_gaussian_matrix`` (2, dim // 2), a buffer stored in the
    checkpoint (random at training time, so it must be loaded, not recomputed).
    """

    def __init__(self, half_dim: int):
        super().__init__()
        self.register_buffer("positional_encoding_gaussian_matrix", torch.randn(2, half_dim))

    def encode(self, coords: torch.Tensor) -> torch.Tensor:
        """(..., 2) xy in [0, 1] -> (..., 2 * half_dim)."""
        matrix = self.positional_encoding_gaussian_matrix
        # coordinates arrive in float32; a bf16 model needs them in its own dtype for the matmul
        projected = (2 * coords - 1).to(matrix.dtype) @ matrix
        projected = (2 * math.pi) * projected
        return torch.cat((projected.sin(), projected.cos()), dim=-1)

    def grid(self, height: int, width: int) -> torch.Tensor:
        """(2 * half_dim, height, width) encoding of the centres of a height x width grid."""
        device = self.positional_encoding_gaussian_matrix.device
        ys = (torch.arange(height, dtype=torch.float32, device=device) + 0.5) / height
        xs = (torch.arange(width, dtype=torch.float32, device=device) + 0.5) / width
        coords = torch.stack((xs[None, :].expand(height, width), ys[:, None].expand(height, width)), dim=-1)
        return self.encode(coords).permute(2, 0, 1)


class PromptEncoder(nn.Module):
    """State dict (official ``sam_prompt_encoder.*``): ``pe_layer``, ``point_embeddings.{0..3}``
    (negative, positive, box top-left, box bottom-right), ``not_a_point_embed``,
    ``mask_downscaling.{0,1,3,4,6}``, ``no_mask_embed``.
    """

    def __init__(self, config: TrackerHeadsConfig):
        super().__init__()
        dim, chans = config.dim, config.mask_in_chans
        self.dim = dim
        self.image_size = config.image_size
        self.embedding_size = config.embedding_size
        self.pe_layer = RandomFourierPositions(dim // 2)
        self.point_embeddings = nn.ModuleList(nn.Embedding(1, dim) for _ in range(4))
        self.not_a_point_embed = nn.Embedding(1, dim)
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, chans // 4, kernel_size=2, stride=2),
            LayerNorm2d(chans // 4),
            nn.GELU(),
            nn.Conv2d(chans // 4, chans, kernel_size=2, stride=2),
            LayerNorm2d(chans),
            nn.GELU(),
            nn.Conv2d(chans, dim, kernel_size=1),
        )
        self.no_mask_embed = nn.Embedding(1, dim)

    def dense_positions(self) -> torch.Tensor:
        """(1, dim, e, e) encoding of the decoder's image grid."""
        return self.pe_layer.grid(self.embedding_size, self.embedding_size)[None]

    def embed_points(self, coords: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """(B, N, 2) xy in the model's input frame (pixels of the square image_size input) and
        (B, N) labels in {-1, 0, 1, 2, 3} -> (B, N, dim) tokens."""
        # +0.5: a pixel index refers to the pixel's centre
        normalized = (coords.float() + 0.5) / coords.new_tensor([self.image_size, self.image_size]).float()
        encoded = self.pe_layer.encode(normalized)
        table = torch.cat([e.weight for e in self.point_embeddings], dim=0)  # (4, dim)
        labels = labels.long()
        is_pad = labels == PAD
        learned = table[labels.clamp(min=0)]
        out = encoded + learned
        pad = self.not_a_point_embed.weight.expand_as(out)
        return torch.where(is_pad[..., None], pad, out)

    def forward(self, coords: torch.Tensor | None, labels: torch.Tensor | None,
                mask_logits: torch.Tensor | None, batch_size: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompts -> (sparse (B, N + 1, dim), dense (B, dim, e, e)).

        coords / labels: (B, N, 2) input-frame xy and (B, N) labels (box corners are points
        labelled 2 and 3), or None. A padding point (label -1) is appended, as the official
        predictor always does when boxes arrive as corner points.
        mask_logits: (B, 1, 4e, 4e) low-res logits of an earlier prediction, or None.
        """
        if coords is not None:
            batch_size = coords.shape[0]
            coords = torch.cat((coords.float(), coords.new_zeros(batch_size, 1, 2).float()), dim=1)
            labels = torch.cat((labels.long(), labels.new_full((batch_size, 1), PAD).long()), dim=1)
            sparse = self.embed_points(coords, labels)
        else:
            if mask_logits is not None:
                batch_size = mask_logits.shape[0]
            weight = self.no_mask_embed.weight
            sparse = weight.new_zeros(batch_size, 0, self.dim)
        if mask_logits is not None:
            dense = self.mask_downscaling(mask_logits)
        else:
            size = self.embedding_size
            dense = self.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(batch_size, -1, size, size)
        return sparse, dense
