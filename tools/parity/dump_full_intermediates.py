"""Debug aid: the official full-size model on the seeded checkpoint, with the intermediate tensors
of one text prompt dumped (FPN levels, text features, encoder memory, decoder states, masks).
Usage: run.sh tools/parity/dump_full_intermediates.py CKPT.pt OUT.safetensors"""
import cpu_redirect  # noqa: F401
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

import sam3.model_builder as mb
from sam3.model.sam3_image_processor import Sam3Processor

BPE = str(Path(__file__).resolve().parents[2] / "opensam3" / "assets" / "bpe_simple_vocab_16e6.txt.gz")


def main():
    ckpt, out = sys.argv[1], sys.argv[2]
    model = mb.build_sam3_image_model(bpe_path=BPE, device="cpu", load_from_HF=False, checkpoint_path=None)
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["model"]
    model.load_state_dict({k[9:]: v for k, v in state.items() if k.startswith("detector.")}, strict=False)
    del state
    model.eval()
    T = {}
    hooks = []

    def keep(name):
        def hook(_m, _inp, output):
            if torch.is_tensor(output):
                T[name] = output.detach().clone()
            elif isinstance(output, dict):
                for k, v in output.items():
                    if torch.is_tensor(v):
                        T[f"{name}.{k}"] = v.detach().clone()
            elif isinstance(output, (tuple, list)):
                for i, v in enumerate(output):
                    if torch.is_tensor(v):
                        T[f"{name}.{i}"] = v.detach().clone()
        return hook

    hooks.append(model.transformer.encoder.register_forward_hook(keep("encoder")))
    hooks.append(model.transformer.decoder.register_forward_hook(keep("decoder")))
    hooks.append(model.geometry_encoder.register_forward_hook(keep("geometry")))
    hooks.append(model.backbone.vision_backbone.trunk.register_forward_hook(keep("trunk")))
    img = Image.fromarray(np.random.default_rng(1).integers(0, 256, size=(480, 640, 3), dtype=np.uint8))
    proc = Sam3Processor(model, device="cpu", confidence_threshold=0.0)
    with torch.inference_mode():
        st = proc.set_image(img)
        for i, f in enumerate(st["backbone_out"]["backbone_fpn"]):
            T[f"fpn.{i}"] = f.clone()
        proc.set_text_prompt(state=st, prompt="a person in a red shirt")
        T["language_features"] = st["backbone_out"]["language_features"].clone()
    save_file({k: v.contiguous() for k, v in T.items() if v.is_floating_point() or v.dtype == torch.bool}, out)
    print({k: tuple(v.shape) for k, v in T.items()})


if __name__ == "__main__":
    main()
