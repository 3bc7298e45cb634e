"""Reading safetensors tensor by tensor (cast on read), and `opensam3 convert`."""

import json
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file, save_file

import opensam3
from opensam3.checkpoint import checkpoint_keys, read_checkpoint, read_safetensors
from opensam3.cli import main as cli_main
from opensam3.errors import CheckpointError


def _mixed_file(path):
    tensors = {
        "detector.a": torch.randn(3, 5),
        "detector.half": torch.randn(7).half(),
        "tracker.b": torch.randn(2, 2, 2).bfloat16(),
        "detector.index": torch.arange(6, dtype=torch.int64).reshape(2, 3),
        "detector.flag": torch.tensor([True, False]),
        "detector.empty": torch.zeros(0, 4),
    }
    save_file(tensors, str(path), metadata={"note": "x"})
    return tensors


def test_read_safetensors_equals_the_library(tmp_path):
    path = tmp_path / "mixed.safetensors"
    _mixed_file(path)
    ours, library = read_safetensors(path), load_file(str(path))
    assert ours.keys() == library.keys()
    for key, value in library.items():
        assert ours[key].dtype == value.dtype and torch.equal(ours[key], value), key


def test_cast_on_read_touches_only_floating_tensors(tmp_path):
    path = tmp_path / "mixed.safetensors"
    tensors = _mixed_file(path)
    state = read_checkpoint(path, lambda key: torch.float32 if key.startswith("tracker.") else torch.bfloat16)
    assert state["detector.a"].dtype == torch.bfloat16
    assert torch.equal(state["detector.a"], tensors["detector.a"].bfloat16())
    assert state["detector.half"].dtype == torch.bfloat16
    assert state["tracker.b"].dtype == torch.float32 and torch.equal(state["tracker.b"], tensors["tracker.b"].float())
    assert state["detector.index"].dtype == torch.int64 and state["detector.flag"].dtype == torch.bool


def test_cast_reads_cross_buffer_boundaries(tmp_path, monkeypatch):
    """A cast tensor is read through a small reused buffer: values survive chunk edges and a
    last partial chunk, and a file cut inside a tensor is still reported."""
    monkeypatch.setattr("opensam3.checkpoint._CAST_CHUNK_BYTES", 24)
    tensors = {"detector.w": torch.randn(37), "detector.h": torch.randn(5, 7).half(), "detector.one": torch.randn(1)}
    path = tmp_path / "odd_sizes.safetensors"
    save_file(tensors, str(path))
    state = read_safetensors(path, lambda key: torch.bfloat16)
    for key, value in tensors.items():
        assert state[key].dtype == torch.bfloat16 and state[key].shape == value.shape
        assert torch.equal(state[key], value.bfloat16()), key
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(path.read_bytes()[:-30])
    with pytest.raises(CheckpointError, match="cut.safetensors.*truncated"):
        read_safetensors(cut, lambda key: torch.bfloat16)


def test_checkpoint_keys_come_from_the_header_alone(tmp_path):
    path = tmp_path / "mixed.safetensors"
    tensors = _mixed_file(path)
    assert sorted(checkpoint_keys(path)) == sorted(tensors)
    # the tensor bytes are never read: a file cut short still lists its names
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(path.read_bytes()[:-10])
    assert sorted(checkpoint_keys(cut)) == sorted(tensors)
    pt = tmp_path / "mixed.pt"
    torch.save({"model": tensors}, pt)
    assert sorted(checkpoint_keys(pt)) == sorted(tensors)
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        checkpoint_keys(tmp_path / "missing.safetensors")


