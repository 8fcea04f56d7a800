"""A simulated order pipeline with injected faults, for the demo, tests and benchmarks."""

from __future__ import annotations

from ordertrail.simulation.pipeline import (
    DEMO_CONFIG,
    FAULT_KINDS,
    Simulation,
    SimulationResult,
    simulate,
)

__all__ = ["DEMO_CONFIG", "FAULT_KINDS", "Simulation", "SimulationResult", "simulate"]
