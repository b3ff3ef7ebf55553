"""The shipped model travels inside the wheel and is found without the source tree."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from pikfix.checkpoint import DEFAULT_MODEL_FILE, default_model_path, read_header

ROOT = Path(__file__).resolve().parents[1]


def test_default_model_is_shipped_with_a_model_card():
    path = default_model_path()
    assert path is not None and path.name == DEFAULT_MODEL_FILE
    header = read_header(path)
    assert header["config"]["preset"] == "lite"
    assert header["metadata"]["step"] > 0  # trained, not an initial checkpoint
    assert (path.parent / DEFAULT_MODEL_FILE.replace(".safetensors", ".md")).is_file()
    assert path.stat().st_size < 50 * 2**20


def test_wheel_contains_the_model_and_finds_it(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
    )
    wheel = next(tmp_path.glob("pikfix-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert f"pikfix/models/{DEFAULT_MODEL_FILE}" in names
    assert {"pikfix_cli/app.py", "pikfix/retrieval/store.py", "pikfix/nets/sphist.py", "pikfix/training/degradation/physical.py",
            "pikfix/benchmark/restoration.py"} <= set(names)
    assert "pikfix/default_refs/store/manifest.json" in names and "pikfix/default_refs/CREDITS.md" in names
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = ("from pikfix.checkpoint import default_model_path as d; p = d(); print(p); assert p is not None\n"
            "from pikfix.references import default_reference_store as s; st = s('cpu'); assert len(st) >= 24")
    # -I (isolated) would drop the venv's dependencies; PYTHONPATH puts the unpacked wheel first.
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                          env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().startswith(str(site))


def test_default_reference_set_is_small_credited_and_varied():
    from pikfix.references import DEFAULT_REFS_DIR, default_reference_store

    store = default_reference_store("cpu")
    assert 24 <= len(store) <= 40
    assert all(p.is_file() and p.parent == DEFAULT_REFS_DIR / "photos" for p in store.paths)
    assert sum(p.stat().st_size for p in DEFAULT_REFS_DIR.rglob("*") if p.is_file()) < 5 * 2**20
    credits = (DEFAULT_REFS_DIR / "CREDITS.md").read_text()
    for p in store.paths:  # every photo is credited with a free licence
        line = next(x for x in credits.splitlines() if x.startswith(f"| {p.name} |"))
        assert "Public domain" in line or "CC0" in line
    assert {p.name.split("-")[0] for p in store.paths} == {"people", "place", "nature", "animal"}
