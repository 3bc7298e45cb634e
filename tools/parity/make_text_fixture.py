"""Text parity fixture: official SAM 3 tokenizer ids and tiny text-encoder outputs.

Run with the reference runner (official sam3==0.1.4, CPU shim):

    bash /work/shared/reference/run.sh tools/parity/make_text_fixture.py [OUT]

Writes tests/fixtures/modules/text.safetensors:
- tok.ids_ctx32 / tok.ids_ctx77: (N, 32) / (N, 77) official tokenizer output for every phrase
  in the ``tokenizer_phrases`` metadata;
- tok.encode_flat / tok.encode_offsets: raw ``encode()`` ids of each phrase, concatenated;
- enc.*: the tiny official VETextEncoder (width 128, 2 layers, 4 heads, context 32; weights by
  the seeded rule under ``backbone.language_backbone.``) on the ``encoder_phrases`` batch:
  language_mask (B, L), language_features (L, B, 256), language_embeds (L, B, 128).
Weights are not stored; the test rebuilds them from the seeded rule.
"""

import cpu_redirect  # noqa: F401  (must come first)

import json
import random
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from opensam3.seeded import seeded_value  # noqa: E402  (pure torch, no model code)
from sam3.model.text_encoder_ve import VETextEncoder  # noqa: E402
from sam3.model.tokenizer_ve import SimpleTokenizer  # noqa: E402

BPE = ROOT / "opensam3" / "assets" / "bpe_simple_vocab_16e6.txt.gz"
OUT = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "tests" / "fixtures" / "modules" / "text.safetensors"
PREFIX = "backbone.language_backbone."
TINY_TEXT = dict(width=128, heads=4, layers=2, context_length=32, d_model=256)

LONG = (
    "a very long description of a small brown dog sitting next to a large yellow fire hydrant "
    "on a busy street corner in the middle of a rainy afternoon in new york city"
)

ENCODER_PHRASES = [
    "a red dog",  # short
    "",  # empty
    "Café naïve façade 🐶🎉 Über 日本語 Ελληνικά",  # unicode, accents, emoji
    "Tom &amp; Jerry &lt;3 &amp;amp; &quot;cat&quot; &#39;s",  # HTML entities, double escaped
    "   A   BIG\t\tRED \n  Truck   ",  # extra whitespace, upper case
    LONG,  # more than 32 tokens: cut, end token last
    "look!~ a cat",  # '!' (token id 0) inside a word: the official mask calls it padding
    "person",
]

BASE_PHRASES = [
    "dog", "cat", "person", "a person in a red shirt", "the man's hat", "it's a bird", "they're here",
    "we've got 2 cars", "i'm", "you'll", "she'd", "don't", "CAN'T STOP", "rock'n'roll",
    "car 123", "3.14159", "1st place", "version 2.0.1", "room #42", "50% off", "$19.99", "e-mail",
    "state-of-the-art", "hello, world!", "what?!", "wow!!!", "...", "!!!???", "(parenthesis)",
    "[brackets] {braces}", "a/b\\c", "snake_case_name", "CamelCaseName", "ALLCAPS", "mIxEd CaSe",
    "naïve café", "façade", "Ångström", "Straße", "İstanbul", "ﬁne ligature", "Ｆｕｌｌｗｉｄｔｈ",
    "東京タワー", "北京", "서울", "Москва", "Ελλάδα", "עברית", "العربية", "हिन्दी", "ภาษาไทย",
    "🐶", "🐶🐱🐭", "👍🏽", "👨‍👩‍👧", "🇫🇷 flag", "❤️ love", "☃", "★☆", "→ arrow", "∑ sum",
    "&amp;", "&amp;amp;", "&lt;b&gt;bold&lt;/b&gt;", "&nbsp;space", "&#x1F436;", "&copy; 2024",
    "&quot;quoted&quot;", "&unknown;", "fish &amp chips",
    "cafÃ©", "Ã©tÃ©", "â€œquotesâ€\x9d", "doesnâ€™t", "Ã¼ber",
    "  leading", "trailing  ", "\ttab\tseparated\t", "new\nline", "multiple     spaces",
    "\u00a0nbsp\u00a0", "zero\u200bwidth", "\u3000ideographic space", "carriage\r\nreturn",
    "<start_of_text>", "<end_of_text>", "a <end_of_text> b", "<START_OF_TEXT>x", "<unk>", "</w>",
    "!~", "!«", "!é", "~!", "a!~b", "x" * 40, "ab" * 30, "a " * 40,
    "supercalifragilisticexpialidocious", "pneumonoultramicroscopicsilicovolcanoconiosis",
    "a b c d e f g h i j k l m n o p q r s t u v w x y z a b c d e f", LONG,
    "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen twenty twentyone twentytwo twentythree",
    "0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30",
    "", " ", "\n", "'", "''", "'s", "'S", "a's", "O'Neil", "’", "it’s",
]


