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
# One learnable kind of damage: 30 steps of a tiny net undo a strong fade (a global tone change)
# well before they learn colour, so the loss must drop fast.
FADE_ONLY = {name: 0.0 for name in DegradationConfig().to_dict() if name.startswith("p_")} | {
    "p_fade": 1.0, "fade_black": [0.2, 0.3], "fade_white": [0.6, 0.7],
}


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
        "data": {"crop": CROP, "val_fraction": 0.2, "degradation": FADE_ONLY},
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


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return all(torch.equal(sa[k], sb[k]) for k in sa)


def test_resume_at_the_last_step_of_an_epoch_is_exact(photos, tmp_path):
    cpu = torch.device("cpu")
    per_epoch = {"crops_per_photo": 1}  # 5 training photos, batch 2: epochs of 2 steps
    straight = Trainer(photos, tmp_path / "a", _config(max_steps=4, **per_epoch), cpu, log=lambda s: None)
    assert straight.steps_per_epoch == 2
    straight.fit()
    first = Trainer(photos, tmp_path / "b", _config(max_steps=2, **per_epoch), cpu, log=lambda s: None)
    first.fit()
    resumed = Trainer(photos, tmp_path / "b", _config(max_steps=4, **per_epoch), cpu, resume=True, log=lambda s: None)
    assert resumed.step == 2
    resumed.fit()
    assert _same_weights(straight.model, resumed.model) and _same_weights(straight.disc, resumed.disc)
    log = [json.loads(line) for line in (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log if e["event"] == "val"] == [0, 2, 4]  # no repeat of step 2's validation


def test_a_batch_larger_than_the_photo_set_trains(photos, tmp_path):
    trainer = Trainer(photos, tmp_path / "r", _config(batch_size=8, max_steps=1, crops_per_photo=1), torch.device("cpu"),
                      log=lambda s: None)
    assert len(trainer.train_paths) == 5 and trainer.steps_per_epoch == 1
    batches = trainer.batches(0)
    assert next(batches)["input_l"].shape[0] == 8


def test_restoration_stage_trains_only_the_restoration(photos, tmp_path):
    cfg = _config(max_steps=2, stages=["restoration"])
    trainer = Trainer(photos, tmp_path / "r", cfg, torch.device("cpu"), log=lambda s: None)
    assert trainer.disc is None  # no colour terms, no discriminator
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.fit()
    after = trainer.model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("restoration.") for k in changed)
    log = [json.loads(line) for line in (tmp_path / "r" / "log.jsonl").read_text().splitlines()]
    steps = [e for e in log if e["event"] == "step"]
    assert {e["stage"] for e in steps} == {"restoration"} and "rec_ab" not in steps[0]


def test_colorization_stage_keeps_the_restoration_frozen(photos, tmp_path):
    cfg = _config(max_steps=3, stages=[{"stage": "restoration", "steps": 1}, "colorization"])
    trainer = Trainer(photos, tmp_path / "r", cfg, torch.device("cpu"), log=lambda s: None)
    marks: list[dict[str, torch.Tensor]] = []  # the weights after each step
    trainer.fit(lambda step, total, terms: marks.append({k: v.clone() for k, v in trainer.model.state_dict().items()}))
    first, last = marks[0], marks[-1]
    changed = {k for k in first if not torch.equal(first[k], last[k])}
    assert changed and not any(k.startswith("restoration.") for k in changed)
    assert any(k.startswith("colorization.") for k in changed) and any(k.startswith("similarity.") for k in changed)


