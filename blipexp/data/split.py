"""A seeded train/validation/test split of `n` items, as sorted index lists.

The split depends only on `n`, the fractions and the seed (a private `random.Random(seed)`, never the
global random state), so the same data and seed give the same split on any machine.
"""
from __future__ import annotations

import random


def split_indices(n: int, val_fraction: float, test_fraction: float, seed: int) -> tuple[list[int], list[int], list[int]]:
    """Split range(n) into disjoint, sorted (train, validation, test) index lists.

    Sizes are round(n * fraction), but at least 1 for a non-zero fraction, and train keeps at least 1.
    Raises ValueError when the fractions are invalid or n is too small to give each split an item.
    """
    _check_fractions(val_fraction, test_fraction)
    needed = 1 + (val_fraction > 0) + (test_fraction > 0)
    if n < needed:
        raise ValueError(
            f"{n} usable images cannot be split into train/validation/test: at least {needed} are needed "
            f"(1 for train{', 1 for validation' if val_fraction > 0 else ''}"
            f"{', 1 for test' if test_fraction > 0 else ''}); add images, or set test_fraction=0"
        )
    n_val, n_test = _split_sizes(n, val_fraction, test_fraction)
    order = list(range(n))
    random.Random(seed).shuffle(order)
    val = sorted(order[:n_val])
    test = sorted(order[n_val:n_val + n_test])
    train = sorted(order[n_val + n_test:])
    return train, val, test


def _check_fractions(val_fraction: float, test_fraction: float) -> None:
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0 <= value < 1:
            raise ValueError(f"{name}={value!r} must be in [0, 1)")
    if val_fraction + test_fraction >= 1:
        raise ValueError(f"val_fraction + test_fraction = {val_fraction + test_fraction!r} must be < 1 to leave images for training")


def _split_sizes(n: int, val_fraction: float, test_fraction: float) -> tuple[int, int]:
    """Validation and test sizes: rounded shares, each at least 1 when asked for, leaving train >= 1."""
    n_val = max(1, round(n * val_fraction)) if val_fraction > 0 else 0
    n_test = max(1, round(n * test_fraction)) if test_fraction > 0 else 0
    while n_val + n_test > n - 1:  # rounding up the held-out sets must not empty train
        if n_val >= n_test and n_val > 1:
            n_val -= 1
        else:
            n_test -= 1
    return n_val, n_test
