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
    assert {"pikfix_cli/app.py", "pikfix/retrieval/store.py", "pikfix/nets/sphist.py"} <= set(names)
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = "from pikfix.checkpoint import default_model_path as d; p = d(); print(p); assert p is not None"
    # -I (isolated) would drop the venv's dependencies; PYTHONPATH puts the unpacked wheel first.
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                          env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().startswith(str(site))
