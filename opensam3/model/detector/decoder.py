"""DETR-style decoder: object queries with iterative box refinement and a presence token.

Parameter names follow the official ``transformer.decoder`` so a checkpoint loads after a
prefix strip. For training, ``forward(..., dac=True)`` duplicates the queries as the official
decoder does for one-to-many training ("DAC", off at inference): the second copy skips
self-attention (so its queries cannot suppress each other) and is supervised one-to-many.

Per layer, each query's current box gives (a) its position embedding, an MLP of a sine
encoding of the box, and (b) an additive attention bias over the image tokens, a per-head
function of the (log-scaled) distances from each token's row/column to the box's edges.
The box is then refined by a shared MLP on the normed layer output.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from opensam3.config import DetectorConfig
from opensam3.model.common import MLP, Attention, inverse_sigmoid
from opensam3.model.position import SinePositionEncoding
from opensam3.ops.boxes import cxcywh_to_xyxy


@dataclass
class DecoderOutput:
    """All tensors batch-first; L = decoder layers, Q = queries.

    hidden:          (L, B, Q, C) query states after the decoder's final norm, per layer.
    ref_boxes:       (L, B, Q, 4) cxcywh in [0, 1]: the box each layer started from, which
                     is the box its ``pred_boxes`` refine.
    pred_boxes:      (L, B, Q, 4) cxcywh in [0, 1]: sigmoid(logit(ref_boxes) + bbox_embed(hidden)).
    presence_logits: (L, B, 1) presence-token logits per layer (not clamped, as in the official).
    presence_features: (B, 1, C) the presence token after the last layer, before its norm.
    """

    hidden: torch.Tensor
    ref_boxes: torch.Tensor
    pred_boxes: torch.Tensor
    presence_logits: torch.Tensor
    presence_features: torch.Tensor


class DetrDecoderLayer(nn.Module):
    """Post-norm block: self-attention, cross-attention to the prompt, cross-attention to the
    image (with box bias), FFN. Norm names follow the official layout (norm2 after self-attn,
    catext_norm after text, norm1 after image, norm3 after FFN)."""

    def __init__(self, dim: int, num_heads: int, ffn_dim: int):
        super().__init__()
        # the official self- and text attention return their weights, so they run unfused
        self.self_attn = Attention(dim, num_heads, unfused=True)
        self.norm2 = nn.LayerNorm(dim)
        self.ca_text = Attention(dim, num_heads, unfused=True)
        self.catext_norm = nn.LayerNorm(dim)
        self.cross_attn = Attention(dim, num_heads)
        self.norm1 = nn.LayerNorm(dim)
        self.linear1 = nn.Linear(dim, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, dim)
        self.norm3 = nn.LayerNorm(dim)

    def forward(
        self,
        tokens: torch.Tensor,
        query_pos: torch.Tensor,
        prompt: torch.Tensor,
        prompt_padding_mask: torch.Tensor | None,
        memory: torch.Tensor,
        memory_with_pos: torch.Tensor,
        image_bias: torch.Tensor,
        self_attn_tokens: int | None = None,
    ) -> torch.Tensor:
        """``self_attn_tokens``: only the first this many tokens (presence + one-to-one queries)
        take part in self-attention; the rest (DAC one-to-many queries) skip it but still get
        ``norm2``, as in the official ``dac_use_selfatt_ln``. None = all tokens."""
        with_pos = tokens + query_pos
        if self_attn_tokens is None or self_attn_tokens >= tokens.shape[1]:
            tokens = self.norm2(tokens + self.self_attn(with_pos, with_pos, tokens))
        else:
            head, tail = tokens[:, :self_attn_tokens], tokens[:, self_attn_tokens:]
            head_pos = with_pos[:, :self_attn_tokens]
            tokens = self.norm2(torch.cat((head + self.self_attn(head_pos, head_pos, head), tail), dim=1))
        text = self.ca_text(tokens + query_pos, prompt, prompt, key_padding_mask=prompt_padding_mask)
        tokens = self.catext_norm(tokens + text)
        image = self.cross_attn(tokens + query_pos, memory_with_pos, memory, attn_bias=image_bias)
        tokens = self.norm1(tokens + image)
        # the official runs this FFN outside autocast (full precision under mixed precision)
        with torch.autocast(tokens.device.type, enabled=False):
            ffn = self.linear2(F.relu(self.linear1(tokens.to(self.linear1.weight.dtype))))
        return self.norm3(tokens + ffn)


def _log_distance(delta: torch.Tensor) -> torch.Tensor:
    """Signed log2 scaling of normalised distances: +-1 maps to +-log2(9)/3."""
    scaled = delta * 8
    return torch.sign(scaled) * torch.log2(scaled.abs() + 1.0) / 3.0  # 3 = log2(8)


class DetrDecoder(nn.Module):
    """forward(memory, memory_pos, prompt, prompt_padding_mask, feat_size) -> DecoderOutput

    memory:      (B, HW, C) encoded image tokens (fusion encoder output), row-major grid.
    memory_pos:  (B, HW, C) their position encoding (added to the image keys only).
    prompt:      (B, P, C) prompt tokens as given to the fusion encoder (not encoded).
    prompt_padding_mask: (B, P) bool, True marks padding; None means none.
    feat_size:   (H, W) of the image token grid.
    """

    def __init__(self, cfg: DetectorConfig, image_size: int, patch_size: int):
        super().__init__()
        dim, heads = cfg.d_model, cfg.num_heads
        self.dim = dim
        self.num_heads = heads
        self.num_queries = cfg.num_queries
        self.default_feat_size = (image_size // patch_size, image_size // patch_size)
        self.layers = nn.ModuleList(DetrDecoderLayer(dim, heads, cfg.decoder_ffn) for _ in range(cfg.decoder_layers))
        self.norm = nn.LayerNorm(dim)
        self.query_embed = nn.Embedding(cfg.num_queries, dim)
        self.reference_points = nn.Embedding(cfg.num_queries, 4)
        self.bbox_embed = MLP(dim, dim, 4, 3)
        self.ref_point_head = MLP(2 * dim, dim, dim, 2)
        self.boxRPB_embed_x = MLP(2, dim, heads, 2)
        self.boxRPB_embed_y = MLP(2, dim, heads, 2)
        self.presence_token = nn.Embedding(1, dim)
        self.presence_token_head = MLP(dim, dim, 1, 3)
        self.presence_token_out_norm = nn.LayerNorm(dim)
        # a box's query position uses dim/2 sine features per coordinate (4 coordinates)
        self.box_sine = SinePositionEncoding(dim, temperature=10000.0, scale=2 * math.pi)

    def box_query_pos(self, boxes: torch.Tensor) -> torch.Tensor:
        """(B, Q, 4) cxcywh -> (B, Q, C) query position embedding."""
        cx, cy, w, h = boxes.unbind(-1)
        enc_cx, enc_cy = self.box_sine.encode_xy(cx, cy)
        enc_w, enc_h = self.box_sine.encode_xy(w, h)
        sine = torch.cat((enc_cy, enc_cx, enc_w, enc_h), dim=-1).to(self.ref_point_head.layers[0].weight.dtype)
        return self.ref_point_head(sine)

    def box_attention_bias(self, boxes: torch.Tensor, feat_size: tuple[int, int], leading_rows: int = 0) -> torch.Tensor:
        """(B, Q, 4) cxcywh boxes -> (B, heads, leading_rows + Q, H*W) additive bias.

        Token (i, j) sits at (j / W, i / H). The bias is embed_y(rows vs box top/bottom) +
        embed_x(columns vs box left/right); it is separable, so the two small tables are
        computed once and summed straight into the output buffer. ``leading_rows`` zero rows
        are put first (for the presence token, which gets no box bias).
        """
        height, width = feat_size
        batch, queries, _ = boxes.shape
        xyxy = cxcywh_to_xyxy(boxes)
        rows = torch.arange(height, device=boxes.device, dtype=torch.float32) / height
        cols = torch.arange(width, device=boxes.device, dtype=torch.float32) / width
        delta_y = rows[None, None, :, None] - xyxy[..., None, 1::2]  # (B, Q, H, 2): top, bottom
        delta_x = cols[None, None, :, None] - xyxy[..., None, 0::2]  # (B, Q, W, 2): left, right
        dtype = self.boxRPB_embed_y.layers[0].weight.dtype
        bias_y = self.boxRPB_embed_y(_log_distance(delta_y).to(dtype)).permute(0, 3, 1, 2)  # (B, heads, Q, H)
        bias_x = self.boxRPB_embed_x(_log_distance(delta_x).to(dtype)).permute(0, 3, 1, 2)  # (B, heads, Q, W)
        total = leading_rows + queries
        if torch.is_grad_enabled() and (bias_y.requires_grad or bias_x.requires_grad):
            # out= is not differentiable; training pays for one extra temporary
            bias = F.pad(bias_y[..., :, None] + bias_x[..., None, :], (0, 0, 0, 0, leading_rows, 0))
        else:
            bias = bias_y.new_empty(batch, self.num_heads, total, height, width)
            bias[:, :, :leading_rows].zero_()
            torch.add(bias_y[..., :, None], bias_x[..., None, :], out=bias[:, :, leading_rows:])
        return bias.view(batch, self.num_heads, total, height * width)

    def predict_boxes(self, hidden: torch.Tensor, ref_boxes: torch.Tensor) -> torch.Tensor:
        """(..., Q, C) normed hidden states and (..., Q, 4) the boxes they started from ->
        (..., Q, 4) refined cxcywh boxes, as the official image model computes pred_boxes."""
        return (inverse_sigmoid(ref_boxes) + self.bbox_embed(hidden)).sigmoid()

    def forward(
        self,
        memory: torch.Tensor,
        memory_pos: torch.Tensor,
        prompt: torch.Tensor,
        prompt_padding_mask: torch.Tensor | None,
        feat_size: tuple[int, int] | None = None,
        dac: bool = False,
        extra_boxes: torch.Tensor | None = None,
    ) -> DecoderOutput:
        """``dac=True`` (training): 2Q queries, the Q one-to-one queries then a copy of them that
        skips self-attention (one-to-many); all outputs then have 2Q query rows.
        ``extra_boxes`` (training): (B, D, 4) cxcywh starting boxes of D more queries, appended
        last, with empty content, that also skip self-attention (denoising queries: the others
        never see them)."""
        feat_size = tuple(feat_size) if feat_size is not None else self.default_feat_size
        if memory.shape[1] != feat_size[0] * feat_size[1]:
            raise ValueError(f"{memory.shape[1]} image tokens do not fill a {feat_size[0]}x{feat_size[1]} grid")
        batch = memory.shape[0]
        memory_with_pos = memory + memory_pos.to(memory.dtype)
        copies = 2 if dac else 1
        queries = self.query_embed.weight.repeat(copies, 1)[None].expand(batch, -1, -1)
        presence = self.presence_token.weight[None].expand(batch, -1, -1)
        # the presence token rides along as token 0 in every attention, with no position
        tokens = torch.cat((presence, queries), dim=1)
        boxes = self.reference_points.weight.repeat(copies, 1).sigmoid()[None].expand(batch, -1, -1)
        self_attn_tokens = 1 + self.num_queries if dac or extra_boxes is not None else None
        if extra_boxes is not None:
            tokens = torch.cat((tokens, tokens.new_zeros(batch, extra_boxes.shape[1], self.dim)), dim=1)
            boxes = torch.cat((boxes, extra_boxes.to(boxes.dtype)), dim=1)
        no_pos = tokens.new_zeros(batch, 1, self.dim)

        hidden, starts, refined, presence_logits = [], [], [], []
        for layer in self.layers:
            query_pos = torch.cat((no_pos, self.box_query_pos(boxes).to(tokens.dtype)), dim=1)
            bias = self.box_attention_bias(boxes, feat_size, leading_rows=1)
            tokens = layer(tokens, query_pos, prompt, prompt_padding_mask, memory, memory_with_pos, bias,
                           self_attn_tokens)
            normed = self.norm(tokens[:, 1:])
            new_boxes = self.predict_boxes(normed, boxes)
            presence_out = tokens[:, :1]
            presence_logits.append(self.presence_token_head(self.presence_token_out_norm(presence_out)).squeeze(-1))
            hidden.append(normed)
            starts.append(boxes)
            refined.append(new_boxes)
            boxes = new_boxes.detach()
        return DecoderOutput(
            hidden=torch.stack(hidden),
            ref_boxes=torch.stack(starts),
            pred_boxes=torch.stack(refined),
            presence_logits=torch.stack(presence_logits),
            presence_features=tokens[:, :1],
        )
