"""Splitting class totals back to members: the north-west corner rule, vectorized.

The fast paths place cube per *eligibility class* (members that may use exactly the same FCs).
Any split of a class's FC amounts among its members is then equally good for the LP; this one lays
members and FC amounts end to end on one axis per class and matches them where they overlap. It is
always feasible (every member may use every FC of its class, and both sides add up to the class
total), gives at most members + FCs - 1 pieces per class, and is deterministic.
"""

from __future__ import annotations

import numpy as np


def _ends(cls: np.ndarray, amount: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """End of each item's interval, items sorted by class, restarting at each class's offset."""
    end = np.cumsum(amount)
    first = np.searchsorted(cls, cls)  # index of the first item of the same class
    start_of_class = np.concatenate([[0.0], end])[first]
    return end - start_of_class + offset[cls]


def split_by_class(
    item_class: np.ndarray, item_amount: np.ndarray, arc_class: np.ndarray, arc_amount: np.ndarray, n_classes: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (item, arc, amount) triplets with sum over arcs = item_amount and sum over items = arc_amount
    (arc amounts are rescaled within a class to the items' total, absorbing solver round-off); each (item, arc)
    pair at most once.

    `arc_class` must be sorted (arcs grouped by class)."""
    if len(item_class) == 0 or len(arc_class) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    order = np.lexsort((np.arange(len(item_class)), item_class))
    cls = item_class[order]
    amount = np.maximum(item_amount[order], 0.0)
    total = np.bincount(cls, weights=amount, minlength=n_classes)
    offset = np.concatenate([[0.0], np.cumsum(total)[:-1]])
    item_end = _ends(cls, amount, offset)
    arc_total = np.bincount(arc_class, weights=np.maximum(arc_amount, 0.0), minlength=n_classes)
    scale = np.divide(total, arc_total, out=np.zeros_like(total), where=arc_total > 0)
    arc_end = _ends(arc_class, np.maximum(arc_amount, 0.0) * scale[arc_class], offset)
    points = np.unique(np.concatenate([[0.0], item_end, arc_end]))
    lo, hi = points[:-1], points[1:]
    mid = (lo + hi) / 2
    i = np.minimum(np.searchsorted(item_end, mid, side="right"), len(item_end) - 1)
    a = np.minimum(np.searchsorted(arc_end, mid, side="right"), len(arc_end) - 1)
    ok = (cls[i] == arc_class[a]) & (hi - lo > 0)
    i, a, piece = i[ok], a[ok], (hi - lo)[ok]
    # The item and arc ends of a class come from different sums, so they can differ in the last bits: a sliver past
    # the last end is clamped onto the last (item, arc) pair again. i and a never decrease along the line, so equal
    # pairs are neighbours: each pair is one triplet, its pieces added (no amount lost, no pair twice).
    if len(i) == 0:
        return order[i], a, piece
    start = np.flatnonzero(np.concatenate([[True], (i[1:] != i[:-1]) | (a[1:] != a[:-1])]))
    return order[i[start]], a[start], np.add.reduceat(piece, start)
