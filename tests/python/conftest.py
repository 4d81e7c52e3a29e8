"""Shared fixtures: every test runs on "cpu" and, when a GPU is present, on "cuda"."""

import pytest
import torch

DEVICES = ["cpu", "cuda"]


def pytest_configure(config):
    # Also registered in pyproject.toml; repeated so running from another rootdir stays warning-free.
    config.addinivalue_line("markers", "slow: large GPU cases (GPU full tier)")


def pytest_generate_tests(metafunc):
    if "device" in metafunc.fixturenames:
        metafunc.parametrize("device", DEVICES, indirect=True)


@pytest.fixture
def device(request):
    if request.param == "cuda" and not torch.cuda.is_available():
        pytest.skip("CUDA is not available")
    return request.param


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
