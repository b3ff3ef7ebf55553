"""`pikfix bench`: test-set pairing, references, cached runs, report files, speed and bad input."""

from __future__ import annotations

import csv
import json
import math
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from pikfix.training import data
from pikfix.benchmark.data import (
    GT_CROP,
    BenchError,
    Dataset,
    References,
    StoreRetriever,
    detect_dataset,
    load_sample,
    realold_pairs,
    stem_pairs,
    synthetic_set,
)
from pikfix.benchmark.report import write_quality_report
from pikfix.benchmark.runner import Method, _speed_case, run_quality, run_speed, score
from pikfix.checkpoint import save_checkpoint
from pikfix.benchmark.damage import damage
from pikfix.color import grey_lightness, lightness_grey, luminance
from pikfix.training.degradation import degrade_seeded, to_grey
from pikfix.imageio import read_image, to_float
from pikfix.metrics import lpips_status
from pikfix.model import build_model
from pikfix_cli.app import app

runner = CliRunner()
H, W = 48, 64


def _photo(path: Path, seed: int, size: tuple[int, int] = (H, W)) -> Path:
    """A smooth colourful picture with a few blocks (so SSIM and colour transfer have structure)."""
    rng = np.random.default_rng(seed)
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    rgb = np.stack([xx, yy, 1 - xx * yy], axis=-1) * rng.uniform(0.5, 1.0, 3)
    for _ in range(3):
        y, x = rng.integers(0, h - 8), rng.integers(0, w - 8)
        rgb[y : y + 8, x : x + 12] = rng.random(3)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((np.clip(rgb, 0, 1) * 255).astype(np.uint8)).save(path)
    return path


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    save_checkpoint(build_model("tiny"), path)
    return path


