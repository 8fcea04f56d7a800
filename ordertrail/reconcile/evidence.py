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

        Square-root decomposition: whole blocks answer with a binary search in their sorted B,
        the partial block at the front is compared element-wise; both vectorized over queries.
        """
        n = len(self.a)
        q = len(x)
        counts = np.zeros(q, dtype=np.int64)
        if n == 0 or q == 0:
            return counts
        k = max(64, int(np.sqrt(n)) + 1)
        nblocks = (n + k - 1) // k
        idx = np.searchsorted(self.a, x, side="right")
        first_full = (idx + k - 1) // k
        end = np.minimum(first_full * k, n)
        for off in range(k):
            pos = idx + off
            m = pos < end
            if not m.any():
                break
            counts[m] += self.b[pos[m]] > deadline[m]
        for j in range(nblocks):
            m = first_full <= j
            if not m.any():
                continue
            blk = np.sort(self.b[j * k : (j + 1) * k])
            counts[m] += len(blk) - np.searchsorted(blk, deadline[m], side="right")
        return counts
