"""Fixtures. The shared helpers live in helpers.py."""

from __future__ import annotations

import pytest

import involution_ext
from helpers import CUDA_MARKS, ISAS


@pytest.fixture(params=ISAS)
def cpu_isa(request):
    """Runs a test with each CPU kernel build this machine supports."""
    involution_ext.cpu_isa(request.param)
    yield request.param
    involution_ext.cpu_isa("auto")


@pytest.fixture(params=[*(f"cpu-{isa}" for isa in ISAS), pytest.param("cuda", marks=CUDA_MARKS)])
def kernel_device(request):
    """Every kernel build: each CPU instruction set this machine runs (as ``cpu``), then
    CUDA (skipped where absent). Yields the device to put the tensors on."""
    device, _, isa = request.param.partition("-")
    if isa:
        involution_ext.cpu_isa(isa)
    yield device
    involution_ext.cpu_isa("auto")
