"""Training: loss goes down, exact resume, config/run-dir errors, and a 2-process torchrun."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from pikfix.checkpoint import load_checkpoint
from pikfix.training.degradation import DegradationConfig
from pikfix.training.trainer import Trainer, TrainConfig, TrainError
from pikfix_cli.app import app

CROP = 32
MILD_DAMAGE = {name: 0.0 for name in DegradationConfig().to_dict() if name.startswith("p_")} | {"p_dust": 0.5, "p_noise": 0.5}


def _make_photos(folder: Path, n: int = 6, size: int = 48) -> Path:
    """Distinct colourful pictures: smooth colour fields plus a few shapes."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size] / size
    for i in range(n):
        c0, c1 = rng.random(3), rng.random(3)
        img = c0 * xx[..., None] + c1 * (1 - yy[..., None])
        img[size // 4 : size // 2, size // 3 : 2 * size // 3] = rng.random(3)
        Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8)).save(folder / f"p{i}.png")
    return folder


def _config(**overrides) -> TrainConfig:
    base = {
        "preset": "tiny", "batch_size": 2, "epochs": 50, "num_workers": 0, "lr": 1e-3,
        "checkpoint_every": 1000, "log_every": 1, "val_max_images": 1, "deterministic": True,
        # Mild damage: 30 steps of a tiny net must show the loss going down, not fight the full recipe.
        "data": {"crop": CROP, "val_fraction": 0.2, "degradation": MILD_DAMAGE},
        "loss": {"perceptual": "none", "gan": True},
    }
    base.update(overrides)
    return TrainConfig.from_dict(base)


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    return _make_photos(tmp_path_factory.mktemp("photos"))


def _fixed_batch_l1(trainer: Trainer) -> float:
    """L1 on L plus L1 on ab over fixed training samples (same crops, damage and references)."""
    trainer.train_set.set_epoch(0)
    batch = {k: torch.stack([trainer.train_set[i][k] for i in range(4)]) for k in ("input_l", "ref_l", "ref_ab", "target_l", "target_ab")}
    trainer.model.eval()
    with torch.no_grad():
        out = trainer.model(batch["input_l"], batch["ref_l"], batch["ref_ab"])
    return float((out.l - batch["target_l"]).abs().mean() + (out.ab - batch["target_ab"]).abs().mean())


def test_training_lowers_the_loss(photos, tmp_path):
    trainer = Trainer(photos, tmp_path / "run", _config(max_steps=30), torch.device("cpu"), log=lambda s: None)
    before = _fixed_batch_l1(trainer)
    steps: list[int] = []
    trainer.fit(lambda step, total, terms: steps.append(step))
    assert steps == list(range(1, 31))
    assert _fixed_batch_l1(trainer) < 0.85 * before
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert log[0]["event"] == "start" and log[0]["config"]["preset"] == "tiny"
    assert any(e["event"] == "val" and e["step"] == 0 for e in log)
    assert (tmp_path / "run" / "last.safetensors").is_file()


def test_resume_reproduces_an_uninterrupted_run(photos, tmp_path):
    cpu = torch.device("cpu")
    straight = Trainer(photos, tmp_path / "a", _config(max_steps=5), cpu, log=lambda s: None)
    straight.fit()
    first = Trainer(photos, tmp_path / "b", _config(max_steps=3), cpu, log=lambda s: None)
    first.fit()
    resumed = Trainer(photos, tmp_path / "b", _config(max_steps=5), cpu, resume=True, log=lambda s: None)
    assert resumed.step == 3
    resumed.fit()
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_max_steps_zero_writes_the_initial_model(photos, tmp_path):
    runner = CliRunner()
    res = runner.invoke(app, ["train", str(photos), "--out", str(tmp_path / "r"), "--preset", "tiny",
                              "--max-steps", "0", "--crop", str(CROP), "--batch-size", "2", "--workers", "0"])
    assert res.exit_code == 0, res.output
    model, header = load_checkpoint(tmp_path / "r" / "last.safetensors")
    assert header["metadata"]["step"] == 0 and header["config"]["preset"] == "tiny"


def test_bad_configs_and_run_dirs_fail_before_training(photos, tmp_path):
    with pytest.raises(TrainError, match="bogus"):
        TrainConfig.from_dict({"bogus": 1})
    with pytest.raises(TrainError, match="batch_size"):
        TrainConfig.from_dict({"batch_size": 0})
    with pytest.raises(TrainError, match="unknown preset|preset"):
        TrainConfig.from_dict({"preset": "huge"})
    cpu = torch.device("cpu")
    with pytest.raises(TrainError, match="nothing to resume"):
        Trainer(photos, tmp_path / "new", _config(), cpu, resume=True)
    Trainer(photos, tmp_path / "r", _config(max_steps=1), cpu, log=lambda s: None).fit()
    with pytest.raises(TrainError, match="--resume"):
        Trainer(photos, tmp_path / "r", _config(max_steps=1), cpu)
    with pytest.raises(TrainError, match="different 'preset'|different 'model'"):
        Trainer(photos, tmp_path / "r", _config(preset="lite"), cpu, resume=True)


def test_cli_reports_data_errors_in_one_line(tmp_path):
    runner = CliRunner()
    folder = _make_photos(tmp_path / "few", n=1)
    res = runner.invoke(app, ["train", str(folder), "--out", str(tmp_path / "r"), "--crop", str(CROP)])
    assert res.exit_code == 2 and "need at least" in res.stderr and "Traceback" not in res.output
    res = runner.invoke(app, ["train", str(_make_photos(tmp_path / "p")), "--out", str(tmp_path / "r2"), "--crop", "512"])
    assert res.exit_code == 2 and "crop" in res.stderr
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"data": {"crop": 32, "nope": 1}}))
    res = runner.invoke(app, ["train", str(tmp_path / "p"), "--out", str(tmp_path / "r3"), "--config", str(cfg)])
    assert res.exit_code == 2 and "nope" in res.stderr


def test_two_process_torchrun_gloo(photos, tmp_path):
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"loss": {"perceptual": "none"}, "data": {"crop": CROP, "val_fraction": 0.2},
                               "val_max_images": 1, "log_every": 1}))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29517",
           "-m", "pikfix_cli", "train", str(photos), "--out", str(tmp_path / "ddp"), "--preset", "tiny",
           "--max-steps", "2", "--batch-size", "1", "--workers", "0", "--device", "cpu", "--config", str(cfg)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    log = [json.loads(line) for line in (tmp_path / "ddp" / "log.jsonl").read_text().splitlines()]
    start = next(e for e in log if e["event"] == "start")
    assert start["world"] == 2
    assert sum(e["event"] == "start" for e in log) == 1  # only rank 0 logs
    assert next(e for e in log if e["event"] == "end")["step"] == 2
