"""Bad input gets a clear error that names the problem (API and CLI)."""

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import opensam3
from opensam3.cli import main as cli_main
from opensam3.errors import CheckpointError, InvalidInputError


def test_missing_checkpoint_file(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        opensam3.load(tmp_path / "nope.pt")


def test_missing_embedded_weights_say_how_to_get_a_checkpoint(monkeypatch, tmp_path):
    import opensam3.api

    monkeypatch.delenv("OPENSAM3_CHECKPOINT", raising=False)
    monkeypatch.setattr(opensam3.api, "embedded_weights", lambda: tmp_path / "embedded.safetensors")
    with pytest.raises(CheckpointError, match="embedded model's weights are missing.*OPENSAM3_CHECKPOINT=PATH"):
        opensam3.load()
    with pytest.raises(CheckpointError, match="embedded model's weights are missing"):
        opensam3.load("embedded")


def test_corrupt_checkpoint(tmp_path):
    bad = tmp_path / "sam3.pt"
    bad.write_bytes(b"this is not a checkpoint" * 10)
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        opensam3.load(bad)
    bad_st = tmp_path / "model.safetensors"
    bad_st.write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        opensam3.load(bad_st)


def test_sam2_checkpoint_is_recognised(tmp_path):
    path = tmp_path / "sam2.pt"
    torch.save({"model": {"image_encoder.trunk.patch_embed.proj.weight": torch.zeros(2, 3, 7, 7),
                          "sam_mask_decoder.iou_token.weight": torch.zeros(1, 256)}}, path)
    with pytest.raises(CheckpointError, match="SAM 2 checkpoint") as info:
        opensam3.load(path)
    assert "missing" in str(info.value) and "unexpected" in str(info.value)


def test_wrong_config_lists_every_problem_together(tiny_state, tmp_path):
    state = dict(tiny_state)
    state.pop("transformer.decoder.query_embed.weight")
    state["extra.weight"] = torch.zeros(3)
    state["dot_prod_scoring.hs_proj.weight"] = torch.zeros(5, 5)
    path = tmp_path / "broken.safetensors"
    save_file(state, str(path))
    with pytest.raises(CheckpointError) as info:
        opensam3.load(path, config="tiny")
    message = str(info.value)
    assert "1 missing: transformer.decoder.query_embed.weight" in message
    assert "1 unexpected: extra.weight" in message
    assert "dot_prod_scoring.hs_proj.weight (checkpoint (5, 5), model (256, 256))" in message


def test_tiny_weights_with_full_config_say_sizes_do_not_fit(tiny_checkpoint):
    with pytest.raises(CheckpointError, match="wrong shape"):
        opensam3.load(tiny_checkpoint, config="sam3")


def test_unknown_config_name(tiny_checkpoint):
    with pytest.raises(ValueError, match="unknown model config 'huge'"):
        opensam3.load(tiny_checkpoint, config="huge")


def test_corrupt_and_missing_images(tiny_sam, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    with pytest.raises(InvalidInputError, match="broken.png"):
        tiny_sam.segment(broken, text="a dog")
    with pytest.raises(InvalidInputError, match="not found"):
        tiny_sam.segment(tmp_path / "absent.jpg", text="a dog")
    with pytest.raises(InvalidInputError, match="unsupported image type"):
        tiny_sam.segment(12345, text="a dog")
    with pytest.raises(InvalidInputError, match="shape"):
        tiny_sam.segment(np.zeros((4, 5, 6, 7), dtype=np.uint8), text="a dog")


def test_bad_prompts(tiny_sam, sample_image):
    state = tiny_sam.set_image(sample_image)
    with pytest.raises(InvalidInputError, match="empty"):
        tiny_sam.segment(state, text="   ")
    with pytest.raises(InvalidInputError, match="nothing to segment"):
        tiny_sam.segment(state)
    with pytest.raises(InvalidInputError, match="outside the 130x90 image"):
        tiny_sam.segment(state, text="a dog", boxes=[[100, 10, 400, 50]])
    with pytest.raises(InvalidInputError, match="x1 > x0"):
        tiny_sam.segment(state, text="a dog", boxes=[[50, 10, 20, 50]])
    with pytest.raises(InvalidInputError, match="2 boxes but 1 box labels"):
        tiny_sam.segment(state, text="a dog", boxes=[[1, 1, 20, 20], [30, 30, 40, 40]], box_labels=[1])
    with pytest.raises(InvalidInputError, match="4 numbers"):
        tiny_sam.segment(state, text="a dog", boxes=[[1, 2, 3]])


def test_compat_processor_errors(tiny_sam, sample_image):
    processor = opensam3.Sam3Processor(tiny_sam.model, resolution=opensam3.TINY.image_size)
    with pytest.raises(InvalidInputError, match="set_image"):
        processor.set_text_prompt("a dog", {})
    state = processor.set_image(sample_image)
    with pytest.raises(InvalidInputError, match="outside \\[0, 1\\]"):
        processor.add_geometric_prompt([0.9, 0.5, 0.4, 0.2], True, state)


def test_cli_errors_are_one_line(tmp_path, capsys, monkeypatch, tiny_checkpoint):
    import opensam3.api

    monkeypatch.delenv("OPENSAM3_CHECKPOINT", raising=False)
    monkeypatch.setattr(opensam3.api, "embedded_weights", lambda: tmp_path / "embedded.safetensors")
    image = tmp_path / "img.png"
    from PIL import Image

    Image.fromarray(np.zeros((20, 30, 3), dtype=np.uint8)).save(image)
    cases = [
        (["segment", str(image), "--text", "a dog"], "embedded model's weights are missing"),
        (["segment", str(tmp_path / "none.png"), "--text", "a dog"], "image file not found"),
        (["segment", str(image), "--text", " "], "--text is empty"),
        (["segment", str(image), "--text", "a dog", "--box", "0.5,0.5,1.5,0.2"], "outside [0, 1]"),
        (["segment", str(image), "--text", "a dog", "--box", "0.5,0.5,0.2"], "expected four numbers"),
        (["segment", str(image)], "--text PHRASE and/or --box"),
        (["segment", str(image), "--text", "a dog", "--checkpoint", str(tmp_path / "x.pt")], "checkpoint not found"),
    ]
    for argv, expected in cases:
        assert cli_main(argv) == 2, argv
        err = capsys.readouterr().err
        assert expected in err and "Traceback" not in err, (argv, err)


def test_hub_download_without_network_names_the_file(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_hub(name, *args, **kwargs):
        if name == "huggingface_hub":
            raise ImportError("simulated: not installed")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_hub)
    with pytest.raises(CheckpointError, match=r"sam3\.pt from https://huggingface\.co/facebook/sam3.*OPENSAM3_CHECKPOINT"):
        opensam3.Sam3.from_pretrained()
    with pytest.raises(CheckpointError, match="sam3.pt"):
        opensam3.load("facebook/sam3")
    with pytest.raises(CheckpointError, match=r"sam3\.1_multiplex\.pt from https://huggingface\.co/facebook/sam3\.1"):
        opensam3.load_multiplex_tracker("facebook/sam3.1")
