"""Step arithmetic of a training run: epochs of crops, stages, learning rate, validation points."""

from __future__ import annotations

import pytest

from pikfix.training.trainer import Schedule, TrainConfig, TrainError

from pikfix_cli.train import parse_duration


def _schedule(photos: int = 10, world: int = 1, **overrides) -> Schedule:
    return Schedule.build(TrainConfig.from_dict({"preset": "tiny", **overrides}), photos, world)


def test_an_epoch_is_several_crops_of_every_photo() -> None:
    s = _schedule(photos=132, batch_size=8, crops_per_photo=8, epochs=3)
    assert s.steps_per_epoch == 132 * 8 // 8 and s.total == 3 * 132 and s.rounds == 8
    s = _schedule(photos=132, batch_size=8, crops_per_epoch=1000, epochs=2)
    assert s.steps_per_epoch == 125 and s.total == 250 and s.rounds == 8  # 8 passes cover 1000 crops
    s = _schedule(photos=132, batch_size=8, world=4, crops_per_photo=8)
    assert s.steps_per_epoch == 132 * 8 // 32  # a global batch is batch x processes


def test_a_batch_larger_than_the_photo_set_fills_one_step_per_epoch() -> None:
    s = _schedule(photos=5, batch_size=64, crops_per_photo=1, epochs=3)
    assert s.steps_per_epoch == 1 and s.total == 3
    assert s.rounds * 5 >= 64  # enough passes over the photos for one batch


def test_lr_decays_per_step_period_and_restarts_with_each_stage() -> None:
    s = _schedule(lr=1.0, lr_decay=0.5, lr_decay_every=10,
                  stages=[{"stage": "restoration", "steps": 25}, {"stage": "joint", "steps": 30}])
    assert [s.lr_at(i) for i in (0, 9, 10, 24)] == [1.0, 1.0, 0.5, 0.25]
    assert [s.lr_at(i) for i in (25, 34, 35, 54)] == [1.0, 1.0, 0.5, 0.25]
    per_epoch = _schedule(photos=10, batch_size=2, crops_per_photo=1, lr=1.0, lr_decay=0.5)  # 5 steps / epoch
    assert [per_epoch.lr_at(i) for i in (4, 5, 10)] == [1.0, 0.5, 0.25]


def test_stages_cover_the_run_and_fix_its_length() -> None:
    s = _schedule(stages=[{"stage": "restoration", "steps": 3}, {"stage": "colorization", "steps": 2}, "joint"],
                  photos=10, batch_size=2, crops_per_photo=1, epochs=4)  # 20 steps
    assert s.spans == (("restoration", 0, 3), ("colorization", 3, 5), ("joint", 5, 20))
    assert [s.stage_at(i)[0] for i in (0, 2, 3, 4, 5, 19)] == ["restoration"] * 2 + ["colorization"] * 2 + ["joint"] * 2
    fixed = _schedule(stages=[{"stage": "restoration", "steps": 3}, {"stage": "joint", "steps": 4}], epochs=100)
    assert fixed.total == 7
    capped = _schedule(stages=[{"stage": "restoration", "steps": 3}, {"stage": "joint", "steps": 4}], max_steps=2)
    assert capped.total == 2 and capped.spans == (("restoration", 0, 2),)


def test_validation_every_n_steps_and_at_the_end() -> None:
    s = _schedule(photos=10, batch_size=2, crops_per_photo=1, epochs=3, val_every=4)  # 15 steps
    assert [i for i in range(1, 16) if s.validates_after(i)] == [4, 8, 12, 15]
    per_epoch = _schedule(photos=10, batch_size=2, crops_per_photo=1, epochs=3)
    assert [i for i in range(1, 16) if per_epoch.validates_after(i)] == [5, 10, 15]


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"stages": ["restore"]}, "unknown stage"),
        ({"stages": [{"stage": "joint"}, "restoration"]}, "only the last stage"),
        ({"stages": [{"stage": "joint", "steps": 0}]}, "steps must be"),
        ({"stages": [{"stage": "joint", "epochs": 2}]}, "epochs"),
        ({"stages": []}, "non-empty"),
        ({"crops_per_photo": 0}, "crops_per_photo"),
        ({"val_every": 0}, "val_every"),
        ({"lr_decay_every": 0}, "lr_decay_every"),
    ],
)
def test_bad_schedules_are_named(overrides: dict[str, object], named: str) -> None:
    with pytest.raises(TrainError, match=named):
        TrainConfig.from_dict(overrides)


def test_time_limits_accept_seconds_minutes_and_hours() -> None:
    assert [parse_duration(t) for t in ("90", "90s", "8m", "1.5h", " 2M ")] == [90, 90, 480, 5400, 120]
    for bad in ("", "8 min", "-1m", "0s", "1d", "m"):
        with pytest.raises(ValueError, match="--time-limit"):
            parse_duration(bad)