def test_time_limit_stops_saves_validates_and_resumes(photos, tmp_path):
    runner = CliRunner()
    args = ["train", str(photos), "--out", str(tmp_path / "r"), "--preset", "tiny", "--crop", str(CROP),
            "--batch-size", "2", "--workers", "0", "--max-steps", "100000", "--time-limit", "4s"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "time limit reached" in res.stderr
    log = [json.loads(line) for line in (tmp_path / "r" / "log.jsonl").read_text().splitlines()]
    end = log[-1]
    assert end["event"] == "end" and end["reason"] == "time limit" and 0 < end["step"] < 100000
    assert any(e["event"] == "val" and e["step"] == end["step"] for e in log)
    _, header = load_checkpoint(tmp_path / "r" / "last.safetensors")
    assert header["metadata"]["step"] == end["step"]
    res = runner.invoke(app, [*args[:-2], "--max-steps", str(end["step"] + 1), "--resume"])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "r" / "log.jsonl").read_text().splitlines()[-1])["step"] == end["step"] + 1
    res = runner.invoke(app, [*args[:-1], "8 min"])
    assert res.exit_code == 2 and "--time-limit 8 min" in res.stderr


def test_train_takes_several_photo_folders(tmp_path):
    a, b = _make_photos(tmp_path / "a", n=3), _make_photos(tmp_path / "b", n=3)
    for i, path in enumerate(sorted(b.iterdir())):
        path.rename(b / f"q{i}.png")  # other names: the split hashes file names
    trainer = Trainer([a, b], tmp_path / "r", _config(max_steps=0), torch.device("cpu"), log=lambda s: None)
    assert len(trainer.train_paths) + len(trainer.val_paths) == 6
    runner = CliRunner()
    empty = tmp_path / "empty"
    empty.mkdir()
    res = runner.invoke(app, ["train", str(a), str(empty), "--out", str(tmp_path / "r2"), "--crop", str(CROP)])
    assert res.exit_code == 2 and "empty" in res.stderr and "usable" in res.stderr


def test_resume_may_change_later_stages_but_not_finished_ones(photos, tmp_path):
    cpu = torch.device("cpu")
    first = [{"stage": "restoration", "steps": 1}, "joint"]
    Trainer(photos, tmp_path / "r", _config(max_steps=1, stages=first), cpu, log=lambda s: None).fit()
    later = [{"stage": "restoration", "steps": 1}, "colorization"]
    assert Trainer(photos, tmp_path / "r", _config(max_steps=2, stages=later), cpu, resume=True, log=lambda s: None).step == 1
    with pytest.raises(TrainError, match="stages of its first 1 steps"):
        Trainer(photos, tmp_path / "r", _config(max_steps=2, stages=["joint"]), cpu, resume=True, log=lambda s: None)


def test_init_starts_from_a_model_file_and_records_it(photos, tmp_path):
    cpu = torch.device("cpu")
    source = Trainer(photos, tmp_path / "a", _config(max_steps=3, seed=1), cpu, log=lambda s: None)
    source.fit()
    model_file = tmp_path / "a" / "last.safetensors"
    # Another seed initialises other weights; init replaces them with the file's.
    run = Trainer(photos, tmp_path / "b", _config(max_steps=0, init=str(model_file)), cpu, log=lambda s: None)
    assert _same_weights(run.model, source.model)
    assert run.config.resolved_model() == source.model.config
    run.fit()
    recorded = json.loads((tmp_path / "b" / "config.json").read_text())
    assert recorded["init"] == str(model_file)
    # A resumed run keeps its own trained weights, not the init file's.
    Trainer(photos, tmp_path / "c", _config(max_steps=2, init=str(model_file)), cpu, log=lambda s: None).fit()
    resumed = Trainer(photos, tmp_path / "c", _config(max_steps=2, init=str(model_file)), cpu, resume=True,
                      log=lambda s: None)
    assert not _same_weights(resumed.model, source.model)


def test_init_errors_name_the_file(photos, tmp_path):
    with pytest.raises(TrainError, match="missing.safetensors"):
        _config(init=str(tmp_path / "missing.safetensors"))
    Trainer(photos, tmp_path / "a", _config(max_steps=0), torch.device("cpu"), log=lambda s: None).fit()
    model = TrainConfig(preset="tiny").resolved_model().to_dict()
    model["restoration"]["repair_margin"] = 5
    other = _config(init=str(tmp_path / "a" / "last.safetensors"), model=model)
    with pytest.raises(TrainError, match="config differs"):
        Trainer(photos, tmp_path / "b", other, torch.device("cpu"), log=lambda s: None)