def test_truncated_and_malformed_files_are_named(tmp_path):
    path = tmp_path / "mixed.safetensors"
    _mixed_file(path)
    data = path.read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[:-10])
    with pytest.raises(CheckpointError, match="cut.safetensors.*truncated"):
        read_checkpoint(cut)
    header = tmp_path / "header.safetensors"
    header.write_bytes((20).to_bytes(8, "little") + b"{not json at all!!!}" + b"\0" * 8)
    with pytest.raises(CheckpointError, match="header is not JSON"):
        read_checkpoint(header)
    odd = tmp_path / "odd.safetensors"
    text = json.dumps({"w": {"dtype": "F99", "shape": [1], "data_offsets": [0, 4]}}).encode()
    odd.write_bytes(len(text).to_bytes(8, "little") + text + b"\0" * 4)
    with pytest.raises(CheckpointError, match="'w' has an unsupported or malformed entry"):
        read_checkpoint(odd)
    text = json.dumps({"w": {"dtype": "F32", "shape": [1], "data_offsets": 5}}).encode()
    odd.write_bytes(len(text).to_bytes(8, "little") + text + b"\0" * 4)
    with pytest.raises(CheckpointError, match="'w' has an unsupported or malformed entry"):
        read_checkpoint(odd)
    text = json.dumps({"w": [1, 2]}).encode()
    odd.write_bytes(len(text).to_bytes(8, "little") + text)
    with pytest.raises(CheckpointError, match="'w' has a malformed header entry"):
        read_checkpoint(odd)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the peak from /proc")
