"""Shared fixtures: every test runs on "cpu" and, when a GPU is present, on "cuda"."""

import os
import time

import pytest
import torch

DEVICES = ["cpu", "cuda"]

# A time-boxed GPU round (the device lease caps one command at 10 minutes) sets this to an epoch time:
# tests that would start after it are reported as skipped with this reason instead of the whole run
# being killed with no report. Unset (the default, and in CI) it changes nothing.
TEST_DEADLINE = float(os.environ.get("FLASH_ATTN_TEST_DEADLINE", "0") or 0)


def pytest_configure(config):
    # Also registered in pyproject.toml; repeated so running from another rootdir stays warning-free.
    config.addinivalue_line("markers", "slow: large GPU cases (GPU full tier)")


def pytest_runtest_setup(item):
    if TEST_DEADLINE and time.time() > TEST_DEADLINE:
        pytest.skip("FLASH_ATTN_TEST_DEADLINE reached (time-boxed round): not run")


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
