"""SAM 3 text encoder: a causal CLIP-style transformer followed by a linear map to ``d_model``.

State dict keys equal the official ``VETextEncoder``'s (``encoder.*`` and ``resizer.*``), so the
checkpoint's ``detector.backbone.language_backbone.*`` tensors load after a prefix strip.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from opensam3.config import TextConfig
from opensam3.model.common import Attention
from opensam3.model.text.tokenizer import BPETokenizer, check_phrases

# width of the (unused) CLIP pooled-output projection that the checkpoint still carries
CLIP_PROJECTION_DIM = 512


@dataclass
class TextFeatures:
    """Encoded phrases, batch-first.

    features:      (B, L, d_model)  token features after the resizer (what the detector uses)
    padding_mask:  (B, L) bool      True where the token id is 0, i.e. padding (the official
                                    ``language_mask`` polarity)
    embeddings:    (B, L, width)    raw token embeddings, before positions and transformer
                                    (the official ``language_embeds``)
    token_ids:     (B, L) int64     tokenizer output
    """

    features: torch.Tensor
    padding_mask: torch.Tensor
    embeddings: torch.Tensor
    token_ids: torch.Tensor

    @property
    def batch_size(self) -> int:
        return self.features.shape[0]

    @property
    def language_features(self) -> torch.Tensor:
        """(L, B, d_model), the official sequence-first layout."""
        return self.features.transpose(0, 1)

    @property
    def language_mask(self) -> torch.Tensor:
        """(B, L) bool, True = padding (same tensor as ``padding_mask``)."""
        return self.padding_mask

    @property
    def language_embeds(self) -> torch.Tensor:
        """(L, B, width), the official sequence-first layout."""
        return self.embeddings.transpose(0, 1)

    def as_official(self) -> dict[str, torch.Tensor]:
        """The official backbone's text outputs: language_features / language_mask / language_embeds."""
        return {
            "language_features": self.language_features,
            "language_mask": self.language_mask,
            "language_embeds": self.language_embeds,
        }

    def select(self, index: int | slice | list[int] | torch.Tensor) -> "TextFeatures":
        """The rows ``index`` of the batch (an int keeps a batch axis of one)."""
        if isinstance(index, int):
            index = slice(index, index + 1) if index != -1 else slice(-1, None)
        return TextFeatures(
            self.features[index], self.padding_mask[index], self.embeddings[index], self.token_ids[index]
        )

    @staticmethod
    def cat(parts: list["TextFeatures"]) -> "TextFeatures":
        return TextFeatures(
            torch.cat([p.features for p in parts]),
            torch.cat([p.padding_mask for p in parts]),
            torch.cat([p.embeddings for p in parts]),
            torch.cat([p.token_ids for p in parts]),
        )


class FeedForward(nn.Module):
    """c_fc -> exact GELU -> c_proj (key names of the CLIP MLP)."""

    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.c_fc = nn.Linear(width, hidden)
        self.c_proj = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(F.gelu(self.c_fc(x)))


class ResidualBlock(nn.Module):
    """Pre-norm transformer block: x + attn(ln_1 x), then + mlp(ln_2 x). Batch-first (B, L, C)."""

    def __init__(self, width: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = Attention(width, heads)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = FeedForward(width, int(width * mlp_ratio))

    def forward(self, x: torch.Tensor, attn_bias: torch.Tensor | None) -> torch.Tensor:
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, attn_bias=attn_bias)
        return x + self.mlp(self.ln_2(x))


class BlockStack(nn.Module):
    def __init__(self, width: int, layers: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.resblocks = nn.ModuleList(ResidualBlock(width, heads, mlp_ratio) for _ in range(layers))

    def forward(self, x: torch.Tensor, attn_bias: torch.Tensor | None) -> torch.Tensor:
        for block in self.resblocks:
            x = block(x, attn_bias)
        return x


class CausalTextTransformer(nn.Module):
    """Token + learned position embeddings, causal pre-norm blocks, final LayerNorm.

    ``forward(token_ids (B, L) int64) -> (B, L, width)``, L <= context_length. Each token only
    sees itself and the tokens before it, so padding never changes the real tokens' outputs.
    ``text_projection`` (the CLIP pooled-output head) is kept for checkpoint compatibility and
    is not used by SAM 3.
    """

    def __init__(self, cfg: TextConfig):
        super().__init__()
        self.context_length = cfg.context_length
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.width)
        self.positional_embedding = nn.Parameter(torch.empty(cfg.context_length, cfg.width))
        self.transformer = BlockStack(cfg.width, cfg.layers, cfg.heads, cfg.mlp_ratio)
        self.ln_final = nn.LayerNorm(cfg.width)
        self.text_projection = nn.Parameter(torch.empty(cfg.width, CLIP_PROJECTION_DIM))
        nn.init.normal_(self.positional_embedding, std=0.01)
        nn.init.normal_(self.text_projection, std=cfg.width**-0.5)

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        length = token_ids.shape[1]
        if length > self.context_length:
            raise ValueError(f"{length} tokens exceed the context length {self.context_length}")
        x = self.token_embedding(token_ids) + self.positional_embedding[:length]
        causal = torch.full((length, length), float("-inf"), dtype=x.dtype, device=x.device).triu(1)
        return self.ln_final(self.transformer(x, causal))