def test_bfloat16_read_never_holds_the_float32_file(tmp_path):
    """Peak memory of a bfloat16 read of a 256 MB float32 file: the 128 MB result plus the 8 MB
    read buffer, not the whole float32 file (a memory-mapped read peaks at 384 MB) nor a float32
    copy of each 32 MB tensor."""
    path = tmp_path / "big.safetensors"
    save_file({f"detector.w{i}": torch.full((1024, 8192), float(i)) for i in range(8)}, str(path))
    script = textwrap.dedent(f"""
        import torch
        from opensam3.checkpoint import read_checkpoint

        def peak_kb():
            return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM"))

        with open("/proc/self/clear_refs", "w") as handle:  # the peak restarts from the current size
            handle.write("5")
        before = peak_kb()
        state = read_checkpoint({str(path)!r}, lambda key: torch.bfloat16)
        assert all(v.dtype == torch.bfloat16 for v in state.values())
        print((peak_kb() - before) / 1024)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    growth_mb = float(done.stdout.strip().splitlines()[-1])
    assert 120 <= growth_mb < 150, growth_mb


def test_convert_to_bfloat16_safetensors_loads_the_same_model(tiny_state, tmp_path, capsys):
    source = tmp_path / "sam3.pt"
    torch.save({"model": {"detector." + k: v for k, v in tiny_state.items()}}, source)
    target = tmp_path / "sam3_bf16.safetensors"
    assert cli_main(["convert", str(source), str(target), "--dtype", "bfloat16"]) == 0
    assert "wrote" in capsys.readouterr().out
    assert all(v.dtype == torch.bfloat16 for v in load_file(str(target)).values() if v.is_floating_point())
    converted = opensam3.load(target, config="tiny", dtype=torch.bfloat16).model.state_dict()
    direct = opensam3.load(source, config="tiny", dtype=torch.bfloat16).model.state_dict()
    assert converted.keys() == direct.keys()
    assert all(torch.equal(converted[k], direct[k]) for k in direct)


def test_convert_keeps_the_config_metadata(tiny_checkpoint, tmp_path):
    target = tmp_path / "tiny_bf16.safetensors"
    assert cli_main(["convert", str(tiny_checkpoint), str(target), "--dtype", "bfloat16"]) == 0
    from safetensors import safe_open

    with safe_open(str(tiny_checkpoint), framework="pt") as source, safe_open(str(target), framework="pt") as copy:
        assert copy.metadata() == source.metadata() and "opensam3_config" in copy.metadata()
    assert opensam3.load(target, dtype=torch.bfloat16).model.config.name == "tiny"


def test_convert_refuses_bad_targets(tiny_checkpoint, tmp_path, capsys):
    assert cli_main(["convert", str(tiny_checkpoint), str(tmp_path / "out.pt")]) == 2
    assert "must end in .safetensors" in capsys.readouterr().err
    assert cli_main(["convert", str(tiny_checkpoint), str(tiny_checkpoint)]) == 2
    assert "is the checkpoint being converted" in capsys.readouterr().err


def _shifted_copy(tiny_sam, path, shift):
    """tiny_sam's file with every floating tensor moved by ``shift`` (same config metadata)."""
    from safetensors import safe_open

    with safe_open(str(path.parent / "base.safetensors"), framework="pt") as handle:
        metadata = handle.metadata()
        state = {k: handle.get_tensor(k) for k in handle.keys()}
    save_file({k: v + shift if v.is_floating_point() else v for k, v in state.items()}, str(path), metadata=metadata)
    return state


def test_average_is_the_weighted_mean_and_keeps_the_config(tiny_sam, tmp_path, capsys):
    tiny_sam.save(tmp_path / "base.safetensors")
    base = _shifted_copy(tiny_sam, tmp_path / "a.safetensors", 0.0)
    _shifted_copy(tiny_sam, tmp_path / "b.safetensors", 1.0)
    out = tmp_path / "soup.safetensors"
    assert cli_main(["average", str(tmp_path / "a.safetensors"), str(tmp_path / "b.safetensors"),
                     "--out", str(out), "--weights", "3,1"]) == 0
    assert "average of 2 checkpoints" in capsys.readouterr().out
    soup = load_file(str(out))
    assert soup.keys() == base.keys()
    for key, value in base.items():
        expected = value + 0.25 if value.is_floating_point() else value
        assert soup[key].dtype == value.dtype and torch.allclose(soup[key], expected, atol=1e-6), key
    # the metadata config travels: the file loads as the tiny model without naming a config
    assert opensam3.load(out).model.config.name == "tiny"


def test_average_refuses_files_of_different_models(tiny_sam, tmp_path, capsys):
    tiny_sam.save(tmp_path / "base.safetensors")
    state = _shifted_copy(tiny_sam, tmp_path / "a.safetensors", 0.0)
    first = next(k for k, v in state.items() if v.is_floating_point())
    save_file({k: v for k, v in state.items() if k != first}, str(tmp_path / "fewer.safetensors"))
    save_file(state, str(tmp_path / "other_config.safetensors"), metadata={"opensam3_config": "{}"})
    out = tmp_path / "soup.safetensors"
    a = str(tmp_path / "a.safetensors")
    assert cli_main(["average", a, str(tmp_path / "fewer.safetensors"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "is not the same model" in err and "1 missing" in err and first in err
    assert cli_main(["average", a, str(tmp_path / "other_config.safetensors"), "--out", str(out)]) == 2
    assert "different model configs" in capsys.readouterr().err
    assert cli_main(["average", a, "--out", str(out)]) == 2
    assert "at least two" in capsys.readouterr().err
    assert cli_main(["average", a, a, "--out", str(out), "--weights", "1,x"]) == 2
    assert "--weights" in capsys.readouterr().err
    assert cli_main(["average", a, a, "--out", str(out), "--weights", "1,0"]) == 2
    assert "positive weight" in capsys.readouterr().err
    assert cli_main(["average", a, str(tmp_path / "missing.safetensors"), "--out", str(out)]) == 2
    assert "not found" in capsys.readouterr().err
    before = (tmp_path / "a.safetensors").read_bytes()
    assert cli_main(["average", a, a, "--out", a]) == 2  # would overwrite an input
    assert "one of the checkpoints being averaged" in capsys.readouterr().err
    assert (tmp_path / "a.safetensors").read_bytes() == before and not out.exists()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="POSIX file modes")
def test_written_checkpoints_get_the_usual_file_mode(tiny_sam, tmp_path):
    """safetensors alone writes owner-only files; ours follow the umask like any new file, so a
    model written to a shared folder is readable there."""
    import os

    previous = os.umask(0o022)
    try:
        tiny_sam.save(tmp_path / "shared.safetensors")
        os.umask(0o077)
        tiny_sam.save(tmp_path / "private.safetensors")
    finally:
        os.umask(previous)
    assert (tmp_path / "shared.safetensors").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "private.safetensors").stat().st_mode & 0o777 == 0o600
    assert not list(tmp_path.glob("*.tmp"))
    assert opensam3.load(tmp_path / "shared.safetensors").model.config.name == "tiny"