@pytest.fixture()
def photos(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    for i, name in enumerate(("cat", "dog", "owl")):
        _photo(folder / f"{name}.png", seed=i)
    return folder


def _names(dataset: Dataset) -> list[tuple[str, str, str]]:
    return [(s.id, s.old.name if s.old else "", s.truth.name) for s in dataset.samples]


# --------------------------------------------------------------------------- test sets


def test_realold_naming_pairs_variants_and_lists_the_rest(tmp_path: Path) -> None:
    names = ["12o.jpg", "12t.jpg", "3o.png", "sub/3_t.png", "7O.JPG", "7-T_colour.png",
             "5o.jpg", "112t.jpg", "notes.png", "9o.png", "9t.png", "9_t.jpg"]
    for i, name in enumerate(names):
        _photo(tmp_path / name, seed=i, size=(16, 16))
    dataset = realold_pairs(tmp_path)
    assert _names(dataset) == [("12", "12o.jpg", "12t.jpg"), ("3", "3o.png", "3_t.png"),
                               ("7", "7O.JPG", "7-T_colour.png")]
    skipped = {Path(p).name: reason for p, reason in dataset.skipped}
    assert skipped["5o.jpg"] == "no ground truth with the same id"
    assert skipped["112t.jpg"] == "no old photo with the same id"  # 112 is not 12
    assert "neither" in skipped["notes.png"]
    assert all("ambiguous" in skipped[n] for n in ("9o.png", "9t.png", "9_t.jpg"))


def test_stem_pairs_match_by_stem(tmp_path: Path) -> None:
    for i, name in enumerate(("inputs/a.jpg", "inputs/b.jpg", "targets/a.png", "targets/c.png")):
        _photo(tmp_path / name, seed=i, size=(16, 16))
    dataset = stem_pairs(tmp_path / "inputs", tmp_path / "targets")
    assert _names(dataset) == [("a", "a.jpg", "a.png")]
    assert sorted(Path(p).name for p, _ in dataset.skipped) == ["b.jpg", "c.png"]


def test_synthetic_samples_are_reproducible_and_colorization_only_is_clean_grey(photos: Path) -> None:
    damaged = synthetic_set(photos, seed=3)
    sample = damaged.samples[0]
    first, again = load_sample(damaged, sample), load_sample(damaged, sample)
    assert first.ops and np.array_equal(first.old, again.old)
    reseeded = synthetic_set(photos, seed=4)
    other_seed = load_sample(reseeded, reseeded.samples[0])
    assert not np.array_equal(first.old, other_seed.old)
    clean = load_sample(synthetic_set(photos, colorization_only=True), sample)
    assert clean.ops == []
    np.testing.assert_allclose(clean.old[..., 0], to_grey(clean.truth), atol=1e-6)
    assert np.array_equal(clean.old[..., 0], clean.old[..., 2])


def test_synthetic_damage_recipe_eval_by_default_or_training(photos: Path) -> None:
    evaluation = synthetic_set(photos, seed=3)
    assert evaluation.recipe == "eval" and "evaluation recipe" in evaluation.describe()
    sample = evaluation.samples[0]
    loaded = load_sample(evaluation, sample)
    # The grey input carries exactly the evaluation recipe's damaged L.
    expected = damage(luminance(loaded.truth) / 100.0, "eval", sample.seed).grey * 100.0
    np.testing.assert_allclose(grey_lightness(loaded.old[..., 0]), expected, atol=0.05)
    assert np.array_equal(loaded.old[..., 0], loaded.old[..., 1])
    training = synthetic_set(photos, seed=3, recipe="training")
    trained_kind = load_sample(training, training.samples[0])
    np.testing.assert_array_equal(trained_kind.old[..., 0], degrade_seeded(trained_kind.truth, sample.seed).grey)
    with pytest.raises(BenchError, match="damage recipe 'clean'"):
        synthetic_set(photos, recipe="clean")


def test_lightness_grey_inverts_grey_lightness() -> None:
    l = np.linspace(0.0, 100.0, 201, dtype=np.float32).reshape(3, 67)
    np.testing.assert_allclose(grey_lightness(lightness_grey(l)), l, atol=0.02)


def test_val_split_is_the_training_split(tmp_path: Path) -> None:
    folder = tmp_path / "big"
    for i in range(6):  # training skips photos smaller than its 256 px crop, so these are larger
        _photo(folder / f"p{i}.png", seed=i, size=(256, 264))
    _, val = data.split(sorted(folder.glob("*.png")), 0.34, seed=5)
    dataset = synthetic_set(folder, seed=5, val_split=True, val_fraction=0.34)
    assert [s.truth for s in dataset.samples] == val and len(val) == 2


def test_references_ground_truth_crop_and_random_other(photos: Path) -> None:
    dataset = synthetic_set(photos)
    sample = dataset.samples[0]
    loaded = load_sample(dataset, sample)
    (crop,), name = References("ground-truth-crop", dataset).load(sample, loaded)
    ch, cw = round(H * GT_CROP), round(W * GT_CROP)
    y0, x0 = (H - ch) // 2, (W - cw) // 2
    assert crop.shape == (ch, cw, 3) and name == "ground-truth crop"
    np.testing.assert_array_equal(crop[:, 0], loaded.truth[y0 : y0 + ch, x0 + cw - 1])  # mirrored
    picks = {s.id: References("random-other", dataset, seed=1).load(s, load_sample(dataset, s))[1]
             for s in dataset.samples}
    assert all(picks[s.id] != s.truth.name for s in dataset.samples)
    again = References("random-other", dataset, seed=1).load(sample, loaded)[1]
    assert again == picks[sample.id]


class _FakeStore:
    """Stands in for a ReferenceStore: ranks the given files first to last, whatever the query."""

    def __init__(self, ranking: list[Path]) -> None:
        self.ranking = ranking

    def search(self, l: np.ndarray, k: int = 5) -> list[SimpleNamespace]:
        assert l.shape == (H, W) and 0 <= l.min() and l.max() <= 100  # queried with Lab L
        return [SimpleNamespace(path=p, score=1.0 - i / 10) for i, p in enumerate(self.ranking[:k])]


def test_auto_references_never_return_the_images_own_ground_truth(photos: Path, tmp_path: Path) -> None:
    copy = shutil.copy(photos / "cat.png", tmp_path / "cat-copy.png")
    retriever = StoreRetriever.__new__(StoreRetriever)  # the real one needs a built store (slow to embed)
    retriever.store = _FakeStore([photos / "cat.png", Path(copy), photos / "owl.png"])
    retriever.source, retriever.identity = "fake", "fake"
    dataset = synthetic_set(photos, colorization_only=True)
    references = References("auto", dataset, retriever=retriever)
    cat = next(s for s in dataset.samples if s.id == "cat")
    _, name = references.load(cat, load_sample(dataset, cat))
    assert name == "owl.png (score 0.800)"  # neither the file itself nor its byte-identical copy
    dog = next(s for s in dataset.samples if s.id == "dog")
    assert references.load(dog, load_sample(dataset, dog))[1] == "cat.png (score 1.000)"
    top2 = References("auto", dataset, retriever=retriever, top_k=2)
    refs, name = top2.load(cat, load_sample(dataset, cat))
    assert len(refs) == 1 and name == "owl.png (score 0.800)"  # only one photo is not the cat itself
    refs, name = top2.load(dog, load_sample(dataset, dog))
    assert len(refs) == 2 and name == "cat.png (score 1.000), cat-copy.png (score 0.900)"
    assert top2.source(dog) != references.source(dog)  # cached results depend on K
    with pytest.raises(BenchError, match="top-k"):
        References("ground-truth-crop", dataset, top_k=3)


def test_faded_set_gives_colour_inputs_that_the_model_restores(photos: Path) -> None:
    from pikfix.colour_input import classify

    dataset = synthetic_set(photos, faded=True)
    sample = dataset.samples[0]
    loaded = load_sample(dataset, sample)
    assert dataset.kind == "faded" and loaded.ops == ["fade_colour"]
    np.testing.assert_array_equal(loaded.old, load_sample(dataset, sample).old)  # seeded
    assert classify(loaded.truth).kind == classify(loaded.old).kind  # still a colour photo if it was one
    assert loaded.old.min() > 0.0 or loaded.old.std() < loaded.truth.std()  # lifted blacks, less contrast
    with pytest.raises(BenchError):
        synthetic_set(photos, colorization_only=True, faded=True)


def test_faded_run_writes_a_report_with_delta_ab(photos: Path, tmp_path: Path) -> None:
    dataset = synthetic_set(photos, faded=True)
    run = run_quality(dataset, [_Identity()], References("ground-truth-crop", dataset), tmp_path / "out")
    write_quality_report(tmp_path / "out", run, {})
    report = _strict_json(tmp_path / "out" / "report.json")
    assert report["summary"]["identity"]["delta_ab"]["mean"] > 0  # the faded input is off in colour
    assert "Δab" in (tmp_path / "out" / "report.md").read_text()


# --------------------------------------------------------------------------- metrics and runs


class _Identity(Method):
    """Returns its input unchanged: on identical pairs, a perfect result."""

    name = "identity"
    label = "identity"

    def run(self, old: np.ndarray, refs: list[np.ndarray]) -> tuple[np.ndarray, float | None]:
        return old, None


def _strict_json(path: Path) -> dict:
    """Parse as standard JSON: Infinity or NaN would fail."""
    return json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))


