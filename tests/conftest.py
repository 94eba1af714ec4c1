"""Shared fixtures: the devices every test runs on, hypothesis profiles, markers."""
import os
import pathlib

import pytest
from hypothesis import HealthCheck, settings

from scratchae import backend as B

settings.register_profile("dev", max_examples=8, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("ci", max_examples=15, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("thorough", max_examples=200, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))

#: numpy; array_api_strict on its CPU device and on "device1" (the no-GPU stand-in for CUDA:
#: it refuses silent NumPy conversion and mixing devices); CuPy when a GPU is present.
DEVICES = ["cpu", "array_api_strict", "array_api_strict:device1",
           pytest.param("cuda", marks=pytest.mark.gpu)]

MNIST = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist.npz"


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", help="run tests that train on full MNIST")


def pytest_collection_modifyitems(config, items):
    gpu = B.cuda_available()
    for item in items:
        if "gpu" in item.keywords and not gpu:
            item.add_marker(pytest.mark.skip(reason="needs CuPy and a CUDA GPU (cupy.is_available() is False)"))
        if "slow" in item.keywords and not config.getoption("--runslow"):
            item.add_marker(pytest.mark.skip(reason="slow: run with --runslow"))


@pytest.fixture(params=DEVICES, scope="session")
def device(request):
    """A Backend to build layers and arrays on."""
    return B.resolve(request.param)


@pytest.fixture
def mnist_path():
    if not MNIST.exists():
        pytest.skip("full MNIST (../shared/data/mnist.npz) is not here")
    return MNIST
