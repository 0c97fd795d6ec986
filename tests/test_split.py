"""split_indices: deterministic by seed, disjoint, covering, with at least one image in each requested split."""
from __future__ import annotations

import random

import pytest

from blipexp.data.split import split_indices


def test_same_seed_same_split():
    assert split_indices(50, 0.2, 0.1, seed=7) == split_indices(50, 0.2, 0.1, seed=7)


def test_different_seed_different_split():
    assert split_indices(50, 0.2, 0.1, seed=7) != split_indices(50, 0.2, 0.1, seed=8)


@pytest.mark.parametrize("n", [3, 6, 10, 37, 100])
def test_disjoint_covering_sorted(n: int):
    train, val, test = split_indices(n, 0.2, 0.1, seed=0)
    assert sorted(train + val + test) == list(range(n))
    assert not set(train) & set(val) and not set(train) & set(test) and not set(val) & set(test)
    for part in (train, val, test):
        assert part == sorted(part) and len(part) >= 1


def test_sizes_are_rounded_shares():
    train, val, test = split_indices(100, 0.2, 0.1, seed=0)
    assert (len(train), len(val), len(test)) == (70, 20, 10)


def test_six_images_give_4_1_1():
    train, val, test = split_indices(6, 0.2, 0.1, seed=42)
    assert (len(train), len(val), len(test)) == (4, 1, 1)


def test_large_fractions_still_leave_train_an_image():
    train, val, test = split_indices(3, 0.5, 0.4, seed=0)
    assert (len(train), len(val), len(test)) == (1, 1, 1)


def test_zero_test_fraction_gives_empty_test():
    train, val, test = split_indices(5, 0.2, 0.0, seed=0)
    assert test == [] and len(val) == 1 and len(train) == 4


@pytest.mark.parametrize("n, test_fraction, needed", [(2, 0.1, 3), (0, 0.1, 3), (1, 0.0, 2)])
def test_too_few_images_raise(n: int, test_fraction: float, needed: int):
    with pytest.raises(ValueError, match=f"at least {needed} are needed"):
        split_indices(n, 0.2, test_fraction, seed=0)


@pytest.mark.parametrize("val, test", [(1.0, 0.0), (-0.1, 0.1), (0.6, 0.4)])
def test_invalid_fractions_raise(val: float, test: float):
    with pytest.raises(ValueError, match="fraction"):
        split_indices(10, val, test, seed=0)


def test_global_random_state_is_untouched():
    random.seed(123)
    expected = random.random()
    random.seed(123)
    split_indices(30, 0.2, 0.1, seed=5)
    assert random.random() == expected