class TextEncoder(nn.Module):
    """Phrases -> per-token features of width ``d_model`` (the official ``VETextEncoder``).

    ``forward(texts: list[str] | str, device=None) -> TextFeatures`` (batch-first, see
    ``TextFeatures``; ``.language_features`` etc. give the official sequence-first tensors).
    Every phrase is tokenized to exactly ``cfg.context_length`` tokens (zero padded, too-long
    phrases cut with the end token kept last). ``device`` defaults to the weights' device;
    the output dtype is the weights' dtype.

    ``encode_cached`` gives the same result but remembers each phrase's encoding (inference only).
    """

    def __init__(
        self,
        cfg: TextConfig,
        d_model: int = 256,
        tokenizer: BPETokenizer | None = None,
        cache_size: int = 256,
    ):
        super().__init__()
        self.cfg = cfg
        self.context_length = cfg.context_length
        self.tokenizer = tokenizer if tokenizer is not None else BPETokenizer()
        self.encoder = CausalTextTransformer(cfg)
        self.resizer = nn.Linear(cfg.width, d_model)
        self.cache_size = cache_size
        self._phrase_cache: OrderedDict[tuple[str, str, torch.dtype], TextFeatures] = OrderedDict()
        # new weights make cached encodings stale
        self._register_load_state_dict_pre_hook(self._forget_on_load)

    def tokenize(self, texts: str | list[str]) -> torch.Tensor:
        """(B, context_length) int64 token ids on the CPU."""
        return self.tokenizer(texts, context_length=self.context_length)

    def forward_tokens(self, token_ids: torch.Tensor) -> TextFeatures:
        """Encode already tokenized phrases: token_ids (B, L) int64 on the weights' device."""
        hidden = self.encoder(token_ids)
        return TextFeatures(
            features=self.resizer(hidden),
            # id 0 is padding, but also the byte "!" when it starts a word piece ("!~"); the
            # official mask hides those tokens as well, and parity keeps that
            padding_mask=token_ids == 0,
            embeddings=self.encoder.token_embedding(token_ids),
            token_ids=token_ids,
        )

    def forward(self, texts: str | list[str], device: torch.device | str | None = None) -> TextFeatures:
        texts = check_phrases(texts)
        if device is None:
            device = self.resizer.weight.device
        return self.forward_tokens(self.tokenize(texts).to(device))

    # -- per-phrase cache ----------------------------------------------------------------------

    @torch.no_grad()
    def encode_cached(self, texts: str | list[str], device: torch.device | str | None = None) -> TextFeatures:
        """Like ``forward`` but each distinct phrase is encoded once and kept (LRU, ``cache_size``
        entries, keyed by phrase, device and dtype). Outputs carry no autograd history."""
        texts = check_phrases(texts)
        device = torch.device(device) if device is not None else self.resizer.weight.device
        dtype = self.resizer.weight.dtype
        keys = [(text, str(device), dtype) for text in texts]
        missing = list(dict.fromkeys(k for k in keys if k not in self._phrase_cache))
        fresh: dict[tuple[str, str, torch.dtype], TextFeatures] = {}
        if missing:
            encoded = self.forward([k[0] for k in missing], device=device)
            for i, key in enumerate(missing):
                # copies, so a cached row does not keep its whole batch alive
                row = encoded.select(i)
                fresh[key] = TextFeatures(*(t.clone() for t in (row.features, row.padding_mask, row.embeddings, row.token_ids)))
        rows: list[TextFeatures] = []
        for key in keys:
            row = fresh.get(key)
            if row is None:
                row = self._phrase_cache[key]
                self._phrase_cache.move_to_end(key)
            rows.append(row)
        for key, row in fresh.items():
            self._phrase_cache[key] = row
            self._phrase_cache.move_to_end(key)
        while len(self._phrase_cache) > self.cache_size:
            self._phrase_cache.popitem(last=False)
        return TextFeatures.cat(rows)

    def _forget_on_load(self, *args: object, **kwargs: object) -> None:
        self.clear_cache()

    def clear_cache(self) -> None:
        """Forget every cached phrase encoding."""
        self._phrase_cache.clear()

    def cache_info(self) -> dict[str, int]:
        return {"entries": len(self._phrase_cache), "max_entries": self.cache_size}
