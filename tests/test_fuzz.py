"""Fuzzing the op against the fp64 reference (legal inputs) and the contract (illegal inputs).
CI runs a fixed-seed batch and a hypothesis search; tests/fuzz_ops.py runs long campaigns."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings, strategies as st

from fuzzing import check_illegal, check_legal, draw_legal

FIXED_SEED_CASES = 600


@pytest.mark.parametrize("chunk", range(6))
def test_fuzz_legal_fixed_seed(chunk):
    rng = random.Random(1000 + chunk)
    for _ in range(FIXED_SEED_CASES // 6):
        check_legal(draw_legal(rng))


def test_fuzz_illegal_fixed_seed():
    rng = random.Random(7)
    rules = {check_illegal(rng) for _ in range(FIXED_SEED_CASES)}
    assert len(rules) == 16  # every kind of broken call was drawn


@settings(max_examples=100, deadline=None, derandomize=True)
@given(st.randoms(use_true_random=False))
def test_hypothesis_legal(rng):
    check_legal(draw_legal(rng))


@settings(max_examples=100, deadline=None, derandomize=True)
@given(st.randoms(use_true_random=False))
def test_hypothesis_illegal(rng):
    check_illegal(rng)
