"""Text side of SAM 3: CLIP BPE tokenizer and the causal text encoder."""

from opensam3.model.text.encoder import TextEncoder, TextFeatures
from opensam3.model.text.tokenizer import BPETokenizer, clean_text

__all__ = ["BPETokenizer", "TextEncoder", "TextFeatures", "clean_text"]