def random_phrases(count: int, seed: int = 0) -> list[str]:
    """Seeded mixtures of words, digits, punctuation, accents, CJK, emoji and whitespace."""
    rng = random.Random(seed)
    words = ["red", "dog", "Car", "tree", "person", "wheel", "window", "sky", "blue", "striped",
             "zebra", "cup", "Laptop", "bicycle", "giraffe", "toothbrush", "umbrella", "kite"]
    pools = [
        "abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ", "0123456789", "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~",
        "àáâãäåæçèéêëìíîïñòóôõöøùúûüýÿœšž", "日本語中文한국어", "🐶🐱🚗🌳❤️👍🏽🎉", " \t\n",
    ]
    out = []
    for _ in range(count):
        parts = []
        for _ in range(rng.randint(1, 12)):
            if rng.random() < 0.5:
                parts.append(rng.choice(words))
            else:
                pool = rng.choice(pools)
                parts.append("".join(rng.choice(pool) for _ in range(rng.randint(1, 6))))
        out.append(rng.choice([" ", "", "  ", "-"]).join(parts))
    return out


def seeded_init(module: torch.nn.Module, prefix: str) -> None:
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            if tensor.is_floating_point() and not tensor.is_complex():
                tensor.copy_(seeded_value(prefix + name, tensor.shape))


@torch.inference_mode()
def main() -> None:
    torch.manual_seed(0)
    tokenizer = SimpleTokenizer(bpe_path=str(BPE))
    phrases = ENCODER_PHRASES + BASE_PHRASES + random_phrases(120)
    tensors = {
        "tok.ids_ctx32": tokenizer(phrases, context_length=32),
        "tok.ids_ctx77": tokenizer(phrases, context_length=77),
    }
    encoded = [tokenizer.encode(p) for p in phrases]
    tensors["tok.encode_flat"] = torch.tensor([i for ids in encoded for i in ids], dtype=torch.int64)
    tensors["tok.encode_offsets"] = torch.tensor([0] + [len(ids) for ids in encoded], dtype=torch.int64).cumsum(0)

    with torch.inference_mode(False):
        encoder = VETextEncoder(tokenizer=tokenizer, d_model=TINY_TEXT["d_model"], width=TINY_TEXT["width"],
                                heads=TINY_TEXT["heads"], layers=TINY_TEXT["layers"],
                                context_length=TINY_TEXT["context_length"])
        seeded_init(encoder, PREFIX)
    encoder.eval()
    mask, features, embeds = encoder(ENCODER_PHRASES, device="cpu")
    tensors["enc.token_ids"] = tokenizer(ENCODER_PHRASES, context_length=32)
    tensors["enc.language_mask"] = mask
    tensors["enc.language_features"] = features
    tensors["enc.language_embeds"] = embeds

    shapes = {k: list(v.shape) for k, v in encoder.state_dict().items()}
    meta = {
        "tokenizer_phrases": json.dumps(phrases, ensure_ascii=False),
        "encoder_phrases": json.dumps(ENCODER_PHRASES, ensure_ascii=False),
        "config": json.dumps(TINY_TEXT),
        "seed_prefix": PREFIX,
        "state_dict_shapes": json.dumps(shapes),
        "reference": "sam3==0.1.4 (PyPI) SimpleTokenizer + VETextEncoder, CPU fp32",
        "ftfy_version": __import__("ftfy").__version__,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous().clone() for k, v in tensors.items()}, str(OUT), metadata=meta)
    print("saved", OUT, "phrases", len(phrases), "encoder batch", len(ENCODER_PHRASES),
          "mask", mask.shape, mask.dtype, "features", tuple(features.shape), "embeds", tuple(embeds.shape))


if __name__ == "__main__":
    main()