def test_identical_images_score_inf_psnr_and_ssim_one_through_the_report(tmp_path: Path, photos: Path) -> None:
    image = to_float(read_image(photos / "cat.png").pixels)
    scores = score(image, image, None)
    assert scores["psnr"] == "inf" and scores["ssim"] == pytest.approx(1.0)
    shutil.copytree(photos, tmp_path / "inputs")
    dataset = stem_pairs(tmp_path / "inputs", photos)
    run = run_quality(dataset, [_Identity()], References("ground-truth-crop", dataset), tmp_path / "out")
    write_quality_report(tmp_path / "out", run, {})
    report = _strict_json(tmp_path / "out" / "report.json")
    assert report["summary"]["identity"]["psnr"] == {"mean": "inf", "ci95": ["inf", "inf"], "n": 3, "n_inf": 3}
    assert report["summary"]["identity"]["ssim"]["mean"] == pytest.approx(1.0)
    assert "inf (identical)" in (tmp_path / "out" / "report.md").read_text()


@pytest.mark.parametrize(
    ("names", "kind"),
    [
        (["1o.jpg", "1t.jpg", "2o.png", "2_t.png"], "realold"),
        (["inputs/a.jpg", "targets/a.png", "inputs/b.jpg", "targets/b.png"], "pairs"),
        (["cat.png", "dog.jpg", "sub/owl.png"], "synthetic"),
    ],
)
def test_bench_folder_kind_is_detected(tmp_path: Path, names: list[str], kind: str) -> None:
    for i, name in enumerate(names):
        _photo(tmp_path / name, seed=i, size=(16, 16))
    dataset = detect_dataset(tmp_path)
    assert dataset.kind == kind and len(dataset.samples) == (2 if kind != "synthetic" else 3)
    if kind == "synthetic":
        assert detect_dataset(tmp_path, colorization_only=True).kind == "colorization"
    else:
        with pytest.raises(BenchError, match="apply to clean photos"):
            detect_dataset(tmp_path, colorization_only=True)


