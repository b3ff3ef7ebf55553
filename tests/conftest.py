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


torch.set_num_threads(2)
