"""CLIP byte-level BPE tokenizer, producing the same ids as SAM 3's text tokenizer.

Text is repaired with ftfy, HTML entities are unescaped (twice, so ``&amp;amp;`` becomes ``&``),
runs of whitespace collapse to one space, and everything is lower-cased. The cleaned text is cut
into words (letter runs, single digits, punctuation runs, English contractions and the two
special tokens), each word is mapped byte-by-byte onto printable symbols and merged with the
ranked BPE merges of ``bpe_simple_vocab_16e6.txt.gz``; the last symbol of a word carries ``</w>``.
"""

from __future__ import annotations

import gzip
import html
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import ftfy
import regex
import torch

START_OF_TEXT = "<start_of_text>"
END_OF_TEXT = "<end_of_text>"
# the vocabulary file holds a header line, then more merges than CLIP uses: keep 49152 - 256 - 2
NUM_MERGES = 49152 - 256 - 2
VOCAB_FILE = "bpe_simple_vocab_16e6.txt.gz"
# shipped as package data: opensam3/assets/
DEFAULT_VOCAB_PATH = Path(__file__).resolve().parents[2] / "assets" / VOCAB_FILE

_WORD_SPLIT = regex.compile(
    "|".join(
        [
            regex.escape(START_OF_TEXT),
            regex.escape(END_OF_TEXT),
            r"'s|'t|'re|'ve|'m|'ll|'d",
            r"[\p{L}]+",
            r"[\p{N}]",
            r"[^\s\p{L}\p{N}]+",
        ]
    ),
    regex.IGNORECASE,
)
_WHITESPACE_RUN = regex.compile(r"\s+")


