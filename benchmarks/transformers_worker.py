"""Runs inside the side venv that bench_image.py builds (torch 2.13.0 + transformers 5.23.0):
Hugging Face's ``Sam3Model`` at full size in bfloat16 on the same image and phrases. Prints one
JSON line.

The official weights cannot be downloaded here and transformers ships no converter for the
seeded official-layout file, so the model is built from ``Sam3Config()`` (the release sizes) with
its own random initialisation. Time and memory do not depend on the values: every step is dense
(a fixed set of queries, no data-dependent pruning). The image goes through the same resize and
normalisation as its processor (1008 px, mean 0.5, std 0.5), done with torch so that no
torchvision is needed; the phrases arrive as CLIP token ids from the parent process (the same BPE
vocabulary), one new phrase per prompt as a user would send them.
"""

import json
from peak_memory import peak_rss_gb  # the benchmarks folder: this script's own
import statistics
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from transformers import Sam3Config, Sam3Model


def preprocess(image: np.ndarray, size: int) -> torch.Tensor:
    pixels = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255.0
    pixels = F.interpolate(pixels, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return ((pixels - 0.5) / 0.5).to(torch.bfloat16)


def main() -> None:
    spec = json.loads(sys.argv[1])
    torch.manual_seed(0)
    start = time.perf_counter()
    config = Sam3Config()
    model = Sam3Model._from_config(config, dtype=torch.bfloat16).eval()
    load_s = time.perf_counter() - start
    size = config.vision_config.backbone_config.image_size
    image = np.random.default_rng(1).integers(0, 256, size=(480, 640, 3), dtype=np.uint8)
    encode, prompt = [], []
    with torch.inference_mode():
        for _ in range(spec["repeats"]):
            t = time.perf_counter()
            vision = model.get_vision_features(pixel_values=preprocess(image, size))
            encode.append(time.perf_counter() - t)
        for ids, mask in zip(spec["input_ids"], spec["attention_mask"]):
            t = time.perf_counter()
            out = model(vision_embeds=vision, input_ids=torch.tensor([ids]), attention_mask=torch.tensor([mask]))
            torch.sigmoid(out.pred_logits)  # the scores a user reads next
            prompt.append(time.perf_counter() - t)
    print(json.dumps({"system": "transformers bfloat16", "load_s": load_s,
                      "set_image_s": statistics.median(encode[1:] if len(encode) >= 3 else encode),
                      "prompt_s": statistics.median(prompt),
                      "peak_rss_gb": peak_rss_gb()}))


if __name__ == "__main__":
    main()
