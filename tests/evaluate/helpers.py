"""Helpers shared by the evaluation tests."""

from __future__ import annotations

import itertools

import numpy as np


def tie_orders(scores, *columns):
    """Every distinct order of the items by decreasing score, tied items in any order: a list
    of index arrays (the columns tell which tied items are interchangeable: equal columns)."""
    groups = [np.flatnonzero(scores == s) for s in np.unique(scores)[::-1]]
    per_group = []
    for group in groups:
        seen, orders = set(), []
        for perm in itertools.permutations(group):
            key = tuple(tuple(c[list(perm)]) for c in columns)
            if key not in seen:
                seen.add(key)
                orders.append(np.asarray(perm))
        per_group.append(orders)
    return [np.concatenate(parts) for parts in itertools.product(*per_group)]
