"""Checkpoints: safetensors weights + the JSON model config and metadata in one file.

safetensors never executes code on load (unlike pickle).  Frozen pretrained backbones are
not copied into the file: the config names them (``similarity.backbone_weights``) and the
metadata records where they came from, so the file stays small and the licence of those
weights stays with the package that ships them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from pikfix import __version__
from pikfix.atomic import atomic_path
from pikfix.backbones import WeightsUnavailableError
from pikfix.config import ModelConfig
from pikfix.model import PikFix

FORMAT = "pikfix-checkpoint-v1"
_FROZEN_PREFIX = "similarity.backbone."
# Buffers added after the first checkpoints were written; their defaults are neutral.
_OPTIONAL_KEYS = {"colorization.gate_threshold", "colorization.gate_slope"}


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt or does not fit this version of pikfix."""


def _stored_keys(model: PikFix) -> list[str]:
    """Parameter/buffer names saved in a checkpoint (all but a frozen pretrained backbone)."""
    keys = list(model.state_dict())
    if model.similarity.backbone.frozen:
        keys = [k for k in keys if not k.startswith(_FROZEN_PREFIX)]
    return keys


def save_checkpoint(
    model: PikFix, path: str | Path, metadata: dict[str, Any] | None = None, half: bool = False
) -> None:
    """Write ``model`` to ``path`` atomically; ``half`` stores floats as float16 (half the size)."""
    state = model.state_dict()
    tensors = {}
    for key in _stored_keys(model):
        t = state[key].detach().to("cpu").contiguous()
        tensors[key] = t.half() if half and t.is_floating_point() else t
    header = {
        "format": FORMAT,
        "pikfix_version": __version__,
        "config": model.config.to_dict(),
        "backbone_weights_source": model.similarity.backbone.weights_source,
        "metadata": metadata or {},
    }
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"pikfix": json.dumps(header)})


def read_header(path: str | Path) -> dict[str, Any]:
    """The JSON header of a checkpoint (config + metadata) without loading weights."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get("pikfix")
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{path}: not a readable safetensors checkpoint ({err})") from None
    if raw is None:
        raise CheckpointError(f"{path}: safetensors file without pikfix metadata (not a pikfix checkpoint)")
    try:
        header = json.loads(raw)
    except json.JSONDecodeError:
        raise CheckpointError(f"{path}: corrupt pikfix metadata") from None
    if header.get("format") != FORMAT:
        raise CheckpointError(f"{path}: unsupported checkpoint format {header.get('format')!r} (expected {FORMAT})")
    return header


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[PikFix, dict[str, Any]]:
    """Rebuild the model from a checkpoint; returns (model in eval mode, header)."""
    path = Path(path)
    header = read_header(path)
    try:
        config = ModelConfig.from_dict(header["config"])
        model = PikFix(config)
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: incompatible model config ({err})") from None
    except WeightsUnavailableError as err:
        raise CheckpointError(f"{path}: {err}") from None
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{path}: corrupt weights ({err})") from None
    expected = set(_stored_keys(model))
    missing, unexpected = expected - set(tensors) - _OPTIONAL_KEYS, set(tensors) - expected
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: weights do not fit the config "
            f"({len(missing)} missing, {len(unexpected)} unexpected, e.g. {sorted(missing | unexpected)[:2]})"
        )
    state = model.state_dict()
    for key, value in tensors.items():
        if value.shape != state[key].shape:
            raise CheckpointError(f"{path}: tensor {key} has shape {tuple(value.shape)}, config needs {tuple(state[key].shape)}")
        state[key] = value.to(state[key].dtype)
    model.load_state_dict(state)
    return model.to(device).eval(), header


DEFAULT_MODEL_FILE = "pikfix-lite.safetensors"


def default_model_path() -> Path | None:
    """The trained model shipped with pikfix (``models/`` in the source tree, ``pikfix.models``
    once installed), or None when this installation carries none."""
    from importlib import resources

    try:
        candidate = resources.files("pikfix.models") / DEFAULT_MODEL_FILE
    except ModuleNotFoundError:
        return None
    path = Path(str(candidate))
    return path if path.is_file() else None