@pytest.mark.parametrize(
    ("names", "message"),
    [
        ([], "no images (expected RealOld pairs"),
        (["1o.jpg", "1t.jpg", "cat.png"], "mixed folder: 2 image(s) named like RealOld pairs (e.g. 1o.jpg) and 1 clean"),
        (["inputs/a.jpg", "targets/a.png", "stray.jpg"], "mixed folder: inputs/ + targets/ and 1 other image"),
        (["inputs/a.jpg"], "has inputs/ but no targets/"),
    ],
)
def test_bench_folder_that_is_empty_or_mixed_is_one_clear_error(tmp_path: Path, names: list[str], message: str) -> None:
    folder = tmp_path / "set"
    folder.mkdir()
    for i, name in enumerate(names):
        _photo(folder / name, seed=i, size=(16, 16))
    with pytest.raises(BenchError, match=re.escape(message)):
        detect_dataset(folder)
    code, output = _bench(str(folder), "-o", str(tmp_path / "out"))
    assert code == 2 and message in output.replace("\n", "") and output.count("error:") == 1


def test_readme_first_bench_line_runs_as_written(tmp_path: Path, model_path: Path, monkeypatch) -> None:
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    line = next(l for l in readme.splitlines() if l.startswith("pikfix bench "))
    args = line.split("#")[0].split()[2:]
    assert args == ["realold/", "--model", "m.safetensors"]
    for i, name in enumerate(["1o.jpg", "1t.jpg", "2o.jpg", "2t.jpg"]):
        _photo(tmp_path / "realold" / name, seed=i)
    shutil.copy(model_path, tmp_path / "m.safetensors")
    monkeypatch.chdir(tmp_path)
    code, output = _bench(*args, "--device", "cpu")
    assert code == 0, output
    report = _strict_json(tmp_path / "pikfix-bench" / "report.json")
    assert report["dataset"]["images"] == 2 and report["config"]["kind"] == "realold"
    assert report["config"]["ref_mode"] == "ground-truth-crop"


def _bench(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["bench", *args])
    assert "Traceback" not in result.output
    return result.exit_code, result.output


