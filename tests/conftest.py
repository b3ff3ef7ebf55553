"""Test settings: small thread count and fixed seeds, so runs are quick and repeatable."""

import os

# Idle OpenMP threads must sleep, not spin: on a busy 2-core machine spinning threads made
# the suite 20x slower. Must be set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def no_vgg19_weights(tmp_path, monkeypatch):
    """A machine without any VGG19 weights: neither the Oxford file nor torchvision's hub file."""
    missing = tmp_path / "no-weights" / "vgg19-oxford.safetensors"
    monkeypatch.setenv("PIKFIX_VGG19", str(missing))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "no-weights" / "torch"))
    return missing


def pytest_collection_modifyitems(config, items):
    """Tests marked ``oxford_vgg19`` need the real Oxford weights: they run where `make weights`
    installed them (CI does), and are skipped, saying so, elsewhere; nothing else needs them."""
    from pikfix.backbones import oxford_vgg19_file
    from pikfix.vgg19_install import is_installed

    if is_installed(oxford_vgg19_file()):
        return
    skip = pytest.mark.skip(reason=f"Oxford VGG19 weights not installed at {oxford_vgg19_file()} (make weights)")
    for item in items:
        if "oxford_vgg19" in item.keywords:
            item.add_marker(skip)
