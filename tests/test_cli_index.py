"""`pikfix index` end to end: JSON report, incremental reruns, the default cache, bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from pikfix.retrieval import ReferenceStore, cache_store_dir
from pikfix_cli.app import app

runner = CliRunner()
NOT_AN_IMAGE = "not an image file (unknown format or damaged header)"  # pikfix.imageio's reason


def _photo(path: Path, seed: int) -> Path:
    """A small colour picture: a smooth random colour field (distinct per seed)."""
    field = (np.random.default_rng(seed).random((3, 3, 3)) * 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(field).resize((64, 48), Image.BICUBIC).save(path)
    return path


@pytest.fixture()
def refs(tmp_path) -> Path:
    folder = tmp_path / "refs"
    for i in range(3):
        _photo(folder / f"r{i}.jpg", i)
    (folder / "broken.jpg").write_text("not a photo")
    return folder


def _index(*args: str):
    return runner.invoke(app, ["index", *args])


def test_index_reports_json_and_reruns_incrementally(tmp_path, refs):
    out = tmp_path / "store"
    res = _index(str(refs), "--out", str(out), "--json", "--device", "cpu")
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert sorted(report["added"]) == ["r0.jpg", "r1.jpg", "r2.jpg"]
    assert report["total"] == 3 and report["features"] == "effnet-lite0-stats-v1" and report["index_type"] == "flat"
    assert report["skipped"] == [{"path": "broken.jpg", "reason": NOT_AN_IMAGE}]
    assert "warning: skipped broken.jpg" in res.stderr

    (refs / "r1.jpg").unlink()
    _photo(refs / "r3.jpg", 3)
    res = _index(str(refs), "--out", str(out), "--json", "--device", "cpu")
    report = json.loads(res.stdout)
    assert (report["added"], report["removed"], report["updated"]) == (["r3.jpg"], ["r1.jpg"], [])
    assert report["unchanged"] == 2
    assert len(ReferenceStore.open(out)) == 3


def test_default_store_is_the_cache_fix_refs_uses(tmp_path, refs, monkeypatch):
    monkeypatch.setenv("PIKFIX_CACHE", str(tmp_path / "cache"))
    res = _index(str(refs), "--device", "cpu")
    assert res.exit_code == 0, res.output
    store = ReferenceStore.open(cache_store_dir(refs), expected_features="effnet-lite0")
    assert sorted(p.name for p in store.paths) == ["r0.jpg", "r1.jpg", "r2.jpg"]
    assert "3 reference photos" in res.stderr and "3 added" in res.stderr


def test_damaged_store_is_rebuilt_with_a_warning(tmp_path, refs):
    out = tmp_path / "store"
    assert _index(str(refs), "--out", str(out), "--device", "cpu").exit_code == 0
    manifest = out / "manifest.json"
    manifest.write_bytes(manifest.read_bytes()[:100])
    res = _index(str(refs), "--out", str(out), "--json", "--device", "cpu")
    assert res.exit_code == 0, res.output
    assert "damaged manifest" in json.loads(res.stdout)["rebuilt_reason"]
    assert "was damaged and has been rebuilt" in res.stderr
    assert len(ReferenceStore.open(out)) == 3


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--features", "sift"], "unknown features 'sift'"),
        (["--index-type", "hnsw"], "unknown index type 'hnsw'"),
        (["--features", "vgg19"], "VGG19 weights not found"),
    ],
)
def test_bad_options_are_one_line_errors(tmp_path, refs, no_vgg19_weights, args, message):
    res = _index(str(refs), "--out", str(tmp_path / "store"), "--device", "cpu", *args)
    assert res.exit_code == 2
    assert message in res.stderr and "Traceback" not in res.output
    assert len(res.stderr.strip().splitlines()) == 1


def test_empty_folder_and_mixed_features_are_refused(tmp_path, refs):
    (tmp_path / "empty").mkdir()
    res = _index(str(tmp_path / "empty"), "--out", str(tmp_path / "s1"))
    assert res.exit_code == 2 and "no images found" in res.stderr

    out = tmp_path / "store"
    assert _index(str(refs), "--out", str(out), "--device", "cpu").exit_code == 0
    res = _index(str(refs), "--out", str(out), "--features", "vgg19")
    assert res.exit_code == 2 and "cannot be mixed" in res.stderr


def test_importing_the_cli_does_not_import_torch():
    """`pikfix --help` must be instant: every command imports torch lazily."""
    code = "import sys, pikfix_cli.app; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