def test_cli_synthetic_run_writes_every_report_file_and_resumes_from_cache(
    tmp_path: Path, photos: Path, model_path: Path
) -> None:
    out = tmp_path / "out"
    args = ["--synthetic", str(photos), "--ref-mode", "ground-truth-crop", "--model", str(model_path),
            "--device", "cpu", "-o", str(out)]
    code, output = _bench(*args)
    assert code == 0, output
    report = _strict_json(out / "report.json")
    methods = ["input (grey)", "classical (median+inpaint, Reinhard)", "tiny.safetensors (tiny)"]
    assert [m["name"] for m in report["methods"]] == methods
    assert report["results_from_cache"] == 0 and report["dataset"]["images"] == 3
    summary = report["summary"]
    assert summary["input (grey)"]["colorfulness"]["mean"] < 0.01  # the grey floor has no colour
    assert summary["classical (median+inpaint, Reinhard)"]["colorfulness"]["mean"] > 1.0
    for name in methods:
        assert 5 < summary[name]["psnr"]["mean"] < 60 and 0 < summary[name]["ssim"]["mean"] <= 1
        low, high = summary[name]["psnr"]["ci95"]
        assert low <= summary[name]["psnr"]["mean"] <= high
        assert summary[name]["seconds_per_image"]["mean"] > 0 and summary[name]["peak_rss_mib"] > 0
    assert report["lpips"]["available"] == lpips_status()[0]

    with (out / "images.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 9 and {r["method"] for r in rows} == set(methods)
    assert all(r["width"] == str(W) and r["height"] == str(H) for r in rows)
    markdown = (out / "report.md").read_text()
    assert "| method | PSNR ↑ (dB) | SSIM ↑ | LPIPS ↓ |" in markdown and all(m in markdown for m in methods)
    if not lpips_status()[0]:
        assert "LPIPS is n/a" in markdown and "| n/a |" in markdown
    with Image.open(out / "sheets" / "contact-01.png") as sheet:  # 3 rows; 6 panels per row
        assert sheet.height > 3 * H and sheet.width > 6 * W
    with Image.open(out / "metrics.png") as chart:
        assert chart.width > 600

    code, output = _bench(*args)  # a rerun reuses every result
    assert code == 0 and _strict_json(out / "report.json")["results_from_cache"] == 9
    assert _strict_json(out / "report.json")["summary"] == summary
    (out / "cache" / "tiny-safetensors-tiny" / "dog.json").unlink()  # as if interrupted there
    (out / "cache" / "input-grey" / "cat.png").unlink()  # a record without its sheet thumbnail is redone
    code, _ = _bench(*args)
    assert code == 0 and _strict_json(out / "report.json")["results_from_cache"] == 7
    assert (out / "cache" / "input-grey" / "cat.png").is_file()
    code, _ = _bench(*args, "--seed", "1", "--max-images", "2", "--no-baselines")  # other damage: recomputed
    report = _strict_json(out / "report.json")
    assert code == 0 and report["results_from_cache"] == 0 and report["dataset"]["images"] == 2


def test_cli_pairs_resize_mismatched_inputs_and_list_unmatched(tmp_path: Path, photos: Path) -> None:
    _photo(tmp_path / "inputs" / "cat.jpg", seed=0, size=(30, 40))  # smaller than its ground truth
    _photo(tmp_path / "inputs" / "dog.jpg", seed=1)
    _photo(tmp_path / "inputs" / "lonely.jpg", seed=2)
    out = tmp_path / "out"
    code, output = _bench("--inputs", str(tmp_path / "inputs"), "--targets", str(photos),
                          "--ref-mode", "random-other", "-o", str(out))
    assert code == 0, output
    assert "resized to the ground truth" in output
    assert "lonely.jpg: skipped (no ground truth with the same id)" in output
    report = _strict_json(out / "report.json")
    assert {s["reason"] for s in report["dataset"]["skipped"]} == {"no ground truth with the same id",
                                                                  "no old photo with the same id"}
    assert {(i["image"], i["width"]) for i in report["images"]} == {("cat", W), ("dog", W)}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--synthetic", "{empty}", "--ref-mode", "ground-truth-crop"], "no images to benchmark"),
        (["--synthetic", "{photos}", "--ref-mode", "ground-truth-crop", "--model", "{tmp}/nope.safetensors"],
         "nope.safetensors: checkpoint not found"),
        (["--synthetic", "{photos}"], "missing references"),
        (["--synthetic", "{photos}", "--ref-mode", "file"], "--ref-mode file needs a reference photo"),
        (["--synthetic", "{photos}", "--ref", "{tmp}/none.jpg"], "none.jpg"),
        (["--synthetic", "{photos}", "--ref-mode", "auto"], "needs --refs DIR or --index STORE"),
        (["--synthetic", "{photos}", "--index", "{empty}"], "no reference store here"),
        (["--synthetic", "{photos}", "--max-images", "1", "--ref-mode", "random-other"], "at least 2 images"),
        (["--synthetic", "{photos}", "--realold", "{photos}", "--ref-mode", "ground-truth-crop"], "give one test set"),
        (["--inputs", "{photos}", "--ref-mode", "ground-truth-crop"], "--inputs and --targets go together"),
        (["--speed", "--synthetic", "{photos}"], "belong to quality runs"),
        (["--speed", "--presets", "huge"], "unknown preset"),
        (["--synthetic", "{photos}", "--recipe", "clean", "--ref-mode", "random-other"], "damage recipe 'clean'"),
        (["--synthetic", "{photos}", "--colorization-only", "--recipe", "eval", "--ref-mode", "random-other"],
         "--recipe damages clean photos on the fly"),
    ],
)
def test_cli_bad_input_gives_one_clear_line(tmp_path: Path, photos: Path, args: list[str], message: str) -> None:
    (tmp_path / "empty").mkdir()
    filled = [a.format(empty=tmp_path / "empty", photos=photos, tmp=tmp_path) for a in args]
    code, output = _bench(*filled, "-o", str(tmp_path / "out"))
    assert code == 2, output
    assert message in output and "error:" in output


