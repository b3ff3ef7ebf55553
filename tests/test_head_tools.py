"""The head-training tools (tools/train_tone.py, train_colour_tone.py, train_denoiser.py, also
--sharpener): a rerun with the same seed writes the same weights, fresh head included."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from safetensors.torch import load_file

from pikfix.checkpoint import read_header, save_checkpoint
from pikfix.model import build_model

ROOT = Path(__file__).resolve().parents[1]
_DENOISER = ["--width", "8", "--steps", "3", "--batch-size", "2", "--crop", "32", "--pool", "8", "--val-samples", "4"]
TOOLS = {  # test id: (tool, the head it trains, arguments)
    "tone": ("train_tone.py", "tone", ["--fresh", "--width", "8", "--samples-per-photo", "2", "--steps", "5"]),
    "colour_tone": (
        "train_colour_tone.py", "colour_tone", ["--width", "8", "--samples-per-photo", "2", "--steps", "5"]
    ),
    "denoiser": ("train_denoiser.py", "denoiser", _DENOISER),
    "sharpener": ("train_denoiser.py", "sharpener", [*_DENOISER, "--sharpener"]),
    "denoiser_recipe": (
        "train_denoiser.py", "denoiser", [*_DENOISER, "--keep-blur", "--noise-sigma", "0.01", "0.05", "--loss", "l2"]
    ),
}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("heads")
    photos = root / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray((rng.random((260, 300, 3)) * 255).astype(np.uint8)).save(photos / f"p{i}.png")
    model = root / "tiny.safetensors"
    save_checkpoint(build_model("tiny"), model)
    return photos, model


@pytest.mark.parametrize("head", sorted(TOOLS))
def test_a_rerun_writes_the_same_weights(head: str, inputs: tuple[Path, Path], tmp_path: Path) -> None:
    photos, model = inputs
    tool, net, arguments = TOOLS[head]
    outs = []
    for run in range(2):
        out = tmp_path / f"run{run}.safetensors"
        cmd = [sys.executable, str(ROOT / "tools" / tool), str(photos), "--model", str(model), "--out", str(out),
               "--threads", "1", *arguments]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=ROOT)
        assert proc.returncode == 0, proc.stderr[-2000:]
        outs.append(load_file(out))
    assert outs[0].keys() == outs[1].keys()
    assert any(key.startswith(f"restoration.{net}.") for key in outs[0])  # the head trained is in the file
    assert all(np.array_equal(outs[0][k].numpy(), outs[1][k].numpy()) for k in outs[0])


def test_the_denoiser_recipe_options_are_recorded(inputs: tuple[Path, Path], tmp_path: Path) -> None:
    photos, model = inputs
    out = tmp_path / "recipe.safetensors"
    cmd = [sys.executable, str(ROOT / "tools" / "train_denoiser.py"), str(photos), "--model", str(model), "--out", str(out),
           "--threads", "1", *TOOLS["denoiser_recipe"][2]]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    recorded = read_header(out)["metadata"]["denoiser_train_config"]
    assert (recorded["loss"], recorded["soft_fraction"]) == ("l2", 0.5)
    assert recorded["degradation"]["noise_sigma"] == [0.01, 0.05] and recorded["degradation"]["p_blur"] == 0.0
    refused = subprocess.run([*cmd[:-len(TOOLS["denoiser_recipe"][2])], "--sharpener", "--keep-blur"],
                             capture_output=True, text=True, timeout=240, cwd=ROOT)
    assert refused.returncode == 2 and "--keep-blur is for the denoiser" in refused.stderr
