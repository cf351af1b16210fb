"""`optalloc.placement.split_by_class`, the north-west corner split of a class's cube over its members and arcs."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from optalloc.placement import split_by_class
from conftest import examples


@settings(max_examples=examples(300), deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 40), st.integers(1, 4), st.integers(0, 8))
def test_each_item_arc_pair_at_most_once_and_the_amounts_kept(seed, n, k, m):
    """Item ends and arc ends are separate float sums and differ in the last bits; the sliver past the last end
    used to be clamped onto the last (item, arc) pair a second time (at 300,000 sellers the baseline's placements
    held (seller, FC, type, month) twice, one of ~1e-6 cube, and the store's key refused them)."""
    rng = np.random.default_rng(seed)
    item_class = np.sort(rng.integers(0, k, n))
    amount = rng.random(n) * 1e6
    arc_class = np.sort(np.concatenate([np.arange(k), rng.integers(0, k, m)]))
    arc_amount = rng.random(len(arc_class)) * 1e6
    item, arc, cube = split_by_class(item_class, amount, arc_class, arc_amount, k)
    pairs = item * len(arc_class) + arc
    assert len(np.unique(pairs)) == len(pairs)
    assert (item_class[item] == arc_class[arc]).all() and (cube > 0).all()
    np.testing.assert_allclose(np.bincount(item, weights=cube, minlength=n), amount, rtol=1e-9, atol=1e-6)
    total = np.bincount(item_class, weights=amount, minlength=k)
    per_arc = np.bincount(arc, weights=cube, minlength=len(arc_class))
    np.testing.assert_allclose(np.bincount(arc_class, weights=per_arc, minlength=k), total, rtol=1e-9, atol=1e-6)


def test_a_known_split():
    # one class: items 3 and 1, arcs 2 and 2 -> (0, 0, 2), (0, 1, 1), (1, 1, 1)
    item, arc, cube = split_by_class(np.array([0, 0]), np.array([3.0, 1.0]), np.array([0, 0]), np.array([2.0, 2.0]), 1)
    assert item.tolist() == [0, 0, 1] and arc.tolist() == [0, 1, 1] and cube.tolist() == [2.0, 1.0, 1.0]
