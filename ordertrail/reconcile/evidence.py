"""Cross-order evidence for overdue edges: did the pipeline move on past this order?

For an edge a -> b, every order that reached both is a point (A, B). An overdue order that
reached a at x with deadline d was *lost* (vanished) when some point has A > x and B > d:
b processed, after the deadline, an order that reached a later. Otherwise b is silent for it
(stalled). Both questions are answered for all overdue orders at once, without a loop per order.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


class EdgeProgress:
    """Points (A, B) of one edge, prepared for dominance queries."""

    def __init__(self, a_times: FloatArray, b_times: FloatArray):
        keep = ~(np.isnan(a_times) | np.isnan(b_times))
        a, b = a_times[keep], b_times[keep]
        order = np.argsort(a, kind="stable")
        self.a = a[order]
        self.b = b[order]
        n = len(self.b)
        # suffix maximum of B over points sorted by A, with -inf past the end
        self.sufmax = np.full(n + 1, -np.inf)
        if n:
            self.sufmax[:n] = np.maximum.accumulate(self.b[::-1])[::-1]

    def __len__(self) -> int:
        return len(self.a)

    def moved_on(self, x: FloatArray, deadline: FloatArray) -> npt.NDArray[np.bool_]:
        """For each query: does a point exist with A > x and B > deadline?"""
        idx = np.searchsorted(self.a, x, side="right")
        return self.sufmax[idx] > deadline

    def count_later(self, x: FloatArray, deadline: FloatArray) -> IntArray:
        """For each query: how many points have A > x and B > deadline (exact).

        A merge-sort tree over the points in A order, one level at a time so that only one
        level is held: at level L the points are in blocks of 2**L consecutive A positions,
        each block sorted by B's rank (one int64 key per point, block << m | rank; the next
        level's order is a stable sort of two sorted runs per block, which is a merge). A
        query's suffix of A positions is covered by at most one block per level, counted by a
        binary search. O((n + q) log n), vectorized over the queries.
        """
        n = len(self.a)
        q = len(x)
        counts = np.zeros(q, dtype=np.int64)
        if n == 0 or q == 0:
            return counts
        m = max(1, (n - 1).bit_length())
        low = (1 << m) - 1
        by_b = np.argsort(self.b)  # ties in B in any order: "B > d" is "rank >= #(B <= d)"
        rank = np.empty(n, dtype=np.int64)
        rank[by_b] = np.arange(n, dtype=np.int64)
        need = np.searchsorted(self.b[by_b], deadline, side="right").astype(np.int64)
        pos = np.searchsorted(self.a, x, side="right").astype(np.int64)  # first A > x
        keys = np.arange(n, dtype=np.int64)
        keys <<= m
        keys |= rank
        blocks = rank  # reused as the buffer of the next level's block ids
        level = 0
        while True:
            if level:  # in place: these arrays are as long as the edge's population
                np.right_shift(keys, m + 1, out=blocks)
                blocks <<= m
                keys &= low
                keys |= blocks
                keys.sort(kind="stable")
            live = pos < n
            if not live.any():
                break
            # a suffix [pos, 2**m) takes block pos >> level where pos has bit ``level``; at
            # level m what is left is everything (pos == 0)
            at = np.flatnonzero(live & ((((pos >> level) & 1) == 1) | (level >= m)))
            if len(at):
                blk = pos[at] >> level
                want = (blk << m) + need[at]
                o = np.argsort(want)  # sorted needles: the binary searches walk forward
                below = np.empty(len(at), dtype=np.int64)
                below[o] = np.searchsorted(keys, want[o])
                counts[at] += np.minimum(n, (blk + 1) << level) - below
                pos[at] += 1 << level
            level += 1
        return counts
