"""Test settings: small thread count and fixed seeds, so runs are quick and repeatable."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


torch.set_num_threads(2)