def _byte_symbols() -> tuple[list[str], list[int]]:
    """One printable character per byte value, so BPE never sees whitespace or control bytes.

    Returns (symbol of each byte value, byte values in vocabulary order). Bytes that are already
    printable Latin-1 keep their own character and come first in the vocabulary (in byte order);
    the others follow, taking code points 256, 257, ... in byte order.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    keep = set(printable)
    symbols = [chr(b) for b in range(256)]
    others = [b for b in range(256) if b not in keep]
    for n, byte in enumerate(others):
        symbols[byte] = chr(256 + n)
    return symbols, printable + others


def clean_text(text: str) -> str:
    """ftfy repair, double HTML unescape, whitespace collapse, lower case."""
    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return _WHITESPACE_RUN.sub(" ", text).strip().lower()


def _read_merges(vocab_path: str | Path | None) -> list[tuple[str, str]]:
    if vocab_path is None:
        if DEFAULT_VOCAB_PATH.is_file():
            raw = DEFAULT_VOCAB_PATH.read_bytes()
        else:  # installed in a zip or another non-file loader
            raw = resources.files("opensam3").joinpath("assets", VOCAB_FILE).read_bytes()
    else:
        path = Path(vocab_path)
        if not path.is_file():
            raise FileNotFoundError(f"BPE vocabulary not found: {path}")
        raw = path.read_bytes()
    lines = gzip.decompress(raw).decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1 : NUM_MERGES + 1]]
    if len(merges) != NUM_MERGES or any(len(m) != 2 for m in merges):
        raise ValueError(f"{vocab_path or VOCAB_FILE} is not a CLIP BPE merge list ({len(merges)} merges read)")
    return merges  # type: ignore[return-value]


class BPETokenizer:
    """Tokenizer giving the official SAM 3 (CLIP) token ids.

    ``encode(text)`` returns the raw BPE ids of one phrase (no start/end tokens).
    ``tokenizer(texts, context_length)`` returns a (B, context_length) int64 tensor: start token,
    BPE ids, end token, zero padding. A phrase that does not fit is cut to ``context_length``
    tokens and its last kept token is replaced by the end token.
    """

    def __init__(self, vocab_path: str | Path | None = None, word_cache_size: int = 100_000):
        self._byte_symbol, byte_order = _byte_symbols()
        merges = _read_merges(vocab_path)
        base = [self._byte_symbol[b] for b in byte_order]
        tokens = base + [s + "</w>" for s in base]
        tokens += [a + b for a, b in merges]
        tokens += [START_OF_TEXT, END_OF_TEXT]
        self.token_to_id: dict[str, int] = {t: i for i, t in enumerate(tokens)}
        self.id_to_token: list[str] = tokens
        self._merge_rank: dict[tuple[str, str], int] = {m: r for r, m in enumerate(merges)}
        self._symbol_to_byte = {s: b for b, s in enumerate(self._byte_symbol)}
        self.sot_token_id = self.token_to_id[START_OF_TEXT]
        self.eot_token_id = self.token_to_id[END_OF_TEXT]
        self.vocab_size = len(tokens)
        self._word_cache: dict[str, tuple[int, ...]] = {}
        self._word_cache_size = word_cache_size

    # -- BPE -----------------------------------------------------------------------------------

    def _merge_word(self, word: str) -> list[str]:
        """Apply the ranked merges to one byte-symbol word until no ranked pair is left."""
        parts = list(word[:-1]) + [word[-1] + "</w>"]
        ranks = self._merge_rank
        while len(parts) > 1:
            best_rank, best = None, None
            for pair in zip(parts, parts[1:]):
                rank = ranks.get(pair)
                if rank is not None and (best_rank is None or rank < best_rank):
                    best_rank, best = rank, pair
            if best is None:
                break
            first, second = best
            merged: list[str] = []
            i = 0
            while i < len(parts):
                # merge left to right without overlap, as a single pass over the word
                if i + 1 < len(parts) and parts[i] == first and parts[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            parts = merged
        return parts

    def _word_ids(self, word: str) -> tuple[int, ...]:
        ids = self._word_cache.get(word)
        if ids is None:
            if word in (START_OF_TEXT, END_OF_TEXT):
                ids = (self.token_to_id[word],)
            else:
                ids = tuple(self.token_to_id[p] for p in self._merge_word(word))
            if len(self._word_cache) >= self._word_cache_size:
                self._word_cache.clear()
            self._word_cache[word] = ids
        return ids

    # -- public --------------------------------------------------------------------------------

    def encode(self, text: str) -> list[int]:
        """Raw BPE ids of ``text`` after cleaning; no start/end tokens, no length limit."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        ids: list[int] = []
        to_symbol = self._byte_symbol
        for word in _WORD_SPLIT.findall(clean_text(text)):
            ids.extend(self._word_ids("".join(to_symbol[b] for b in word.encode("utf-8"))))
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        """Text of a list of ids (word ends become spaces; special tokens are kept verbatim)."""
        symbols = "".join(self.id_to_token[int(i)] for i in ids)
        out = bytearray()
        for piece in regex.split(f"({regex.escape(START_OF_TEXT)}|{regex.escape(END_OF_TEXT)}|</w>)", symbols):
            if piece == "</w>":
                out += b" "
            elif piece in (START_OF_TEXT, END_OF_TEXT):
                out += piece.encode()
            else:
                out += bytes(self._symbol_to_byte[c] for c in piece)
        return out.decode("utf-8", errors="replace")

    def __call__(self, texts: str | Sequence[str], context_length: int = 32) -> torch.Tensor:
        """(B, context_length) int64 ids: [start, *bpe, end, 0, ...]; too long -> cut, last = end.

        A single ``str`` counts as a batch of one. The default length is SAM 3's (the official
        tokenizer's own default is CLIP's 77).
        """
        texts = check_phrases(texts)
        if context_length < 1:
            raise ValueError(f"context_length must be >= 1, got {context_length}")
        out = torch.zeros(len(texts), context_length, dtype=torch.long)
        for row, text in enumerate(texts):
            ids = [self.sot_token_id, *self.encode(text), self.eot_token_id]
            if len(ids) > context_length:
                ids = ids[:context_length]
                ids[-1] = self.eot_token_id
            out[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        return out


def check_phrases(texts: object) -> list[str]:
    """The phrases of a batch as a list; a single ``str`` is a batch of one.

    Raises ValueError for an empty batch and TypeError for anything that is not a string.
    """
    if isinstance(texts, str):
        return [texts]
    if not isinstance(texts, Sequence):
        raise TypeError(f"text prompts must be a list of str, got {type(texts).__name__}")
    if len(texts) == 0:
        raise ValueError("text prompts: got an empty list; give at least one phrase")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"text prompts must be str; item {i} is {type(text).__name__}: {text!r}")
    return list(texts)
