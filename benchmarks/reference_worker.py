"""Runs inside the reference environment (shared/reference/run.sh): the official sam3 code on
the same seeded checkpoint and image as bench_image.py. Prints one JSON line."""
import cpu_redirect  # noqa: F401  (the reference shim: must be the first import)
import json
from peak_memory import peak_rss_gb  # the benchmarks folder: this script's own
import statistics
import sys
import time

import numpy as np
import torch
from PIL import Image

import sam3.model_builder as mb
from sam3.model.sam3_image_processor import Sam3Processor


def main():
    checkpoint, repeats, phrases = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
    bpe = str(__import__("pathlib").Path(__file__).resolve().parents[1] / "opensam3" / "assets" / "bpe_simple_vocab_16e6.txt.gz")
    start = time.perf_counter()
    model = mb.build_sam3_image_model(bpe_path=bpe, device="cpu", load_from_HF=False, checkpoint_path=None)
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["model"]
    model.load_state_dict({k[len("detector."):]: v for k, v in state.items() if k.startswith("detector.")}, strict=False)
    del state
    model.eval()
    load_s = time.perf_counter() - start
    image = Image.fromarray(np.random.default_rng(1).integers(0, 256, size=(480, 640, 3), dtype=np.uint8))
    processor = Sam3Processor(model, device="cpu", confidence_threshold=0.5)
    encode, prompt = [], []
    with torch.inference_mode():
        for _ in range(repeats):
            t = time.perf_counter()
            st = processor.set_image(image)
            encode.append(time.perf_counter() - t)
        for phrase in phrases:
            t = time.perf_counter()
            processor.set_text_prompt(state=st, prompt=phrase)
            prompt.append(time.perf_counter() - t)
    print(json.dumps({"system": "official sam3 fp32", "load_s": load_s, "set_image_s": statistics.median(encode),
                      "prompt_s": statistics.median(prompt),
                      "peak_rss_gb": peak_rss_gb()}))


if __name__ == "__main__":
    main()
