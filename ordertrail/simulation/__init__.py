"""Simulated order pipelines with injected faults, for the demo, tests and benchmarks.

``pipeline``: the v1 pipeline (one order id everywhere). ``shop``: the v2 web shop (items,
parcels and tracking numbers as objects, branches for pickup, Stripe's event stream).
"""

from __future__ import annotations

from ordertrail.simulation.pipeline import (
    DEMO_CONFIG,
    FAULT_KINDS,
    Simulation,
    SimulationResult,
    simulate,
)
from ordertrail.simulation.shop import (
    SHOP_CONFIG,
    ShopResult,
    ShopSimulation,
    finding_key,
    simulate_shop,
)

__all__ = [
    "DEMO_CONFIG",
    "FAULT_KINDS",
    "SHOP_CONFIG",
    "ShopResult",
    "ShopSimulation",
    "Simulation",
    "SimulationResult",
    "finding_key",
    "simulate",
    "simulate_shop",
]
