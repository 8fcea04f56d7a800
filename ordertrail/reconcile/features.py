"""Per-order features from a chunk of events, vectorized: first/last times per hop and phase,
counts, and the values the checks compare. No Python loop over orders or events."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import pandas as pd

from ordertrail.schemas.config import Config

COMPLETED, STARTED, FAILED = 0, 1, 2
F = npt.NDArray[np.float64]


@dataclass
class Features:
    """One row per order. Times are float64 µs (exact to year 2255), NaN = never."""

    order_ids: npt.NDArray[np.object_]
    first: F  # [n, hops, 3 phases] first time
    last: F  # [n, hops, 3 phases] last time
    count: npt.NDArray[np.int64]  # [n, hops, 3 phases]
    second_completed: F  # [n, hops] second completed time (duplicates)
    events: npt.NDArray[np.int64]  # [n]
    check_values: list[npt.NDArray[np.object_]] = field(default_factory=list)  # per check [n, hops]
    check_times: list[F] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.order_ids)

    @staticmethod
    def empty(config: Config) -> Features:
        h = len(config.hops)
        return Features(
            np.array([], dtype=object),
            np.empty((0, h, 3)),
            np.empty((0, h, 3)),
            np.empty((0, h, 3), dtype=np.int64),
            np.empty((0, h)),
            np.empty(0, dtype=np.int64),
            [np.empty((0, len(c.hops)), dtype=object) for c in config.checks],
            [np.empty((0, len(c.hops))) for c in config.checks],
        )

    @staticmethod
    def concat(parts: list[Features], config: Config) -> Features:
        parts = [p for p in parts if len(p)]
        if not parts:
            return Features.empty(config)
        if len(parts) == 1:
            f = parts[0]
        else:
            f = Features(
                np.concatenate([p.order_ids for p in parts]),
                np.concatenate([p.first for p in parts]),
                np.concatenate([p.last for p in parts]),
                np.concatenate([p.count for p in parts]),
                np.concatenate([p.second_completed for p in parts]),
                np.concatenate([p.events for p in parts]),
                [
                    np.concatenate([p.check_values[j] for p in parts])
                    for j in range(len(config.checks))
                ],
                [
                    np.concatenate([p.check_times[j] for p in parts])
                    for j in range(len(config.checks))
                ],
            )
        # no global sort: nothing downstream depends on the order of the rows, and findings
        # are sorted at the end
        return f

    def take(self, idx: npt.NDArray[np.intp]) -> Features:
        return Features(
            self.order_ids[idx],
            self.first[idx],
            self.last[idx],
            self.count[idx],
            self.second_completed[idx],
            self.events[idx],
            [v[idx] for v in self.check_values],
            [t[idx] for t in self.check_times],
        )


def compute_features(df: pd.DataFrame, config: Config) -> Features:
    """Reduce one chunk of events (see load.load_events) to per-order features."""
    if df.empty:
        return Features.empty(config)
    nh = len(config.hops)
    codes, uniques = pd.factorize(df["order_id"].to_numpy(dtype=object), sort=False)
    n = len(uniques)
    hop = df["hop"].to_numpy(dtype=np.int64)
    ph = df["phase"].to_numpy(dtype=np.int64)
    t = df["t"].to_numpy(dtype=np.int64)
    key = codes.astype(np.int64) * (nh * 3) + hop * 3 + ph
    g = pd.DataFrame({"k": key, "t": t}).groupby("k", sort=False)["t"].agg(["min", "max", "count"])
    k = g.index.to_numpy(dtype=np.int64)
    o, rem = np.divmod(k, nh * 3)
    h, p = np.divmod(rem, 3)
    first = np.full((n, nh, 3), np.nan)
    last = np.full((n, nh, 3), np.nan)
    count = np.zeros((n, nh, 3), dtype=np.int64)
    first[o, h, p] = g["min"].to_numpy(dtype=np.float64)
    last[o, h, p] = g["max"].to_numpy(dtype=np.float64)
    count[o, h, p] = g["count"].to_numpy(dtype=np.int64)
    events = np.bincount(codes, minlength=n).astype(np.int64)

    second = np.full((n, nh), np.nan)
    unique_idx = [i for i, hp in enumerate(config.hops) if hp.unique]
    if unique_idx:
        m = (ph == COMPLETED) & np.isin(hop, unique_idx)
        if m.any():
            sub = pd.DataFrame({"o": codes[m], "h": hop[m], "t": t[m]}).sort_values(
                ["o", "h", "t"], kind="stable"
            )
            nth = sub.groupby(["o", "h"], sort=False).nth(1)
            second[nth["o"].to_numpy(), nth["h"].to_numpy()] = nth["t"].to_numpy(dtype=np.float64)

    check_values: list[npt.NDArray[np.object_]] = []
    check_times: list[F] = []
    names = config.hop_names
    for j, chk in enumerate(config.checks):
        vals = np.full((n, len(chk.hops)), None, dtype=object)
        times = np.full((n, len(chk.hops)), np.nan)
        col = df[f"chk{j}"].to_numpy(dtype=object)
        hop_pos = {names.index(hn): pos for pos, hn in enumerate(chk.hops)}
        m = (ph == COMPLETED) & np.isin(hop, list(hop_pos)) & pd.notna(col)
        if m.any():
            sub = pd.DataFrame({"o": codes[m], "h": hop[m], "t": t[m], "v": col[m]})
            sub = sub.sort_values(["o", "h", "t"], kind="stable").drop_duplicates(["o", "h"])
            lut = np.full(nh, -1, dtype=np.int64)
            lut[list(hop_pos)] = list(hop_pos.values())
            pos = lut[sub["h"].to_numpy(dtype=np.int64)]
            vals[sub["o"].to_numpy(), pos] = sub["v"].to_numpy(dtype=object)
            times[sub["o"].to_numpy(), pos] = sub["t"].to_numpy(dtype=np.float64)
        check_values.append(vals)
        check_times.append(times)
    return Features(
        np.asarray(uniques, dtype=object),
        first,
        last,
        count,
        second,
        events,
        check_values,
        check_times,
    )