def test_cli_restoration_bench_takes_an_eval_recipe_with_a_step_left_out(
    tmp_path: Path, photos: Path, model_path: Path
) -> None:
    out = tmp_path / "out"
    code, output = _bench("--synthetic", str(photos), "--restoration", "--recipe", "eval-no-blur", "--long-side", "64",
                          "--model", str(model_path), "--no-baselines", "--device", "cpu", "-o", str(out))
    assert code == 0, output
    report = _strict_json(out / "report.json")
    assert report["recipe"] == "eval-no-blur" and report["photos"] == 3
    code, output = _bench("--synthetic", str(photos), "--restoration", "--recipe", "eval-no-colour",
                          "--model", str(model_path), "-o", str(tmp_path / "bad"))
    assert code == 2 and "eval-no-colour" in output and "eval-no-noise" in output


# --------------------------------------------------------------------------- speed


def test_speed_cases_run_in_a_subprocess_report_and_resume(tmp_path: Path) -> None:
    out = tmp_path / "speed"
    code, output = _bench("--speed", "--presets", "tiny", "--sizes", "0.01", "--device", "cpu", "-o", str(out))
    assert code == 0, output
    report = _strict_json(out / "report.json")
    (case,) = report["speed"]
    assert case["preset"] == "tiny" and case["megapixels"] == pytest.approx(0.01, abs=0.002)
    assert case["seconds"] > 0 and case["peak_rss_mib"] > 50 and case["cuda_peak_mib"] is None
    assert "| tiny | 0.01 |" in (out / "report.md").read_text()
    assert (out / "speed.csv").read_text().startswith("preset,megapixels,")
    with Image.open(out / "speed.png"):
        pass
    again = run_speed(["tiny"], [0.01], "cpu", cache_dir=out / "cache")  # cached: the same measurement
    assert again == report["speed"]


def test_a_failing_speed_case_becomes_an_error_entry() -> None:
    result = _speed_case({"preset": "nope", "megapixels": 0.01, "device": "cpu", "work_size": 512, "tile": 512})
    assert "unknown preset" in result["error"] and result["preset"] == "nope"


def test_run_speed_rejects_bad_sizes() -> None:
    with pytest.raises(BenchError, match="positive"):
        run_speed(["tiny"], [0.0])


def test_score_of_a_grey_result_has_zero_colourfulness() -> None:
    grey = np.full((16, 16, 3), 0.5, dtype=np.float32)
    colour = grey.copy()
    colour[..., 0] = 0.9
    scores = score(grey, colour, None)
    assert scores["colorfulness"] == pytest.approx(0.0, abs=1e-6)
    assert math.isfinite(float(scores["psnr"])) and scores["lpips"] is None
